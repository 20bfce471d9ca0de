"""``embedder plan``: what a continental inference run will cost, before it runs.

The estimate multiplies four measured or stated numbers:

* **Tiles and units** from the grid (:func:`embedder.grid.work_units`): exactly what the job plans.
* **Pixel-dates**: land area x days / 365.25 x S2 dates per year (~73: two satellites, 5-day revisit)
  x the usable share (dates with enough clear pixels to embed; ~0.45 in central Europe). Land area is the
  region's area (equal-area, on the ellipsoid) x ``land_share`` (a bbox includes sea).
* **Compute**: FLOPs per pixel-date *measured* on the chosen model preset and frame encoder
  (``paper`` or ``dense``, docs/dense.md) with :class:`torch.utils.flop_counter.FlopCounterMode`
  (:func:`measure_flops`). With the frame cache of :class:`embedder.inference.Predictor` each
  (pixel, date) frame is encoded once per sensor and reused in the 11 windows it belongs to (the paper
  encoder encodes the pixel's 15 x 15 window, the dense one is one fully convolutional pass over the
  tile, counted on a production-size tile with its halo); a period also encodes ``2 x HALO_DATES``
  context dates. The GPU rate is either a measured throughput in pixel-dates/s or
  ``TFLOP/s x utilisation / FLOPs per pixel-date``.
* **Both encoders side by side**: the plan also prices 1,000 km2 of land for one year with each frame
  encoder (:class:`EncoderCost`), so the choice of ``model.encoder`` can be made on its cost.
* **Bytes stored** from the store benchmark (``bench/results/store.json``: 146.5 bytes per pixel-year at
  30.9 dates a year -> :data:`BYTES_PER_PIXEL_DATE`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import math
from typing import Any, Literal

from embedder.sensors import WINDOW_DATES

__all__ = [
    "BYTES_PER_PIXEL_DATE",
    "ENCODERS",
    "S2_DATES_PER_YEAR",
    "EncoderCost",
    "FlopCount",
    "Plan",
    "PlanError",
    "cli_main",
    "count_tiles",
    "measure_flops",
    "plan_run",
]

S2_DATES_PER_YEAR = 73.0
"""Sentinel-2 acquisitions per pixel and year with both satellites (5-day revisit)."""
BYTES_PER_PIXEL_DATE = 146.52 / 30.9
"""Stored bytes per embedded pixel-date (embedding + flags, compressed): bench/results/store.json measured
146.52 bytes per pixel-year at 30.9 dates per year (64 px x 6-day chunks, zstd 5)."""
_HALO_DATES = WINDOW_DATES // 2
_PX_PER_KM2 = 1e4  # 10 m pixels

Preset = Literal["paper", "small"]
Encoder = Literal["paper", "dense"]
ENCODERS: tuple[Encoder, ...] = ("paper", "dense")
"""Frame encoders ``ModelConfig.encoder`` can select (docs/dense.md)."""
_DENSE_TILE_PX = 512  # StoreConfig().tile_px: the tile a production run embeds in one dense pass
DEFAULT_PRICE_PER_GPU_HOUR = 0.70
"""USD per GPU-hour that ``embedder plan`` assumes unless told (``--price-per-gpu-hour``): the on-demand list
price of a Google Cloud ``g2-standard-4`` (one NVIDIA L4, the GPU behind the default ``--gpu-tflops 30``)
in us-central1, about 0.70 USD an hour (2024 price list). Spot capacity costs roughly a third of it;
check the current price list for your region and commitment."""

_REF_KM2_YEARS = 1000.0  # the unit of the side-by-side price: 1,000 km2 of land for one year


class PlanError(ValueError):
    """An input to :func:`plan_run` is out of range or inconsistent."""


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """Measured forward FLOPs of one model, per pixel-date (one multiply-add = 2 FLOPs)."""

    preset: str
    """Model preset the count belongs to (``paper`` or ``small``)."""
    encode_frames: dict[str, float]
    """Per sensor: FLOPs of ``encode_frames`` for one 15 x 15 frame."""
    encode_tokens: dict[str, float]
    """Per sensor: FLOPs of ``encode_tokens`` for one window of 11 tokens."""
    fuse: float
    """FLOPs of ``FusionModel.fuse`` for one pixel-date."""
    encoder: str = "paper"
    """Frame encoder the count belongs to (``paper`` or ``dense``)."""
    tile_px: int | None = None
    """``dense`` only: interior side of the tile the dense pass was counted on (its 7 px halo included in
    the cost, divided over the interior pixels); None for ``paper`` (one 15 x 15 window per frame)."""

    @property
    def fast_per_pixel_date(self) -> float:
        """With the frame cache: every frame encoded once, then 1 token encoding per sensor and the fusion."""
        return sum(self.encode_frames.values()) + sum(self.encode_tokens.values()) + self.fuse

    @property
    def naive_per_pixel_date(self) -> float:
        """Without the cache: the 11 frames of each window are re-encoded for every target date.

        For ``dense`` this is 11 dense passes per target date (no frame cache); the per-window dense
        procedure would cost more, but nothing runs it at inference.
        """
        return WINDOW_DATES * sum(self.encode_frames.values()) + sum(self.encode_tokens.values()) + self.fuse

    @property
    def naive_over_fast(self) -> float:
        """How many times more compute the naive procedure needs."""
        return self.naive_per_pixel_date / self.fast_per_pixel_date


@functools.lru_cache(maxsize=8)
def measure_flops(
    preset: Preset = "paper", encoder: Encoder = "paper", *, tile_px: int = _DENSE_TILE_PX
) -> FlopCount:
    """Count the forward FLOPs of the ``preset`` fusion model with the ``encoder`` frame encoder.

    ``paper`` is ``ModelConfig()`` / ``FusionConfig()``, ``small`` the ``.small()`` presets, each with
    ``ModelConfig.encoder = encoder`` (untrained weights: FLOPs do not depend on them). The transformer
    layers are counted in training mode under ``no_grad`` (the eval fast path of PyTorch's encoder layer is
    a fused kernel the counter does not see; dropout adds no FLOPs).

    Frame cost per pixel-frame: the ``paper`` encoder's ``encode_frames`` on 15 x 15 windows; the
    ``dense`` encoder's ``encode_dense`` (what :class:`embedder.inference.Predictor` runs) over one frame
    of ``tile_px + 14`` px (the tile and its 7 px halo), divided by the ``tile_px**2`` interior pixels.
    That frame is counted on PyTorch's ``meta`` device: the counter needs only shapes, and at paper widths
    a 526 px frame is about a TFLOP of real arithmetic (tests check meta and CPU counts agree).
    ``encode_tokens`` and ``fuse`` are counted the same way for both encoders.
    """
    import copy
    import dataclasses as dc

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from embedder.config import FusionConfig, ModelConfig
    from embedder.models.dense import DenseFrameEncoder
    from embedder.models.fusion import FusionModel
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import SENSORS, WINDOW_PX

    if preset == "paper":
        mcfg, fcfg = ModelConfig(), FusionConfig()
    elif preset == "small":
        mcfg, fcfg = ModelConfig.small(), FusionConfig.small()
    else:
        raise PlanError(f"model preset {preset!r} is unknown; use 'paper' or 'small'")
    if encoder not in ENCODERS:
        raise PlanError(f"encoder {encoder!r} is unknown; use one of {list(ENCODERS)} (ModelConfig.encoder)")
    if encoder == "dense" and (isinstance(tile_px, bool) or not isinstance(tile_px, int) or tile_px < 1):
        raise PlanError(f"tile_px = {tile_px!r} must be a positive number of pixels")
    mcfg = dc.replace(mcfg, encoder=encoder)
    names = ("s1", "s2")
    aes = {n: ModalityAutoencoder(SENSORS[n], cfg=mcfg) for n in names}
    model = FusionModel(aes, cfg=fcfg).train()  # see docstring: train mode so every matmul is counted
    n = 2  # pixels counted at once; divided out below
    frames: dict[str, float] = {}
    tokens: dict[str, float] = {}
    with torch.no_grad():
        for name, ae in aes.items():
            n_bands = len(ae.sensor.bands)
            encoder_module = ae.frame_encoder
            if isinstance(encoder_module, DenseFrameEncoder):
                meta = copy.deepcopy(encoder_module).to("meta")
                side = tile_px + WINDOW_PX - 1  # the tile and its 7 px halo on each side
                frame = torch.zeros(n_bands, side, side, device="meta")  # [C, H, W]
                with FlopCounterMode(display=False) as fc:
                    meta.encode_dense(frame)  # [tile_px, tile_px, d_model]
                frames[name] = fc.get_total_flops() / float(tile_px * tile_px)
            else:
                x = torch.zeros(n, n_bands, WINDOW_PX, WINDOW_PX)  # [n, C, 15, 15]
                with FlopCounterMode(display=False) as fc:
                    ae.encode_frames(x)  # [n, d_model]
                frames[name] = fc.get_total_flops() / n
            seq = torch.zeros(n, WINDOW_DATES, mcfg.d_model)  # [n, 11, d_model]
            gaps = torch.full((n, WINDOW_DATES - 1), 5.0)  # [n, 10] days
            with FlopCounterMode(display=False) as fc:
                ae.encode_tokens(seq, gaps)  # [n, D]
            tokens[name] = fc.get_total_flops() / n
        z = {k: torch.zeros(n, aes[k].bottleneck_dim) for k in names}  # {name: [n, D]}
        deltas = {k: torch.full((n,), 3.0) for k in model.delta_keys}  # days
        with FlopCounterMode(display=False) as fc:
            model.fuse(z, deltas)  # [n, 7]
        fuse = fc.get_total_flops() / n
    return FlopCount(
        preset=preset,
        encode_frames=frames,
        encode_tokens=tokens,
        fuse=float(fuse),
        encoder=encoder,
        tile_px=tile_px if encoder == "dense" else None,
    )


def _with_context(flops: FlopCount, usable_per_block: float) -> float:
    """FLOPs per embedded pixel-date including the ``2 x HALO_DATES`` context dates of each period block.

    Context dates are encoded (frame cost only) but not embedded; their cost is spread over the
    ``usable_per_block`` embedded dates of the block.
    """
    frame = sum(flops.encode_frames.values())
    return flops.fast_per_pixel_date + 2 * _HALO_DATES * frame / usable_per_block


def _sig3(value: float) -> str:
    """``value`` with three significant digits (at least), thousands separated: 14.4, 0.402, 1,234."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:,.{max(0, 2 - math.floor(math.log10(value)))}f}"


