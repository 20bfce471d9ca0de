"""Strict loading of frozen config dataclasses: :func:`load_config`, :func:`from_dict`, :func:`to_dict`.

Every config is a frozen dataclass with a docstring on each field. YAML (or a dict) supplies values;
:func:`load_config` rejects unknown keys and wrong types with an error that names the key and the file,
and :func:`to_dict` gives back the resolved config, which is saved beside every checkpoint and in every
store's attributes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from embedder.geo import parse_date

__all__ = [
    "ConfigError",
    "config_fingerprint",
    "from_dict",
    "load_config",
    "to_dict",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise :class:`ConfigError` naming ``where``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}: {value!r}")
            items = [
                _check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        else:
            item_tp = args[0] if args else Any
            items = [_check_type(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {
            _check_type(k, kt, f"{where}.<key>"): _check_type(v, vt, f"{where}.{k}") for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is dt.date:
        return parse_date(value, name=where, error=ConfigError)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "config") -> T:
    """Build the dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; allowed keys are {sorted(fields)}"
        )
    kwargs = {name: _check_type(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing} for {cls.__name__}")
    obj = cls(**kwargs)
    return obj


def load_config(cls: type[T], source: str | Path | dict[str, Any], **overrides: Any) -> T:
    """Load ``cls`` from a YAML file path or a dict; ``overrides`` replace top-level keys.

    Raises :class:`ConfigError` naming the file and key for unknown keys or wrong types, and
    ``FileNotFoundError`` naming the path when the file does not exist.
    """
    where = "config"
    if isinstance(source, dict):
        data = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist; pass a path to a YAML file")
        where = str(path)
        with path.open() as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{where}: the top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, data, where=where)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Return a plain, YAML/JSON-serialisable dict of a (nested) config dataclass."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (dt.date, dt.datetime)):
            return v.isoformat()
        if isinstance(v, Path):
            return str(v)
        return v

    return typing.cast(dict[str, Any], conv(cfg))


def config_fingerprint(*cfgs: Any) -> str:
    """A short stable hash of one or more resolved configs (sha256 of their canonical JSON, 16 hex)."""
    import hashlib
    import json

    blob = json.dumps([to_dict(c) for c in cfgs], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
