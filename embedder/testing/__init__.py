"""Reusable test helpers that ship with the package (like ``zarr.testing``).

:mod:`embedder.testing.objstore` starts real object-storage emulators (fake-gcs-server, moto S3) on
127.0.0.1 for tests, benchmarks and local Ray runs.
"""

from __future__ import annotations

from embedder.testing.objstore import EmulatorError, ObjectStoreEmulator, fake_gcs, moto_s3

__all__ = ["EmulatorError", "ObjectStoreEmulator", "fake_gcs", "moto_s3"]
