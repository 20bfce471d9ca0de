"""Thin Ray shells around the embedder library (training, shard building, inference)."""
