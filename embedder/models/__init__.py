"""Models: blocks, modality autoencoders and the fusion model."""
