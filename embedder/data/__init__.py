"""Data layer: STAC search, cubes, patches and training shards."""
