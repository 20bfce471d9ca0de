"""Frozen dataclasses for every configuration, and strict YAML loading.

Every config is a frozen dataclass with a docstring on each field. YAML (or a dict) supplies values;
:func:`load_config` rejects unknown keys and wrong types with an error that names the key and the file,
and :func:`to_dict` gives back the resolved config, which is saved beside every checkpoint and in every
store's attributes.

Rooms add their own config dataclasses at the end of this module (one section per room).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from embedder.geo import check_order, parse_date

__all__ = [
    "ConfigError",
    "config_fingerprint",
    "from_dict",
    "load_config",
    "to_dict",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise :class:`ConfigError` naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}: {value!r}")
            items = [
                _check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        else:
            item_tp = args[0] if args else Any
            items = [_check_type(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {
            _check_type(k, kt, f"{where}.<key>"): _check_type(v, vt, f"{where}.{k}") for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is dt.date:
        return parse_date(value, name=where, error=ConfigError)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "config") -> T:
    """Build the dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; allowed keys are {sorted(fields)}"
        )
    kwargs = {name: _check_type(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing} for {cls.__name__}")
    obj = cls(**kwargs)
    return obj


def load_config(cls: type[T], source: str | Path | dict[str, Any], **overrides: Any) -> T:
    """Load ``cls`` from a YAML file path or a dict; ``overrides`` replace top-level keys.

    Raises :class:`ConfigError` naming the file and key for unknown keys or wrong types, and
    ``FileNotFoundError`` naming the path when the file does not exist.
    """
    where = "config"
    if isinstance(source, dict):
        data = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist; pass a path to a YAML file")
        where = str(path)
        with path.open() as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{where}: the top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, data, where=where)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Return a plain, YAML/JSON-serialisable dict of a (nested) config dataclass."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (dt.date, dt.datetime)):
            return v.isoformat()
        if isinstance(v, Path):
            return str(v)
        return v

    return typing.cast(dict[str, Any], conv(cfg))


