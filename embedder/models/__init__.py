"""Models: blocks, modality autoencoders and the fusion model (../shared/SPEC.md sections 3 and 5)."""

from embedder.models.blocks import CBAM, ConvAttentionBlock, MultiScaleAttentionBlock, PoolResidual
from embedder.models.fusion import FusionModel
from embedder.models.modality import GapRangeError, ModalityAutoencoder, day_positions

__all__ = [
    "CBAM",
    "ConvAttentionBlock",
    "FusionModel",
    "GapRangeError",
    "ModalityAutoencoder",
    "MultiScaleAttentionBlock",
    "PoolResidual",
    "day_positions",
]
