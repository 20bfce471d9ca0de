"""GPP regressors: the reference transformer, the LSTM, their training and the least-squares baseline.

Step 4 of the pipeline in :mod:`embedder.gpp`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from embedder.config import GppConfig, GppModelConfig
from embedder.gpp.data import GppInputError, Windows

__all__ = [
    "LstmRegressor",
    "Standardiser",
    "TransformerRegressor",
    "apply_linear",
    "fit_linear",
    "fit_regressor",
    "predict_regressor",
]

# ---------------------------------------------------------------------------------------------------
# 4. Regressors and baselines
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standardiser:
    """Per-feature and target standardisation with training statistics only."""

    x_mean: np.ndarray
    """``[F]`` feature means over all training days."""
    x_std: np.ndarray
    """``[F]`` feature standard deviations (1 where constant)."""
    y_mean: float
    """Target mean, gC m-2 d-1."""
    y_std: float
    """Target standard deviation, gC m-2 d-1 (1 where constant)."""

    @classmethod
    def fit(cls, train: Windows) -> Standardiser:
        """Statistics of the training windows (every day of every window for features)."""
        if not len(train):
            raise GppInputError("no training windows: check the split years/sites and the feature coverage")
        flat = train.x.reshape(-1, train.x.shape[-1]).astype(np.float64)  # [N*W, F]
        x_std = flat.std(axis=0)
        y_std = float(train.y.std())
        return cls(
            flat.mean(axis=0),
            np.where(x_std > 0, x_std, 1.0),
            float(train.y.mean()),
            y_std if y_std > 0 else 1.0,
        )

    def x(self, x: np.ndarray) -> np.ndarray:
        """Standardised features, float32, same shape."""
        return ((x - self.x_mean) / self.x_std).astype(np.float32)

    def y(self, y: np.ndarray) -> np.ndarray:
        """Standardised target."""
        return ((y - self.y_mean) / self.y_std).astype(np.float32)

    def y_inverse(self, z: np.ndarray) -> np.ndarray:
        """Target back in gC m-2 d-1."""
        return z * self.y_std + self.y_mean


class TransformerRegressor(nn.Module):
    """The reference GPP regressor (SPEC.md section 8).

    Linear input projection, sinusoidal positions, a Transformer encoder and last-token pooling to one
    value.
    """

    def __init__(self, n_features: int, *, cfg: GppModelConfig | None = None, max_days: int = 366) -> None:
        super().__init__()
        cfg = cfg or GppModelConfig()
        self.proj = nn.Linear(n_features, cfg.d_model)
        position = torch.arange(max_days, dtype=torch.float32)[:, None]  # [L, 1]
        freq = torch.exp(
            torch.arange(0, cfg.d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / cfg.d_model)
        )
        pe = torch.zeros(max_days, cfg.d_model)  # [L, d]
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq[: cfg.d_model // 2])
        self.register_buffer("pe", pe, persistent=False)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.n_heads, dim_feedforward=cfg.ff_dim, dropout=cfg.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(cfg.d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, W, F]`` standardised features -> ``[B]`` standardised GPP of the last day."""
        pe: torch.Tensor = self.pe  # type: ignore[assignment]
        h = self.proj(x) + pe[: x.shape[1]]  # [B, W, d]
        h = self.encoder(h)  # [B, W, d]
        return self.head(h[:, -1]).squeeze(-1)  # [B]


class LstmRegressor(nn.Module):
    """The comparison regressor: a stacked LSTM read out at the last day."""

    def __init__(self, n_features: int, *, cfg: GppModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or GppModelConfig()
        self.lstm = nn.LSTM(
            n_features,
            cfg.lstm_hidden,
            num_layers=cfg.lstm_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0,
        )
        self.head = nn.Linear(cfg.lstm_hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, W, F]`` standardised features -> ``[B]`` standardised GPP of the last day."""
        h, _ = self.lstm(x)  # [B, W, H]
        return self.head(h[:, -1]).squeeze(-1)  # [B]


def fit_regressor(
    model: nn.Module, x: np.ndarray, *, y: np.ndarray, cfg: GppConfig, seed: int | None = None
) -> list[float]:
    """Train ``model`` on standardised ``x [N, W, F]`` and ``y [N]`` with L1 loss and AdamW.

    Returns the mean training loss of each epoch.
    """
    if len(x) == 0:
        raise GppInputError("no training windows to fit on: check the split and the feature coverage")
    gen = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.L1Loss()
    history = []
    model.train()
    for _epoch in range(cfg.epochs):
        # 1. shuffle, 2. step over batches, 3. record the epoch's mean loss
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = loss_fn(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(xt))
    return history


@torch.no_grad()
def predict_regressor(model: nn.Module, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Predict standardised targets ``[N]`` for standardised ``x [N, W, F]`` in eval mode."""
    model.eval()
    out = [model(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def fit_linear(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ordinary least squares with intercept: ``x [N, K]``, ``y [N]`` -> coefficients ``[K + 1]``.

    The last coefficient is the intercept; predict with ``x @ c[:-1] + c[-1]``.
    """
    design = np.column_stack([x, np.ones(len(x))])  # [N, K+1]
    coef, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    return np.asarray(coef)


def index_driver_design(index: np.ndarray, drivers: np.ndarray) -> np.ndarray:
    """The light-use-efficiency form of a linear GPP model: ``[index, index x driver..., driver...]``.

    ``index [N, 1]`` (NDVI, EVI or fAPAR), ``drivers [N, K]`` (e.g. PPFD, temperature; ``K`` may be 0) ->
    ``[N, 1 + 2K]``; :func:`fit_linear` adds the intercept.
    """
    return np.concatenate([index, index * drivers, drivers], axis=1)


def apply_linear(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Predictions of :func:`fit_linear`'s coefficients (weights, then intercept) on ``x``."""
    return np.asarray(x @ coef[:-1] + coef[-1])