@dataclasses.dataclass(frozen=True)
class EncoderCost:
    """What 1,000 km2 of land for one year costs with one frame encoder (same preset, GPU and price)."""

    encoder: str
    """``paper`` or ``dense``."""
    flop_per_pixel_date: float
    """Measured FLOPs per pixel-date with the frame cache, context dates of each period included."""
    px_dates_per_s: float
    """Throughput of one GPU actor assumed for this encoder."""
    rate_source: str
    """Where that throughput comes from: ``measured`` (``--px-dates-per-s``, the chosen encoder),
    ``scaled by FLOPs`` (the other encoder: the measured rate x the FLOP ratio) or ``TFLOP/s``."""
    gpu_hours_per_1000km2_year: float
    """GPU-hours to embed 1,000 km2 of land for one year."""
    cost_per_1000km2_year: float
    """``gpu_hours_per_1000km2_year x price_per_gpu_hour`` (compute only)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """The estimate of one run (all derived from the inputs, see the module docstring)."""

    region: str
    """The region as given."""
    start: dt.date
    """First day."""
    end: dt.date
    """Last day (inclusive)."""
    preset: str
    """Model preset."""
    encoder: str
    """Frame encoder the run uses (``paper`` or ``dense``)."""
    tiles: int
    """Tiles of the grid that meet the region."""
    units: int
    """Work units (tiles x period blocks)."""
    area_km2: float
    """Region area on the ellipsoid."""
    land_km2: float
    """Area that gets embeddings (``area_km2 x land_share``)."""
    years: float
    """Length of the period in years."""
    pixel_dates: float
    """Embedded pixel-dates."""
    flop_per_pixel_date: float
    """Measured FLOPs per pixel-date with the frame cache (context dates of each period included)."""
    naive_flop_per_pixel_date: float
    """The same without the frame cache."""
    total_pflop: float
    """Total compute in PFLOP."""
    px_dates_per_s: float
    """Throughput of one GPU actor used for the estimate."""
    gpu_hours: float
    """GPU-hours of the run."""
    bytes_stored: float
    """Bytes the store will hold."""
    cost: float
    """``gpu_hours x price_per_gpu_hour`` (compute only)."""
    price_per_gpu_hour: float
    """Price used."""
    usable_dates_per_year: float
    """Embedded S2 dates per pixel and year (``dates_per_year x usable_share``)."""
    by_encoder: tuple[EncoderCost, ...]
    """Price of 1,000 km2 of land for one year with each frame encoder, the chosen one first."""

    @property
    def chosen(self) -> EncoderCost:
        """The :class:`EncoderCost` of :attr:`encoder`."""
        return next(c for c in self.by_encoder if c.encoder == self.encoder)

    def encoder_table(self) -> str:
        """The side-by-side price of 1,000 km2 of land for one year with each frame encoder."""
        pd_unit = _REF_KM2_YEARS * _PX_PER_KM2 * self.usable_dates_per_year
        priced = self.price_per_gpu_hour > 0
        head = ["encoder", "GFLOP/pixel-date", "pixel-dates/s/GPU", "GPU-hours"] + (
            ["cost"] if priced else []
        )
        rows = [head]
        for c in self.by_encoder:
            mark = " (chosen)" if c.encoder == self.encoder else ""
            row = [
                f"{c.encoder}{mark}",
                f"{c.flop_per_pixel_date / 1e9:.4f}",
                f"{c.px_dates_per_s:,.0f}" + ("" if c.rate_source != "scaled by FLOPs" else " *"),
                _sig3(c.gpu_hours_per_1000km2_year),
            ]
            if priced:
                row.append(_sig3(c.cost_per_1000km2_year))
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [
            f"per 1,000 km2 of land and year ({pd_unit:.3e} pixel-dates), {self.preset} preset:",
            *(
                "  "
                + "  ".join(
                    v.ljust(w) if i == 0 else v.rjust(w)
                    for i, (v, w) in enumerate(zip(r, widths, strict=True))
                )
                for r in rows
            ),
        ]
        if any(c.rate_source == "scaled by FLOPs" for c in self.by_encoder):
            lines.append(
                "  * measured rate of the chosen encoder scaled by the FLOP ratio (same FLOP/s assumed)"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """Human-readable multi-line table."""
        rows = [
            ("region", f"{self.region}  {self.start} .. {self.end} ({self.years:.2f} years)"),
            ("tiles / work units", f"{self.tiles:,} / {self.units:,}"),
            ("area / land", f"{self.area_km2:,.0f} km2 / {self.land_km2:,.0f} km2"),
            ("pixel-dates", f"{self.pixel_dates:.3e}"),
            (
                f"GFLOP / pixel-date ({self.preset}, {self.encoder})",
                f"{self.flop_per_pixel_date / 1e9:.3f} with frame cache "
                f"({self.naive_flop_per_pixel_date / 1e9:.2f} naive, "
                f"{self.naive_flop_per_pixel_date / self.flop_per_pixel_date:.1f}x)",
            ),
            ("total compute", f"{self.total_pflop:,.1f} PFLOP"),
            ("throughput", f"{self.px_dates_per_s:,.0f} pixel-dates/s per GPU"),
            ("GPU-hours", f"{self.gpu_hours:,.1f}"),
            ("stored", f"{self.bytes_stored / 1e12:,.3f} TB"),
            ("cost", f"{self.cost:,.2f} at {self.price_per_gpu_hour:g} per GPU-hour"),
            (
                "per 1,000 km2 and year",
                f"{_sig3(self.chosen.gpu_hours_per_1000km2_year)} GPU-hours"
                + (f", {_sig3(self.chosen.cost_per_1000km2_year)}" if self.price_per_gpu_hour > 0 else "")
                + f" ({self.encoder} encoder)",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        table = "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
        return f"{table}\n\n{self.encoder_table()}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        return d


def _area_km2(geom: Any) -> float:
    from pyproj import Geod

    return abs(Geod(ellps="WGS84").geometry_area_perimeter(geom)[0]) / 1e6


def count_tiles(region: Any, *, tile_px: int) -> int:
    """Number of grid tiles whose interior meets ``region`` (the set of :func:`embedder.grid.tiles_for_region`).

    Counted with prepared predicates only: continent-sized regions in seconds, without building every
    tile's intersection.
    """
    import numpy as np
    import shapely

    from embedder.grid import PIXEL_M, region_geometry, zone_parts

    geom = region_geometry(region)
    size_m = tile_px * PIXEL_M
    total = 0
    for _utm, proj in zone_parts(geom):  # as the grid projects them
        shapely.prepare(proj)
        left, bottom, right, top = proj.bounds
        cols = np.arange(max(0, math.floor(left / size_m)), math.ceil(right / size_m))
        for row in range(max(0, math.floor(bottom / size_m)), math.ceil(top / size_m)):
            boxes = shapely.box(cols * size_m, row * size_m, (cols + 1) * size_m, (row + 1) * size_m)
            # interiors meet <=> intersect and not only touching on the boundary
            total += int(np.count_nonzero(shapely.intersects(proj, boxes) & ~shapely.touches(proj, boxes)))
    return total


def _positive(name: str, value: float | None, *, upper: float | None = None) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value <= 0 or (upper is not None and value > upper):
        rng = f"in (0, {upper:g}]" if upper is not None else "positive"
        raise PlanError(f"{name} = {value!r} must be {rng}")


def plan_run(
    region: Any,
    *,
    start: dt.date | str,
    end: dt.date | str,
    preset: Preset = "paper",
    encoder: Encoder = "paper",
    land_share: float = 1.0,
    dates_per_year: float = S2_DATES_PER_YEAR,
    usable_share: float = 0.45,
    px_dates_per_s: float | None = None,
    gpu_tflops: float | None = None,
    utilisation: float = 0.35,
    price_per_gpu_hour: float = 0.0,
    tile_px: int | None = None,
    period_days: int | None = None,
    bytes_per_pixel_date: float = BYTES_PER_PIXEL_DATE,
) -> Plan:
    """Estimate tiles, pixel-dates, GPU-hours, bytes and cost of embedding ``region`` over [start, end].

    Give the GPU rate as a measured ``px_dates_per_s`` or as ``gpu_tflops`` (peak, the precision the
    actors run in) with ``utilisation``; exactly one of the two. ``encoder`` is the frame encoder of the
    model (``ModelConfig.encoder``: ``paper`` or ``dense``); a measured ``px_dates_per_s`` is that
    encoder's. :attr:`Plan.by_encoder` prices 1,000 km2 of land for one year with both encoders (the
    other encoder's rate from the same TFLOP/s, or the measured rate scaled by the FLOP ratio).
    Raises :class:`PlanError` for bad inputs and :class:`embedder.grid.GridError` for a bad region or dates.
    """
    from embedder.config import StoreConfig
    from embedder.geo import DateRange
    from embedder.grid import GridError, periods, region_geometry

    layout = StoreConfig()
    tile_px = layout.tile_px if tile_px is None else tile_px
    period_days = layout.period_days if period_days is None else period_days
    _positive("land_share", land_share, upper=1.0)
    _positive("usable_share", usable_share, upper=1.0)
    _positive("dates_per_year", dates_per_year, upper=366.0)
    _positive("utilisation", utilisation, upper=1.0)
    _positive("bytes_per_pixel_date", bytes_per_pixel_date)
    _positive("px_dates_per_s", px_dates_per_s)
    _positive("gpu_tflops", gpu_tflops)
    if price_per_gpu_hour < 0 or not math.isfinite(price_per_gpu_hour):
        raise PlanError(f"price_per_gpu_hour = {price_per_gpu_hour!r} must be >= 0")
    if encoder not in ENCODERS:
        raise PlanError(f"encoder {encoder!r} is unknown; use one of {list(ENCODERS)} (ModelConfig.encoder)")
    if (px_dates_per_s is None) == (gpu_tflops is None):
        raise PlanError(
            "give exactly one of px_dates_per_s (a measured throughput) and gpu_tflops (with utilisation); "
            f"got px_dates_per_s={px_dates_per_s!r}, gpu_tflops={gpu_tflops!r}"
        )
    span = DateRange.parse(start, end, error=GridError)
    blocks = periods(span.start, span.end, period_days=period_days)  # validates the epoch
    geom = region_geometry(region)
    n_tiles = count_tiles(geom, tile_px=tile_px)
    area = _area_km2(geom)
    land = area * land_share
    years = span.days / 365.25
    usable_per_year = dates_per_year * usable_share
    pixel_dates = land * _PX_PER_KM2 * years * usable_per_year
    # each period block also encodes 2 x 5 context dates (usable dates just outside the block)
    usable_per_block = usable_per_year * period_days / 365.25
    counts = {e: measure_flops(preset, e, tile_px=tile_px) for e in ENCODERS}
    flop_by = {e: _with_context(f, usable_per_block) for e, f in counts.items()}
    flops, flop_pd = counts[encoder], flop_by[encoder]

    def rate_of(e: Encoder) -> tuple[float, str]:
        if gpu_tflops is not None:
            return gpu_tflops * 1e12 * utilisation / flop_by[e], "TFLOP/s"
        assert px_dates_per_s is not None
        if e == encoder:
            return px_dates_per_s, "measured"
        return px_dates_per_s * flop_pd / flop_by[e], "scaled by FLOPs"

    unit_pixel_dates = _REF_KM2_YEARS * _PX_PER_KM2 * usable_per_year
    by_encoder = []
    for e in sorted(ENCODERS, key=lambda e: e != encoder):  # the chosen encoder first
        r, source = rate_of(e)
        hours = unit_pixel_dates / r / 3600.0
        by_encoder.append(
            EncoderCost(
                encoder=e,
                flop_per_pixel_date=flop_by[e],
                px_dates_per_s=float(r),
                rate_source=source,
                gpu_hours_per_1000km2_year=hours,
                cost_per_1000km2_year=hours * price_per_gpu_hour,
            )
        )
    rate = rate_of(encoder)[0]
    gpu_hours = pixel_dates / rate / 3600.0
    return Plan(
        region=str(region),
        start=span.start,
        end=span.end,
        preset=preset,
        encoder=encoder,
        tiles=n_tiles,
        units=n_tiles * len(blocks),
        area_km2=area,
        land_km2=land,
        years=years,
        pixel_dates=pixel_dates,
        flop_per_pixel_date=flop_pd,
        naive_flop_per_pixel_date=flops.naive_per_pixel_date,
        total_pflop=pixel_dates * flop_pd / 1e15,
        px_dates_per_s=float(rate),
        gpu_hours=gpu_hours,
        bytes_stored=pixel_dates * bytes_per_pixel_date,
        cost=gpu_hours * price_per_gpu_hour,
        price_per_gpu_hour=price_per_gpu_hour,
        usable_dates_per_year=usable_per_year,
        by_encoder=tuple(by_encoder),
    )


def cli_main(argv: list[str] | None = None) -> int:
    """``embedder plan REGION --start --end ...``: print the estimate (or JSON with ``--json``)."""
    from embedder.grid import GridError, region_from_text

    p = argparse.ArgumentParser(prog="embedder plan", description=__doc__.split("\n\n")[0])
    p.add_argument("region", help="named region (europe, sample), bbox 'lon0,lat0,lon1,lat1' or GeoJSON path")
    p.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last day (inclusive), YYYY-MM-DD")
    p.add_argument("--preset", choices=("paper", "small"), default="paper", help="model size (default paper)")
    p.add_argument(
        "--encoder",
        choices=ENCODERS,
        default="paper",
        help="frame encoder of the model (model.encoder); the plan prices both (docs/dense.md)",
    )
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--px-dates-per-s", type=float, help="measured throughput of one GPU actor")
    rate.add_argument("--gpu-tflops", type=float, help="peak TFLOP/s of one GPU (default 30: L4, fp32)")
    p.add_argument("--utilisation", type=float, default=0.35, help="share of peak reached (default 0.35)")
    p.add_argument(
        "--price-per-gpu-hour", type=float, default=DEFAULT_PRICE_PER_GPU_HOUR,
        help=f"USD per GPU-hour (default {DEFAULT_PRICE_PER_GPU_HOUR}: Google Cloud g2-standard-4, one L4, "
        "on-demand, us-central1; 0 leaves cost out)",
    )  # fmt: skip
    p.add_argument("--land-share", type=float, default=1.0, help="land share of the region (default 1)")
    p.add_argument("--dates-per-year", type=float, default=S2_DATES_PER_YEAR, help="S2 dates per year")
    p.add_argument("--usable-share", type=float, default=0.45, help="share of S2 dates that are usable")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = p.parse_args(argv)
    gpu_tflops = a.gpu_tflops if (a.gpu_tflops is not None or a.px_dates_per_s is not None) else 30.0
    try:
        plan = plan_run(
            region_from_text(a.region), start=a.start, end=a.end, preset=a.preset, encoder=a.encoder,
            land_share=a.land_share,
            dates_per_year=a.dates_per_year, usable_share=a.usable_share, px_dates_per_s=a.px_dates_per_s,
            gpu_tflops=gpu_tflops, utilisation=a.utilisation, price_per_gpu_hour=a.price_per_gpu_hour,
        )  # fmt: skip
    except (PlanError, GridError) as err:
        p.exit(2, f"embedder plan: error: {err}\n")
    print(json.dumps(plan.to_dict(), indent=1) if a.json else plan.summary())
    return 0
