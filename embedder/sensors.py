"""The one table of sensor facts.

Every band list, asset key, nodata value, scaling constant and per-sensor model size lives here and
nowhere else; models, cubes, patches and losses read their numbers from :data:`SENSORS`. Adding a sensor
means adding a :class:`SensorSpec` here (plus its scaling rule in :mod:`embedder.data.cubes`), training its
autoencoder and retraining fusion (../shared/SPEC.md section 1).

Sources of the numbers:

* Planetary Computer collection documents and real items (``../shared/realdata/stac``) for collection
  ids, asset keys, dtypes, nodata and native resolutions;
* ESA Sentinel-2 L2A product specification for the SCL classes and the processing-baseline 04.00 offset;
* Peters et al. 2025 (arXiv 2511.11706) and its reference implementation for band choice, the S1
  processing chain, the usability thresholds, bottleneck sizes and loss weights (SPEC.md 2-4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "EMBEDDING_DIM",
    "FUSION_ORDER",
    "MAX_GAP_SUM_DAYS",
    "PRIMARY_SENSOR",
    "S1",
    "S2",
    "SENSORS",
    "STAGE2_SENSOR_WEIGHT",
    "WINDOW_DATES",
    "WINDOW_PX",
    "LossWeights",
    "S1Scaling",
    "S2Scaling",
    "SensorSpec",
    "get_sensor",
]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the context-aware loss terms for one sensor (SPEC.md section 4 table)."""

    mae: float
    """Weight of the masked, context-weighted MAE."""
    ssim: float
    """Weight of ``1 - mean SSIM`` over all frames and channels."""
    sam: float
    """Weight of the weighted spectral angle (only meaningful with more than one channel)."""
    centre_weight: float
    """``c``: the weight of the single centre entry before normalisation."""
    temporal_decay: float = 0.1
    """``r`` of the temporal weight ``r^|t - 5|`` (SPEC 4: 0.1). A larger ``r`` (option, set through
    ``TrainConfig.temporal_decay``) makes the other dates of the window count more."""


@dataclass(frozen=True)
class S2Scaling:
    """Sentinel-2 L2A digital number to surface reflectance (SPEC.md section 2)."""

    scale: float = 1e-4
    """Reflectance per DN (L2A quantification value 10000)."""
    offset_dn: float = 1000.0
    """Radiometric offset subtracted from DN from processing baseline 04.00 on (ESA, 2022-01-25)."""
    offset_from_baseline: float = 4.0
    """First processing baseline (as a number, ``"04.00"`` -> 4.0) that carries the offset."""
    clip: tuple[float, float] = (0.0, 1.0)
    """Reflectance is clipped to this range after scaling; no other normalisation."""


@dataclass(frozen=True)
class S1Scaling:
    """Sentinel-1 RTC gamma0 (linear power) to the model's [0, 1] range (SPEC.md section 2)."""

    rolling_acquisitions: int = 3
    """Centred rolling mean over this many acquisitions, in linear power, at least one valid."""
    db_range: tuple[float, float] = (-30.0, 5.0)
    """Clip range in dB after ``10 * log10``; then ``(dB - low) / (high - low)``."""


@dataclass(frozen=True)
class SensorSpec:
    """Everything the product needs to know about one sensor."""

    name: str
    """Short id used in variable names, dims (``band_<name>``), configs and checkpoints."""
    collection: str
    """STAC collection id (Planetary Computer naming)."""
    bands: tuple[str, ...]
    """Model channel order; also the output band names."""
    assets: tuple[str, ...]
    """STAC asset key of each band, same order as :attr:`bands`."""
    native_res_m: tuple[float, ...]
    """Native pixel size of each band; all are resampled to the 10 m grid."""
    dtype: str
    """On-disk data type of the band assets."""
    nodata: float
    """On-disk nodata value of the band assets."""
    resampling: str
    """Resampling used onto the 10 m grid for bands coarser than 10 m."""
    primary: bool
    """True for the sensor whose usable dates define the time axis (Sentinel-2)."""
    bottleneck_dim: int
    """``D``: size of the modality autoencoder bottleneck."""
    reduced_tokens: int
    """``R``: number of tokens after the temporal token reduction."""
    stage1_loss: LossWeights
    """Loss weights when the autoencoder trains alone (stage 1)."""
    stage2_loss: LossWeights
    """Loss weights of this sensor's part of the fusion loss (stage 2)."""
    mask_asset: str | None = None
    """Asset with a per-pixel classification used for masking (S2: SCL), or None."""
    mask_classes: tuple[int, ...] = ()
    """Classes of :attr:`mask_asset` that make a pixel invalid."""
    min_valid_train: float = 0.0
    """A date is usable for training when at least this share of band x pixel values is valid."""
    min_valid_infer: float = 0.0
    """A date is embedded when at least this share of interior pixels has all bands valid."""
    orbit_property: str | None = None
    """Item property with the orbit direction (ascending/descending), recorded but not filtered on."""
    s2_scaling: S2Scaling | None = None
    """DN -> reflectance rule (Sentinel-2 only)."""
    s1_scaling: S1Scaling | None = None
    """Linear power -> [0, 1] rule (Sentinel-1 only)."""
    extra: dict[str, str] = field(default_factory=dict)
    """Free-form provenance notes."""

    @property
    def n_channels(self) -> int:
        """Number of model input channels."""
        return len(self.bands)

    @property
    def band_dim(self) -> str:
        """Name of this sensor's band dimension in cubes and stores."""
        return f"band_{self.name}"


