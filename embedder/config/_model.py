"""Configs of the models and their training (embedder/models/, embedder/losses.py, embedder/training.py)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from embedder.config._base import ConfigError

__all__ = ["FusionConfig", "ModelConfig", "TrainConfig"]


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
    """Run forward passes under bfloat16 autocast (GPU option; off on CPU: :func:`~embedder.training.fit` warns
    on a CPU without bfloat16 instructions, where it is 3-16x slower than float32)."""
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