def config_fingerprint(*cfgs: Any) -> str:
    """A short stable hash of one or more resolved configs (sha256 of their canonical JSON, 16 hex)."""
    import hashlib
    import json

    blob = json.dumps([to_dict(c) for c in cfgs], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# Room sections: each room appends its config dataclasses below this line, in its own section.
# ---------------------------------------------------------------------------------------------------


# --- Patches and training shards (embedder/data/patches.py, shards.py, ray_jobs/build_shards.py) ---

from embedder.sensors import MAX_GAP_SUM_DAYS as _MAX_GAP_SUM_DAYS  # noqa: E402


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    """How training samples are cut from a cube (../shared/SPEC.md section 2, "Patches").

    The window size (15 x 15 px, 11 frames) is a model fact and lives in :mod:`embedder.sensors`
    (``WINDOW_PX``, ``WINDOW_DATES``); this config holds the sampling numbers around it.
    """

    window_dates: int = 20
    """Consecutive usable S2 dates per training window, from which ``WINDOW_DATES`` are drawn."""
    temporal_stride: int = 17
    """Step (in usable S2 dates) between the starts of consecutive training windows."""
    spatial_stride_px: int = 9
    """Step in pixels between the centres of neighbouring fused training samples."""
    max_gap_sum_days: int = _MAX_GAP_SUM_DAYS
    """A sample is dropped when its 10 gaps sum to this many days or more (sensors.MAX_GAP_SUM_DAYS)."""
    s1only_window_acquisitions: int = 40
    """Consecutive S1 acquisitions (S1's own time axis) per S1-only window."""
    s1only_temporal_stride: int = 40
    """Step between S1-only window starts. SPEC gives none; non-overlapping windows by default."""
    s1only_spatial_stride_px: int = 15
    """Step in pixels between the centres of neighbouring S1-only samples."""

    def __post_init__(self) -> None:
        from embedder.sensors import WINDOW_DATES

        for name in (
            "temporal_stride",
            "spatial_stride_px",
            "s1only_temporal_stride",
            "s1only_spatial_stride_px",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"PatchConfig.{name} = {getattr(self, name)} must be at least 1")
        for name in ("window_dates", "s1only_window_acquisitions"):
            if getattr(self, name) < WINDOW_DATES:
                raise ConfigError(
                    f"PatchConfig.{name} = {getattr(self, name)} is smaller than the {WINDOW_DATES} frames "
                    f"drawn from each window; use at least {WINDOW_DATES}"
                )
        if self.max_gap_sum_days < 1:
            raise ConfigError(f"PatchConfig.max_gap_sum_days = {self.max_gap_sum_days} must be positive")


@dataclasses.dataclass(frozen=True)
class CubeSpec:
    """One training cube (or a scene to be tiled into cubes): a named rectangle on a UTM 10 m grid."""

    name: str
    """Scene name; cube ids are ``<name>_y<row>_x<col>_<start>_<end>``."""
    epsg: int
    """EPSG code of the UTM zone the bounds are in (e.g. 32632)."""
    bounds: tuple[float, float, float, float]
    """``(left, bottom, right, top)`` in metres of ``epsg``, multiples of 10 m."""


@dataclasses.dataclass(frozen=True)
class BuildShardsConfig:
    """The shard-building job (ray_jobs/build_shards.py): which cubes, from where, to where."""

    catalog: str
    """STAC catalog: ``planetary-computer``, a STAC API URL, a stac-geoparquet snapshot (``.parquet`` path or
    URL, ``embedder stac-snapshot``) or a local ``catalog.json`` path."""
    shard_root: str
    """Root URL of the shards (local path, ``file://``, ``memory://``, ``gs://``, ``s3://``)."""
    start: dt.date
    """First day of the period of every cube (inclusive)."""
    end: dt.date
    """Last day of the period of every cube (inclusive)."""
    region_manifest: str | None = None
    """Path of a sample region's ``region.json``; its scenes become cubes (in addition to :attr:`cubes`)."""
    cubes: tuple[CubeSpec, ...] = ()
    """Explicit scenes (name, EPSG, bounds), in addition to those of :attr:`region`."""
    cube_size_px: int = 90
    """Scenes are tiled into square cubes of this many pixels (SPEC: 90); smaller scenes stay whole."""
    seed: int = 42
    """Seed of the random date draws; each cube's draws use (seed, cube id), so re-runs are identical."""
    kinds: tuple[Literal["fused", "s1only"], ...] = ("fused", "s1only")
    """Which shard kinds to build per cube."""
    patches: PatchConfig = dataclasses.field(default_factory=PatchConfig)
    """Sampling numbers (defaults = SPEC)."""
    cube: CubeConfig = dataclasses.field(default_factory=lambda: CubeConfig())
    """How each cube is loaded (S1 matching tolerance, read batching)."""
    chunk_samples: int = 256
    """Samples per Zarr chunk in the shards."""
    max_cubes: int | None = None
    """Build at most this many cubes (first ones in id order); None = all. Smoke runs use a few."""
    cpus_per_task: float = 1.0
    """Ray CPUs reserved by each cube-building task."""
    storage_options: dict[str, str] = dataclasses.field(default_factory=dict)
    """fsspec options for the shard root (e.g. ``endpoint_url``, ``token``)."""

    def __post_init__(self) -> None:
        check_order(self.start, self.end, name="BuildShardsConfig: period", error=ConfigError)
        if self.cube_size_px < 15:
            raise ConfigError(
                f"BuildShardsConfig.cube_size_px = {self.cube_size_px} is below one 15 px window"
            )
        if self.region_manifest is None and not self.cubes:
            raise ConfigError(
                "BuildShardsConfig: give `region_manifest` (a region.json) or `cubes` (name, epsg, bounds)"
            )
        if self.chunk_samples < 1:
            raise ConfigError(f"BuildShardsConfig.chunk_samples = {self.chunk_samples} must be at least 1")
        if self.max_cubes is not None and self.max_cubes < 1:
            raise ConfigError(f"BuildShardsConfig.max_cubes = {self.max_cubes} must be at least 1 (or null)")


# --- GPP downstream evaluation (embedder/gpp/, SPEC.md section 8) ----------------------------------

GppModelName = Literal["transformer", "lstm", "linear", "ndvi", "evi", "lue"]
"""Regressors and baselines :func:`embedder.gpp.evaluate` knows."""


@dataclasses.dataclass(frozen=True)
class GppModelConfig:
    """Sizes of the GPP regressors: the reference Transformer and the comparison LSTM."""

    d_model: int = 96
    """Transformer width (reference: 96)."""
    n_heads: int = 8
    """Attention heads (reference: 8); must divide ``d_model``."""
    n_layers: int = 3
    """Transformer encoder layers (reference: 3)."""
    ff_dim: int = 1024
    """Feed-forward width inside each encoder layer (reference: 1024)."""
    dropout: float = 0.05
    """Dropout in the encoder layers and between LSTM layers (reference: 0.05)."""
    lstm_hidden: int = 64
    """LSTM hidden size (the companion study's comparison model)."""
    lstm_layers: int = 2
    """Stacked LSTM layers."""

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"gpp model: d_model {self.d_model} is not divisible by n_heads {self.n_heads}; "
                "pick n_heads dividing d_model"
            )


