"""Shared pytest set-up: environment for a closed network, before any library reads it."""

from __future__ import annotations

import os

# gcsfs hangs ~60 s per call against emulators unless this is set before it is imported (STACK.md).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
# Ray must not try to phone home from a closed network.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Keep torch and BLAS from oversubscribing the 2 cores when several test processes run.
os.environ.setdefault("OMP_NUM_THREADS", "2")