S2 = SensorSpec(
    name="s2",
    collection="sentinel-2-l2a",
    # B01 and B09 are dropped (SPEC.md 2); order is the model's channel order.
    bands=("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
    assets=("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
    native_res_m=(10, 10, 10, 20, 20, 20, 10, 20, 20, 20),
    dtype="uint16",
    nodata=0,
    resampling="bilinear",
    primary=True,
    bottleneck_dim=9,
    reduced_tokens=6,
    stage1_loss=LossWeights(mae=0.33, ssim=0.02, sam=0.65, centre_weight=1.0),
    stage2_loss=LossWeights(mae=0.665, ssim=0.02, sam=0.315, centre_weight=1.75),
    mask_asset="SCL",
    # 0 no data, 1 saturated/defective, 3 cloud shadow, 8/9 cloud medium/high probability, 10 thin cirrus.
    mask_classes=(0, 1, 3, 8, 9, 10),
    min_valid_train=0.03,
    min_valid_infer=0.035,
    orbit_property="sat:orbit_state",
    s2_scaling=S2Scaling(),
    extra={"processing_baseline_property": "s2:processing_baseline"},
)

S1 = SensorSpec(
    name="s1",
    collection="sentinel-1-rtc",
    bands=("VV", "VH"),
    assets=("vv", "vh"),
    native_res_m=(10, 10),
    dtype="float32",
    nodata=-32768,
    resampling="bilinear",
    primary=False,
    bottleneck_dim=2,
    reduced_tokens=7,
    stage1_loss=LossWeights(mae=1.0, ssim=0.0, sam=0.0, centre_weight=1.0),
    stage2_loss=LossWeights(mae=1.0, ssim=0.0, sam=0.0, centre_weight=1.5),
    orbit_property="sat:orbit_state",
    s1_scaling=S1Scaling(),
)

SENSORS: dict[str, SensorSpec] = {S2.name: S2, S1.name: S1}
"""All sensors, by name."""

PRIMARY_SENSOR: SensorSpec = next(s for s in SENSORS.values() if s.primary)
"""The sensor whose usable acquisition dates are the time axis of cubes, patches and stores."""

FUSION_ORDER: tuple[str, ...] = ("s1", "s2")
"""Order of the modality tokens in the fusion model (reference: S1 token 0, S2 token 1)."""

STAGE2_SENSOR_WEIGHT: float = 0.5
"""Stage 2 total = sum over sensors of this weight x that sensor's part (0.5 S1 + 0.5 S2)."""

EMBEDDING_DIM: int = 7
"""Size of the fused embedding (F01..F07)."""

WINDOW_PX: int = 15
"""Spatial context: a sample is WINDOW_PX x WINDOW_PX pixels; the target is the centre pixel."""

WINDOW_DATES: int = 11
"""Temporal context: a sample spans this many usable primary-sensor dates; target is the centre."""

MAX_GAP_SUM_DAYS: int = 200
"""Windows whose 10 gaps sum to this or more are dropped (training) or given 1-day steps (inference)."""


def get_sensor(name: str) -> SensorSpec:
    """Return the sensor called ``name``, or raise a ``KeyError`` that lists the known sensors."""
    try:
        return SENSORS[name]
    except KeyError:
        raise KeyError(
            f"unknown sensor {name!r}; known sensors are {sorted(SENSORS)} (add one in embedder/sensors.py)"
        ) from None
