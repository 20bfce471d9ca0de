"""Frozen dataclasses for every configuration of the library, and strict YAML loading.

Every config is a frozen dataclass with a docstring on each field. YAML (or a dict) supplies values;
:func:`load_config` rejects unknown keys and wrong types with an error that names the key and the file,
and :func:`to_dict` gives back the resolved config, which is saved beside every checkpoint and in every
store's attributes.

One private module per room: ``_base`` (the loader), ``_data`` (patches, shards, cubes), ``_gpp``,
``_sample`` (the sample region), ``_model`` (models and training), ``_store``, ``_serve``. Import the
names from here (``from embedder.config import StoreConfig``); the Ray jobs' own configs live in
``ray_jobs/config.py``.
"""

from embedder.config._base import ConfigError, config_fingerprint, from_dict, load_config, to_dict
from embedder.config._data import BuildShardsConfig, CubeConfig, CubeSpec, PatchConfig
from embedder.config._gpp import GppConfig, GppModelConfig, GppModelName
from embedder.config._model import FusionConfig, ModelConfig, TrainConfig
from embedder.config._sample import SampleRegionConfig, SceneSpec
from embedder.config._serve import ServeConfig
from embedder.config._store import StoreConfig

__all__ = [
    "BuildShardsConfig",
    "ConfigError",
    "CubeConfig",
    "CubeSpec",
    "FusionConfig",
    "GppConfig",
    "GppModelConfig",
    "GppModelName",
    "ModelConfig",
    "PatchConfig",
    "SampleRegionConfig",
    "SceneSpec",
    "ServeConfig",
    "StoreConfig",
    "TrainConfig",
    "config_fingerprint",
    "from_dict",
    "load_config",
    "to_dict",
]