@dataclasses.dataclass(frozen=True)
class GppConfig:
    """Downstream GPP check: QC, windows, split, regressors and training (SPEC.md section 8)."""

    min_qc: float = 0.7
    """Days are kept when ``NEE_VUT_REF_QC`` (share of measured/good half-hours) is at least this."""
    clip_quantiles: tuple[float, float] = (0.001, 0.999)
    """Per-site GPP is clipped (winsorised) to these quantiles after QC, to tame outliers."""
    window_days: int = 90
    """Length of a sample: this many consecutive daily feature vectors; target is the last day's GPP."""
    train_stride_days: int = 10
    """Spacing of training window end days (reference: 10)."""
    eval_stride_days: int = 1
    """Spacing of evaluation/plot window end days (reference plots: 1, i.e. every day with a target)."""
    split: Literal["temporal", "loso"] = "temporal"
    """``temporal``: train on windows ending in ``train_years``, evaluate on ``val_years``;
    ``loso``: leave one site out (train on the others, evaluate on it), years from ``loso_years``."""
    train_years: tuple[int, ...] = (2017, 2018, 2019)
    """Years whose windows (by last day) train the temporal split (reference: 2017-2019)."""
    val_years: tuple[int, ...] = (2020,)
    """Years whose windows (by last day) evaluate the temporal split (reference: 2020)."""
    loso_years: tuple[int, ...] = ()
    """Years used by the leave-one-site-out split; empty means every year with data."""
    models: tuple[GppModelName, ...] = ("transformer", "lstm", "linear", "ndvi", "evi", "lue")
    """Models to run; baselines whose inputs are absent (S2 bands for ndvi/evi, forcing for lue) are skipped."""
    model: GppModelConfig = dataclasses.field(default_factory=GppModelConfig)
    """Regressor sizes."""
    drivers: tuple[str, ...] = ()
    """Daily forcing columns (e.g. ``ppfd``, ``temp``, ``vpd``) given to every model beside the image
    features: appended to the regressors' daily inputs and the ``linear`` baseline, and to the ``ndvi`` /
    ``evi`` baselines with their products (``VI x driver``, the light-use-efficiency form). Empty (the
    default) is SPEC.md section 8: image features only. Greenness alone cannot explain GPP where light and
    temperature drive it (evergreen sites), so the tower evaluation gives every feature set the same
    drivers and asks what the image features add to them."""
    lr: float = 1e-4
    """AdamW learning rate (reference: 1e-4)."""
    weight_decay: float = 1e-6
    """AdamW weight decay (reference: 1e-6)."""
    batch_size: int = 32
    """Windows per optimiser step."""
    epochs: int = 30
    """Passes over the training windows (fixed; no model selection on the evaluation split)."""
    seed: int = 42
    """Seed of weight initialisation and batch order."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_qc <= 1.0:
            raise ConfigError(f"gpp.min_qc {self.min_qc} must lie in [0, 1] (a share of good half-hours)")
        lo, hi = self.clip_quantiles
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"gpp.clip_quantiles {self.clip_quantiles} must satisfy 0 <= low < high <= 1")
        if self.window_days < 2:
            raise ConfigError(f"gpp.window_days {self.window_days} must be at least 2")
        for name in ("train_stride_days", "eval_stride_days", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"gpp.{name} {getattr(self, name)} must be at least 1")
        if len(set(self.drivers)) != len(self.drivers) or any(not d for d in self.drivers):
            raise ConfigError(
                f"gpp.drivers {list(self.drivers)}: name each forcing column once (e.g. ppfd, temp)"
            )
        both = sorted(set(self.train_years) & set(self.val_years))
        if both:
            raise ConfigError(f"gpp: years {both} are in train_years and val_years; put each in one")

    @classmethod
    def small(cls, **overrides: Any) -> GppConfig:
        """A CPU-test preset: tiny regressors, a higher learning rate and few epochs."""
        base: dict[str, Any] = {
            "model": GppModelConfig(
                d_model=16, n_heads=2, n_layers=1, ff_dim=32, lstm_hidden=16, lstm_layers=1
            ),
            "lr": 3e-3,
            "epochs": 8,
            "batch_size": 64,
        }
        base.update(overrides)
        return cls(**base)


# ---------------------------------------------------------------------------------------------------
# Sample region (embedder/sample/): the synthetic S1 + S2 catalog that is the embedded default.
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """One square scene of the sample region, on the 10 m grid of its UTM zone."""

    name: str
    """Short id used in file names, truth folders and ``region.json`` (letters, digits, ``_``, ``-``)."""
    epsg: int
    """UTM EPSG code of the scene grid (326xx north, 327xx south); must be the zone of the centre."""
    lon: float
    """Longitude of the scene centre, degrees east."""
    lat: float
    """Latitude of the scene centre, degrees north."""
    s2_relative_orbit: int = 22
    """Sentinel-2 relative orbit of the scene's acquisitions (``sat:relative_orbit``)."""
    s1_relative_orbits: tuple[int, int] = (15, 66)
    """Sentinel-1 relative orbits (ascending, descending)."""
    phenology_shift_days: float = 0.0
    """Shift of every class's seasonal calendar, days (positive = later, e.g. higher or further north)."""
    swath_edge_frac: float = 0.15
    """Share of S2 dates whose swath edge cuts through the scene (a slanted strip of DN 0 / SCL 0)."""
    footprint_class: str | None = None
    """Land-cover class name (``embedder.sample.CLASSES``) painted on a disc at the scene centre, e.g. a
    flux tower's vegetation; None: the centre is whatever the landscape draws there."""
    footprint_radius_px: int = 0
    """Radius of that disc in 10 m pixels (0 with ``footprint_class`` None)."""

    def __post_init__(self) -> None:
        if not self.name or not all(ch.isalnum() or ch in "_-" for ch in self.name):
            raise ConfigError(f"SceneSpec.name {self.name!r} must be non-empty letters, digits, '_' or '-'")
        if not 0.0 <= self.swath_edge_frac <= 1.0:
            raise ConfigError(f"SceneSpec.swath_edge_frac={self.swath_edge_frac} must be in [0, 1]")
        if self.footprint_radius_px < 0 or (self.footprint_class is None) != (self.footprint_radius_px == 0):
            raise ConfigError(
                f"SceneSpec {self.name!r}: footprint_class={self.footprint_class!r} and footprint_radius_px="
                f"{self.footprint_radius_px} must be given together (a class name and a positive radius)"
            )


