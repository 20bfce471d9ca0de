"""embedder: per-date Sentinel-1 + Sentinel-2 embeddings."""
