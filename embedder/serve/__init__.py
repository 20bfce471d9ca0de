"""Serving embedding stores: Python API, HTTP service and web map."""
