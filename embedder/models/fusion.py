"""Stage 2: the fusion model over the pretrained modality autoencoders (../shared/SPEC.md section 5).

Each sensor's encoder gives its bottleneck ``z``; a linear layer per sensor lifts it to one token of
width 128, a learned sensor-type embedding and a learned temporal embedding (table of 351 day offsets)
are added, a small pre-norm transformer mixes the tokens, the mean token goes through LayerNorm,
``Linear -> 7`` and Softplus: the non-negative 7-d embedding. Per-sensor heads ``Linear 7 -> D`` feed the
sensors' decoders, which reconstruct their full inputs.

Token order is :data:`embedder.sensors.FUSION_ORDER` (S1 token 0, S2 token 1, as the reference). The
temporal positions are ``[0, cumsum(delta)]`` over the tokens after the first, where ``delta`` of a
non-primary sensor is its ``<name>_delta_days`` batch entry (|t_sensor - t_S2| at the centre frame): with
S1 and S2 this is the reference's ``[0, delta]``.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping

import torch
from torch import nn

from embedder.config import FusionConfig
from embedder.models.modality import ModalityAutoencoder, day_positions
from embedder.sensors import EMBEDDING_DIM, FUSION_ORDER, SENSORS

__all__ = ["FusionModel"]


class FusionModel(nn.Module):
    """Fuse pretrained modality autoencoders into one 7-d embedding.

    Args:
        autoencoders: one :class:`ModalityAutoencoder` per sensor name, e.g. ``{"s1": ae1, "s2": ae2}``.
        cfg: fusion size and the ``freeze_modalities`` mode.

    Batch keys per sensor ``name``: ``name`` ``[B, 11, C, 15, 15]``, ``name_gaps`` ``[B, 10]`` and,
    for non-primary sensors, ``name_delta_days`` ``[B]``.

    """

    def __init__(
        self, autoencoders: Mapping[str, ModalityAutoencoder], *, cfg: FusionConfig | None = None
    ) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else FusionConfig()
        unknown = sorted(set(autoencoders) - set(FUSION_ORDER))
        if unknown or not autoencoders:
            raise ValueError(
                f"autoencoders {sorted(autoencoders)} must be a non-empty subset of FUSION_ORDER "
                f"{list(FUSION_ORDER)}; add new sensors to embedder/sensors.py"
            )
        for name, ae in autoencoders.items():
            if ae.sensor.name != name:
                raise ValueError(
                    f"autoencoders[{name!r}] was built for sensor {ae.sensor.name!r}; key it by that"
                )
        self.cfg = cfg
        self.names: tuple[str, ...] = tuple(n for n in FUSION_ORDER if n in autoencoders)
        self.autoencoders = nn.ModuleDict({n: autoencoders[n] for n in self.names})
        self.delta_keys: tuple[str, ...] = tuple(
            f"{n}_delta_days" for n in self.names if not SENSORS[n].primary
        )
        if len(self.delta_keys) != len(self.names) - 1:
            raise ValueError(
                f"fusion needs exactly one primary sensor among {list(self.names)} (the time axis); "
                "include the primary sensor's autoencoder"
            )
        w = cfg.width
        self.project = nn.ModuleDict({n: nn.Linear(autoencoders[n].bottleneck_dim, w) for n in self.names})
        self.sensor_type = nn.Embedding(len(self.names), w)
        self.temporal = nn.Embedding(cfg.max_delta_days + 1, w)
        layer = nn.TransformerEncoderLayer(
            w, cfg.n_heads, dim_feedforward=cfg.ff_dim, dropout=cfg.dropout, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)
        self.to_embedding = nn.Sequential(nn.Linear(w, EMBEDDING_DIM), nn.Softplus())
        self.heads = nn.ModuleDict(
            {n: nn.Linear(EMBEDDING_DIM, autoencoders[n].bottleneck_dim) for n in self.names}
        )
        if cfg.freeze_modalities:
            for p in self.autoencoders.parameters():
                p.requires_grad_(False)
            self.autoencoders.eval()

    def autoencoder(self, name: str) -> ModalityAutoencoder:
        """The autoencoder of sensor ``name``."""
        return typing.cast(ModalityAutoencoder, self.autoencoders[name])

    def train(self, mode: bool = True) -> FusionModel:
        """Set training mode; frozen autoencoders stay in eval mode (no dropout on fixed features)."""
        super().train(mode)
        if self.cfg.freeze_modalities:
            self.autoencoders.eval()
        return self

    def encode(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each sensor's bottleneck: ``{name: z [B, D_name]}``."""
        out = {}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_modalities):
            for n in self.names:
                out[n] = self.autoencoder(n).encode(batch[n], batch[f"{n}_gaps"])  # [B, D_n]
        return out

    def temporal_positions(self, delta_days: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The tokens' temporal embedding, divided by sqrt(width): ``{name_delta_days: [B]}`` -> ``[B, S, w]``.

        Validates the deltas (reads them on the host): inference computes it once per tile and passes
        it to :meth:`fuse`.
        """
        if self.delta_keys:
            b = delta_days[self.delta_keys[0]].reshape(-1).shape[0]
            deltas = torch.stack(
                [delta_days[k].reshape(b) for k in self.delta_keys], dim=1
            )  # [B, S - 1] days
            pos = day_positions(
                deltas, max_position_days=self.cfg.max_delta_days, what="/".join(self.delta_keys)
            )  # [B, S]
        else:
            pos = torch.zeros(1, 1, dtype=torch.long, device=self.temporal.weight.device)
        return self.temporal(pos.to(self.temporal.weight.device)) / math.sqrt(self.cfg.width)  # [B, S, w]

    def fuse(
        self,
        z: Mapping[str, torch.Tensor],
        delta_days: Mapping[str, torch.Tensor] | None = None,
        *,
        temporal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The 7-d embedding from per-sensor bottlenecks: ``{name: [B, D]}``, ``{name_delta_days: [B]}`` -> ``[B, 7]``.

        Inference with cached frame tokens calls ``encode_tokens`` per sensor and then this, with the
        precomputed :meth:`temporal_positions` ``[B or 1, S, w]`` instead of ``delta_days``.
        """
        if temporal is None:
            temporal = self.temporal_positions(delta_days if delta_days is not None else {})
        tokens = torch.stack([self.project[n](z[n]) for n in self.names], dim=1)  # [B, S, w]
        type_ids = torch.arange(len(self.names), device=tokens.device)  # [S]
        tokens = tokens + self.sensor_type(type_ids) + temporal  # [B, S, w]
        h = self.transformer(tokens)  # [B, S, w]
        h = self.norm(h.mean(dim=1))  # [B, w]
        return self.to_embedding(h)  # [B, 7], non-negative

    def embed(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The 7-d embedding of each sample: ``[B, 7]``."""
        return self.fuse(self.encode(batch), {k: batch[k] for k in self.delta_keys})

    def reconstruct(
        self, embedding: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Each sensor's reconstruction from the embedding: ``{name: [B, 11, C, 15, 15]}``."""
        return {
            n: self.autoencoder(n).decode(self.heads[n](embedding), batch[f"{n}_gaps"]) for n in self.names
        }

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Reconstructions ``{name: [B, 11, C, 15, 15]}`` of every sensor's input."""
        return self.reconstruct(self.embed(batch), batch)
