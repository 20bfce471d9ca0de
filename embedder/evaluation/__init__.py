"""Experiments over the library: convergence of the training recipe (more to move here, issue 17).

Modules here import the library and are never imported by it.
"""
