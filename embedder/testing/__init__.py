"""Reusable test helpers that ship with the package (like ``zarr.testing``).

:mod:`embedder.testing.objstore` starts real object-storage emulators (fake-gcs-server, moto S3) on
127.0.0.1 for tests, benchmarks and local Ray runs; :mod:`embedder.testing.stac_api` serves items or a
static catalog as a STAC API (paging, optional sorting, SAS tokens, request counts) on 127.0.0.1.
"""

from __future__ import annotations

from embedder.testing.objstore import EmulatorError, ObjectStoreEmulator, fake_gcs, moto_s3
from embedder.testing.stac_api import LocalStacApi, StacApiServerError

__all__ = [
    "EmulatorError",
    "LocalStacApi",
    "ObjectStoreEmulator",
    "StacApiServerError",
    "fake_gcs",
    "moto_s3",
]
