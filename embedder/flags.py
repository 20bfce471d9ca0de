"""Quality flags of every embedding (the store's ``flags`` array).

One small module, importable without the store's dependencies: the predictor and ``bench/gpu.py`` run
where only torch, numpy and xarray are installed.
"""

from __future__ import annotations

import enum

__all__ = ["Flag"]


class Flag(enum.IntFlag):
    """Bits of the ``flags`` array (uint8). 0 means no embedding at this pixel and date."""

    VALID = 1
    """An embedding is stored here."""
    GAP_RULE = 2
    """The window's 10 gaps summed to >= 200 days and were replaced by 1-day steps (SPEC.md 7)."""
    S1_MISSING = 4
    """No Sentinel-1 acquisition could be matched to the centre date (S1 inputs were masked)."""
    S1_GAP_LARGE = 8
    """The matched S1 acquisition is far from the S2 date (beyond the cube's large-gap threshold)."""
    EDGE = 16
    """Fewer than 5 usable dates existed on one side of the centre (period or archive edge)."""
    CENTRE_FILLED = 32
    """The pixel's own S2 value on this date was missing (cloud, shadow, no data) and gap-filled."""
    S1_FILLED = 64
    """The pixel's matched S1 value on this date was missing and gap-filled."""
