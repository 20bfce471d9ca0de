"""Configs of the downstream GPP evaluation (embedder/gpp/, SPEC.md section 8)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from embedder.config._base import ConfigError

__all__ = ["GppConfig", "GppModelConfig", "GppModelName"]

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
