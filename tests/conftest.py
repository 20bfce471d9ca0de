"""Shared pytest set-up: environment for a closed network, before any library reads it."""

from __future__ import annotations

import os

# gcsfs hangs ~60 s per call against emulators unless this is set before it is imported (STACK.md).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
# Ray must not try to phone home from a closed network.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Keep torch and BLAS from oversubscribing the 2 cores when several test processes run.
os.environ.setdefault("OMP_NUM_THREADS", "2")


# --- object-storage emulators (embedder/testing/objstore.py): a fresh server + bucket per test ---
import pytest


@pytest.fixture
def gcs_bucket():
    """A fake-gcs-server on 127.0.0.1 with one empty bucket: an ``ObjectStoreEmulator`` (url, storage_options, env)."""
    from embedder.testing.objstore import fake_gcs

    with fake_gcs() as emu:
        yield emu


@pytest.fixture
def s3_bucket():
    """A moto S3 server on 127.0.0.1 with one empty bucket: an ``ObjectStoreEmulator`` (url, storage_options, env)."""
    from embedder.testing.objstore import moto_s3

    with moto_s3() as emu:
        yield emu


# --- torch tests (tests/models, test_losses, test_training, test_curves) ---
@pytest.fixture
def torch_one_thread():
    """Run a test with one torch intra-op thread (restored after): with ``-n 2`` on 2 cores, 2 threads per
    worker oversubscribe the CPU and small-model tests ran 2-6x slower (measured)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
