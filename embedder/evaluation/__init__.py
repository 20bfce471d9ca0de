"""Experiments over the library, importing it and never imported by it.

``fidelity`` (paper vs dense encoder) and ``sweep`` (its learning-rate x seed sweep), ``towers`` (tower-site
scenes -> embeddings -> GPP), ``report`` (a demo run's report), ``realdata`` (the real CropHarvest cube),
``quality`` (embeddings vs bands) and ``convergence`` (of the training recipe).
"""