def _default_scenes() -> tuple[SceneSpec, ...]:
    return (
        SceneSpec(name="alps_north", epsg=32632, lon=8.5, lat=47.1, s2_relative_orbit=108,
                  s1_relative_orbits=(15, 66), phenology_shift_days=6.0),
        SceneSpec(name="ljubljana_basin", epsg=32633, lon=14.5, lat=45.9, s2_relative_orbit=122,
                  s1_relative_orbits=(73, 22), phenology_shift_days=-4.0),
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SampleRegionConfig:
    """The synthetic sample region: scenes, period, cadences, sizes and the weather of the year."""

    scenes: tuple[SceneSpec, ...] = dataclasses.field(default_factory=_default_scenes)
    """The scenes; at least one. The default has two scenes in two UTM zones (32632, 32633)."""
    size_px: int = 64
    """Scene width and height in 10 m pixels (even: the 20 m bands and SCL are ``size_px // 2``)."""
    start: dt.date = dt.date(2021, 7, 1)
    """First day of the period (inclusive). The default crosses baseline 04.00 (2022-01-25)."""
    end: dt.date = dt.date(2022, 6, 30)
    """Last day of the period (inclusive)."""
    s2_cadence_days: int = 5
    """Days between S2 acquisitions of a scene (S2A and S2B alternate)."""
    s1_cadence_days: int = 12
    """Days between S1A acquisitions of one orbit direction (S1B adds one in between until it failed)."""
    s1b_until: dt.date | None = dt.date(2021, 12, 23)
    """Last day of Sentinel-1B acquisitions (it failed on 2021-12-23); None for no S1B."""
    seed: int = 0
    """Seed of everything random; the same config writes byte-identical files."""
    mean_cloud_cover: float = 0.45
    """Mean cloud cover share of an S2 date (winter cloudier, summer clearer)."""
    full_cloud_frac: float = 0.12
    """Share of S2 dates that are entirely cloudy."""
    cirrus_frac: float = 0.2
    """Share of S2 dates (not fully cloudy) with streaks of thin cirrus (SCL 10)."""
    field_size_px: int = 12
    """Typical side of an agricultural parcel, 10 m pixels."""
    reflectance_noise: float = 0.004
    """Standard deviation of per-pixel reflectance noise (sensor and residual atmosphere)."""
    s1_looks: float = 4.4
    """Equivalent number of looks of the S1 RTC speckle (PC's items say 4.4)."""
    truth_reflectance: bool = False
    """Also store the clear-sky surface reflectance of every S2 date in the truth (large)."""

    def __post_init__(self) -> None:
        if not self.scenes:
            raise ConfigError("SampleRegionConfig.scenes is empty; give at least one SceneSpec")
        names = [s.name for s in self.scenes]
        if len(set(names)) != len(names):
            raise ConfigError(f"SampleRegionConfig.scenes has duplicate names {names}; make them unique")
        if self.size_px < 8 or self.size_px % 2:
            raise ConfigError(
                f"SampleRegionConfig.size_px={self.size_px} must be even and at least 8 (20 m bands halve it)"
            )
        check_order(self.start, self.end, name="SampleRegionConfig: period", error=ConfigError)
        for key in ("s2_cadence_days", "s1_cadence_days", "field_size_px"):
            if getattr(self, key) < 1:
                raise ConfigError(f"SampleRegionConfig.{key}={getattr(self, key)} must be at least 1")
        for key in ("mean_cloud_cover", "full_cloud_frac", "cirrus_frac"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"SampleRegionConfig.{key}={getattr(self, key)} must be in [0, 1]")

    @classmethod
    def tiny(cls) -> SampleRegionConfig:
        """Tests: two 32 px scenes over three months across the baseline 04.00 change, 10-day S2 cadence."""
        return cls(size_px=32, start=dt.date(2021, 12, 16), end=dt.date(2022, 3, 15), s2_cadence_days=10,
                   truth_reflectance=True)  # fmt: skip

    @classmethod
    def small(cls) -> SampleRegionConfig:
        """The demo default: two 64 px scenes, one year of S2 every 5 days and S1 both directions."""
        return cls()


# ---------------------------------------------------------------------------------------------------
# Cubes (embedder/data/cubes.py)
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CubeConfig:
    """How :func:`embedder.data.cubes.load_cube` reads and aligns one S1+S2 cube."""

    s1_max_gap_days: float | None = None
    """Drop the S1 match of an S2 date when abs(t_S1 - t_S2) exceeds this (None: no limit, as the reference)."""
    s1_margin_days: int = 36
    """S1 is read this many days beyond the period on each side, so the centred rolling mean and the
    nearest-in-time match have neighbours at the period's edges (36 = three 12-day repeat cycles)."""
    halo_px: int = 0
    """Spatial halo already included in the geobox; only recorded in the cube's ``halo_px`` attribute."""
    dates_per_read: int = 8
    """S2 solar days read per odc-stac call: bounds peak memory to that many days of raw items."""
    read_threads: int = 2
    """Threads odc-stac uses to read COG tiles."""
    max_gib: float = 8.0
    """Largest cube (float32 S2 + S1 of every searched date) a load may allocate, in GiB; checked after the
    search and before any read, so an oversize bbox or period is refused with its size instead of
    exhausting memory. A production tile (about 1,100 x 1,100 px, a year plus halos) takes 2-3 GiB."""

    def __post_init__(self) -> None:
        if not self.max_gib > 0:
            raise ConfigError(f"CubeConfig.max_gib={self.max_gib} must be a positive number of GiB")
        if self.s1_max_gap_days is not None and self.s1_max_gap_days < 0:
            raise ConfigError(f"CubeConfig.s1_max_gap_days={self.s1_max_gap_days} must be >= 0 or null")
        for key in ("dates_per_read", "read_threads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"CubeConfig.{key}={getattr(self, key)} must be at least 1")
        for key in ("s1_margin_days", "halo_px"):
            if getattr(self, key) < 0:
                raise ConfigError(f"CubeConfig.{key}={getattr(self, key)} must be >= 0")


# --- Models and training (embedder/models/, embedder/losses.py, embedder/training.py) ---


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Size of one modality autoencoder (../shared/SPEC.md section 3).

    ``ModelConfig()`` is the paper configuration (about 3.7 M parameters for S2); ``ModelConfig.small()``
    is a preset of a few tens of thousands of parameters for tests, the demo and CPU runs. Channel
    count ``C``, bottleneck ``D`` and reduced tokens ``R`` are sensor facts (``embedder.sensors``).
    """

    d_model: int = 256
    """Width of one frame token: ``token channels x 4 x 4`` (the 15 px frame is reduced to 4 x 4)."""
    conv_channels: tuple[int, int, int] = (149, 128, 64)
    """Channels of the per-frame convolutional stages at 15 x 15, 7 x 7 and 4 x 4 px."""
    latent_token_dim: int = 16
    """Width each time token is projected to before the token reduction (Linear d_model -> 16)."""
    n_layers: int = 3
    """Transformer layers (one transformer shared by encoder and decoder)."""
    n_heads: int = 8
    """Attention heads; must divide :attr:`d_model`."""
    ff_dim: int = 8
    """Transformer feed-forward width (8 is a fact of the reference, not a typo)."""
    dropout: float = 0.25
    """Transformer dropout."""
    max_position_days: int = 200
    """Largest day offset from the first frame; the positional table has this + 1 entries (201)."""
    cbam_reduction: int = 8
    """Channel-attention reduction ratio ``r`` of the CBAM blocks (the last encoder block uses 2)."""
    token_cbam_reduction: int = 2
    """``r`` of the last encoder block (64 -> token channels), whose attention kernel is 3."""
    multiscale_kernels: tuple[int, ...] = (3, 7)
    """Kernel sizes of the parallel convolutions in the multi-scale blocks."""
    encoder_conv_dropout: float = 0.07
    """Dropout2d after the two strided convolutions of the frame encoder."""
    decoder_conv_dropout: float = 0.1
    """Dropout2d after the two transposed convolutions of the frame decoder."""
    encoder: Literal["paper", "dense"] = "paper"
    """Frame encoder: ``"paper"`` (SPEC 3, re-encodes every 15 x 15 window) or ``"dense"`` (the
    dense-consistent variant of ``embedder/models/dense.py``: valid convolutions and local attention, run
    once over a whole tile at inference with exactly the per-window tokens; see docs/dense.md)."""
    standardize: bool = False
    """Option (deviation from SPEC 2, "no other normalisation"): standardise every band of the input with
    per-band statistics of the training data and map the linear output back, so the network works in
    unit-variance space while the loss and every reported error stay in SPEC's [0, 1] units. The
    statistics are buffers of the model (set once from the training split by ``embedder.training.fit``)
    and travel inside its checkpoints. Off in the paper configuration; on in the ``cpu`` preset."""
    centre_skip: bool = False
    """Option (deviation from SPEC 3): a linear path for the window's centre pixel, which the
    embedding belongs to. The encoder adds ``Linear(C -> d_model)`` of the (standardised) centre pixel
    to every frame token, and the decoder adds ``Linear(d_model -> C)`` of every frame token to the
    centre pixel of its output. The convolutional stacks still see and rebuild the whole window; the
    skip only spares the centre value two strided convolutions and two transposed ones. Per-frame, so
    frame tokens stay cacheable, and exact in the dense encoder. Off in the paper configuration."""

    def __post_init__(self) -> None:
        if self.d_model % 16 != 0 or self.d_model <= 0:
            raise ConfigError(
                f"ModelConfig.d_model = {self.d_model} must be a positive multiple of 16 "
                "(token channels x 4 x 4 px); the paper uses 256"
            )
        if self.d_model % self.n_heads != 0:
            raise ConfigError(
                f"ModelConfig.n_heads = {self.n_heads} does not divide d_model = {self.d_model}; pick a divisor"
            )
        if any(c < 1 for c in self.conv_channels):
            raise ConfigError(f"ModelConfig.conv_channels = {self.conv_channels} must all be positive")
        if any(k % 2 != 1 for k in self.multiscale_kernels) or not self.multiscale_kernels:
            raise ConfigError(
                f"ModelConfig.multiscale_kernels = {self.multiscale_kernels} must be odd sizes (same padding)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ModelConfig.dropout = {self.dropout} must be in [0, 1)")
        if self.max_position_days < 1:
            raise ConfigError(f"ModelConfig.max_position_days = {self.max_position_days} must be positive")

    @classmethod
    def small(cls) -> ModelConfig:
        """A small preset (a few tens of thousands of parameters) for tests and smoke runs.

        Too narrow for dropout: its 2-channel frame token and 8-channel maps underfit already (train error
        ~ validation error), so every dropout is off.
        """
        return cls(
            d_model=32,
            conv_channels=(8, 8, 8),
            latent_token_dim=8,
            n_layers=1,
            n_heads=2,
            ff_dim=8,
            dropout=0.0,
            encoder_conv_dropout=0.0,
            decoder_conv_dropout=0.0,
        )

    @classmethod
    def cpu(cls) -> ModelConfig:
        """The CPU preset between ``small`` and the paper model, for the demo and CPU training.

        Both stages and the fusion converge on 2 cores within the hour (``bench/convergence.py``; the
        recipe is :meth:`TrainConfig.cpu`).

        A 4-channel frame token (``d_model`` 64), 24/24/16 conv channels, two transformer layers with a
        real feed-forward width, standardised bands, the centre-pixel path (:attr:`centre_skip`: without
        it no run got below 0.8x the frame-mean floor; with it S1 and S2 reach ~0.4x, docs/convergence.md)
        and no dropout (the model underfits the synthetic region, so dropout only slows it down).
        """
        return cls(
            d_model=64,
            conv_channels=(24, 24, 16),
            latent_token_dim=16,
            n_layers=2,
            n_heads=4,
            ff_dim=64,
            dropout=0.0,
            cbam_reduction=4,
            encoder_conv_dropout=0.0,
            decoder_conv_dropout=0.0,
            standardize=True,
            centre_skip=True,
        )


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """Size and mode of the fusion model (../shared/SPEC.md section 5)."""

    width: int = 128
    """Width of the two modality tokens and of the fusion transformer."""
    n_layers: int = 2
    """Fusion transformer layers (pre-norm)."""
    n_heads: int = 4
    """Fusion attention heads; must divide :attr:`width`."""
    ff_dim: int = 256
    """Fusion transformer feed-forward width."""
    dropout: float = 0.1
    """Fusion transformer dropout."""
    max_delta_days: int = 350
    """Largest S1-S2 day offset at the centre frame; the temporal table has this + 1 entries (351)."""
    freeze_modalities: bool = False
    """True: the pretrained autoencoders (encoders and decoders) are frozen and kept in eval mode, only
    the fusion layers train (the paper's description, and the "add a sensor" path). False: everything
    is fine-tuned (what the reference training runs did)."""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.width % self.n_heads != 0:
            raise ConfigError(
                f"FusionConfig: n_heads = {self.n_heads} must divide width = {self.width} (paper: 4 and 128)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"FusionConfig.dropout = {self.dropout} must be in [0, 1)")
        if self.max_delta_days < 1:
            raise ConfigError(f"FusionConfig.max_delta_days = {self.max_delta_days} must be positive")

    @classmethod
    def small(cls, *, freeze_modalities: bool = False) -> FusionConfig:
        """A small preset for tests, the demo and CPU runs."""
        return cls(width=16, n_layers=1, n_heads=2, ff_dim=32, freeze_modalities=freeze_modalities)

    @classmethod
    def cpu(cls, *, freeze_modalities: bool = False) -> FusionConfig:
        """The CPU preset's fusion (beside ``ModelConfig.cpu``): width 64, two layers, no dropout."""
        return cls(
            width=64, n_layers=2, n_heads=4, ff_dim=128, dropout=0.0, freeze_modalities=freeze_modalities
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation of either stage (../shared/SPEC.md section 6).

    ``TrainConfig()`` is stage 1 of the paper; ``TrainConfig.fusion()`` stage 2; ``TrainConfig.small()``
    a short CPU preset for tests and the demo.
    """

    lr: float = 1e-4
    """AdamW peak learning rate."""
    weight_decay: float = 1.5e-4
    """AdamW weight decay."""
    warmup_steps: int = 35_000
    """Linear warm-up length in optimiser steps (per step, from ``warmup_start_factor x lr``)."""
    warmup_start_factor: float = 0.001
    """Learning-rate factor at step 0 of the warm-up."""
    plateau_factor: float = 0.35
    """ReduceLROnPlateau factor, applied per epoch on the validation centre MAE."""
    plateau_patience: int = 5
    """Epochs without improvement before the learning rate is reduced."""
    plateau_min_lr: float = 1.5e-6
    """Floor of the learning rate (also the plateau's absolute improvement threshold, as in the reference)."""
    early_stopping_patience: int = 16
    """Stop after this many epochs without a better validation centre MAE."""
    max_epochs: int = 500
    """Upper bound on epochs."""
    batch_size: int = 16
    """Samples per batch per device."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value."""
    seed: int = 42
    """Seed of torch, numpy and random."""
    bf16: bool = False
    """Run forward passes under bfloat16 autocast (GPU option; off on CPU)."""
    compile: bool = False
    """Wrap the model in ``torch.compile`` (GPU option; off on CPU)."""
    schedule: Literal["plateau", "cosine"] = "plateau"
    """Learning-rate schedule. ``plateau`` (SPEC 6): per-step linear warm-up, then reduce-on-plateau on the
    validation centre MAE per epoch. ``cosine`` (option): per-step linear warm-up, then a per-step cosine
    decay to ``min_lr_factor x lr`` at :attr:`total_steps`; no plateau cuts (on short epochs with a noisy
    validation the plateau rule cut the rate to its floor long before the model had learned)."""
    total_steps: int | None = None
    """Optimiser steps of the whole run, warm-up included: where the cosine schedule ends and training
    stops (required by ``schedule: cosine``, ignored by ``plateau``), unless ``max_epochs`` ends it first."""
    min_lr_factor: float = 0.02
    """Final learning rate of the cosine schedule as a fraction of :attr:`lr`."""
    loss: Literal["paper", "mae", "mae_warm"] = "paper"
    """Loss-term weights. ``paper``: the sensor's SPEC 4 weights. ``mae`` (option): the masked context-
    weighted MAE alone (SSIM and SAM off). ``mae_warm`` (option): MAE alone for :attr:`mae_warm_steps`
    steps, then the paper weights. For S2 stage 1 the spectral-angle term (weight 0.65) dominates the
    gradient at the centre and ignores brightness; small models trained with it stay above the
    frame-mean floor. S1 has no SSIM/SAM weight, so the option changes nothing there."""
    mae_warm_steps: int = 0
    """Steps of MAE-only loss before the paper weights (``loss: mae_warm``)."""
    temporal_decay: float | None = None
    """Temporal weight ``r^|t - 5|`` of the context-aware loss (option). None: SPEC 4's ``r = 0.1``, which
    puts ~90 % of the weight on the centre date, so a 7-d code mostly compresses that date's bands; a
    larger ``r`` makes the code carry the pixel's seasonal course (docs/convergence.md)."""
    init_from: str = ""
    """Provenance, set by the training jobs: ``sha256:<16 hex>`` of the weights a fine-tuning run started
    from (``init_checkpoint``), empty for a run from random initialisation. Saved in every checkpoint; the
    embed job records it in the store's attributes (``embedder:params.pretrained``)."""

    def __post_init__(self) -> None:
        if self.temporal_decay is not None and not 0 < self.temporal_decay <= 1:
            raise ConfigError(
                f"TrainConfig.temporal_decay={self.temporal_decay} must be in (0, 1] or null (SPEC: 0.1)"
            )
        if self.schedule == "cosine" and (self.total_steps is None or self.total_steps <= self.warmup_steps):
            raise ConfigError(
                f"TrainConfig.schedule 'cosine' needs total_steps > warmup_steps = {self.warmup_steps}, got "
                f"{self.total_steps}; set total_steps to the run's optimiser steps"
            )
        if not 0.0 <= self.min_lr_factor <= 1.0:
            raise ConfigError(f"TrainConfig.min_lr_factor = {self.min_lr_factor} must be in [0, 1]")
        if self.loss == "mae_warm" and self.mae_warm_steps < 1:
            raise ConfigError(
                f"TrainConfig.loss 'mae_warm' needs mae_warm_steps >= 1, got {self.mae_warm_steps}"
            )
        for name in ("lr", "grad_clip", "warmup_start_factor", "plateau_factor"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"TrainConfig.{name} = {getattr(self, name)} must be positive")
        if not self.warmup_start_factor <= 1.0 or not self.plateau_factor < 1.0:
            raise ConfigError(
                f"TrainConfig: warmup_start_factor = {self.warmup_start_factor} must be <= 1 and "
                f"plateau_factor = {self.plateau_factor} must be < 1"
            )
        for name in ("warmup_steps", "max_epochs", "batch_size", "early_stopping_patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} = {getattr(self, name)} must be at least 1")

    @classmethod
    def fusion(cls) -> TrainConfig:
        """Stage 2 of the paper: 30,000 warm-up steps, plateau factor 0.3, patience 9, min lr 3.5e-7."""
        return cls(warmup_steps=30_000, plateau_factor=0.3, plateau_patience=9, plateau_min_lr=3.5e-7)

    @classmethod
    def small(cls) -> TrainConfig:
        """A short CPU preset: higher lr, 20 warm-up steps, a few epochs, batch 4."""
        return cls(
            lr=1e-3,
            warmup_steps=20,
            plateau_patience=2,
            early_stopping_patience=4,
            max_epochs=3,
            batch_size=4,
        )

    @classmethod
    def cpu(cls, *, total_steps: int = 3000) -> TrainConfig:
        """The recipe that converges on CPU (``bench/convergence.py``).

        AdamW lr 1e-3 (with :attr:`ModelConfig.centre_skip`; without it 1e-3 collapsed two of three S1
        runs to a constant output and 3e-4 was the stable rate), 100 warm-up steps (a tenth of a shorter run), cosine to 2 % at ``total_steps``, batch 16,
        MAE-only loss (see :attr:`loss`). Chosen on the runs recorded in docs/convergence.md.
        Training ends at ``total_steps`` (``fit`` stops there); ``max_epochs`` and early stopping are
        set so that they never end it first.
        """
        return cls(
            lr=1e-3,
            warmup_steps=min(100, max(1, total_steps // 10)),
            warmup_start_factor=0.01,
            schedule="cosine",
            total_steps=total_steps,
            early_stopping_patience=total_steps,
            max_epochs=total_steps,  # an upper bound: an epoch is at least one step
            batch_size=16,
            loss="mae",
        )


# ---------------------------------------------------------------------------------------------------
# Embedding store (embedder/store/, embedder/grid.py): layout and quantisation; see docs/store.md.
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """Layout and encoding of the embedding store; saved in the store's root attributes."""

    tile_px: int = 512
    """Tile (work unit and spatial shard) side in 10 m pixels; tiles snap to a fixed per-zone grid."""
    chunk_px: int = 64
    """Spatial side of an inner chunk; must divide ``tile_px``. A point query decodes its whole block over
    the period (64 px: ~6 ms a year), a 256 px tile-date ``(256 / chunk_px)**2`` chunks (bench/serve.py)."""
    period_days: int = 366
    """Work-unit period and time-shard length in days, counted from the store epoch 2015-01-01."""
    chunk_days: int = 6
    """Days per inner chunk; must divide ``period_days``. Chunks lie spatial-major in the shard, so a pixel's
    period is one byte range whatever this is; small values make a date's map cheap to decode."""
    quant_step: float = 1.0 / 256.0
    """Quantisation step of the features (uint16, value = code * step): RMS error step/sqrt(12) = 0.0011."""
    compression_level: int = 5
    """zstd level inside Blosc (bit-shuffled), 1..9. On the default layout 9 stores ~3 % less than 5 but
    encodes ~8x slower (~29 s vs ~4 s CPU per 512 px tile-year; docs/store.md)."""

    def __post_init__(self) -> None:
        for name in ("tile_px", "chunk_px", "period_days", "chunk_days"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"StoreConfig.{name} = {getattr(self, name)} must be positive")
        if self.tile_px % self.chunk_px:
            raise ConfigError(f"StoreConfig.chunk_px = {self.chunk_px} must divide tile_px = {self.tile_px}")
        if self.period_days % self.chunk_days:
            raise ConfigError(
                f"StoreConfig.chunk_days = {self.chunk_days} must divide period_days = {self.period_days}"
            )
        if not 0 < self.quant_step <= 0.1:
            raise ConfigError(f"StoreConfig.quant_step = {self.quant_step} must be in (0, 0.1]")
        if not 1 <= self.compression_level <= 9:
            raise ConfigError(f"StoreConfig.compression_level = {self.compression_level} must be in 1..9")


# --- Serving embedding stores (embedder/serve/) ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Limits and defaults of the read-only store service (``embedder serve``) and the Python queries."""

    max_region_px: int = 1_048_576
    """Largest region extract in pixels (y * x) a request may ask for (1024 x 1024); larger: HTTP 413."""
    max_region_values: int = 20_000_000
    """Largest in-memory extract in values (pixels x dates or windows x 7 features; 80 MB as float32)."""
    max_points: int = 10_000
    """Most points one ``sample_points`` request may carry."""
    max_tile_native_px: int = 2048
    """Map tiles needing a native window wider than this (zoomed out) show the coverage only."""
    max_tile_dates: int = 62
    """Most store dates a window tile may average (a longer window: HTTP 422 naming the limit)."""
    strip_px: int = 256
    """Rows per strip when large regions are aggregated or exported strip by strip (fewer when a strip
    of that many rows would need more than ``max_request_mib``)."""
    max_request_mib: float = 1024.0
    """Most memory (MiB) one request may allocate, estimated before any chunk is read: a region extract
    (the result twice, while strips are joined, plus one strip of codes), one strip of an export, one map
    tile. Over it: :class:`~embedder.serve.api.RegionTooLargeError` (CLI exit 1, HTTP 413) with the size."""
    max_export_gib: float = 64.0
    """Largest export in GiB of float32 values written (dates or windows x 7 x pixels), checked before any
    chunk is read (:class:`~embedder.serve.api.RegionTooLargeError`)."""
    pca_samples: int = 20_000
    """Valid pixel-dates sampled from the store to fit the fixed RGB PCA of the map tiles."""
    marker_cache_units: int = 4096
    """Done-markers (shard indexes of a unit, ~10-40 kB each) a reader keeps for point queries."""

    def __post_init__(self) -> None:
        for name in ("max_region_px", "max_region_values", "max_points", "max_tile_native_px",
                     "max_tile_dates", "strip_px", "pca_samples", "marker_cache_units"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ConfigError(f"ServeConfig.{name} = {getattr(self, name)} must be positive")
        for name in ("max_request_mib", "max_export_gib"):
            if not getattr(self, name) > 0:  # also NaN
                raise ConfigError(f"ServeConfig.{name} = {getattr(self, name)} must be a positive number")
