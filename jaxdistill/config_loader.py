"""Experiment configs as Python files: `path.py[:preset]` or a packaged `name[:preset]` -> ConfigDict, overrides.

A config file defines `get_config(preset: str | None = None) -> ml_collections.ConfigDict` and, optionally,
`PRESETS` (the preset names it accepts) and `DEFAULT_PRESET`. On the command line::

    jaxdistill distill --config configs/homodistil.py:tiny --config.train.steps=100 --workdir runs/tiny

Overrides (`--config.train.steps=100`, `train.steps=100`) are parsed with the type of the field they replace:
int, float, bool (true/false/1/0/yes/no), str, None, tuples and lists (`--config.student.layers=0,2,4` or
`[0, 2, 4]`), dicts; a field holding None takes a Python literal (`ast.literal_eval`) or else the raw string.
An unknown key is an error that names it and suggests close matches.

Validating a loaded distillation config is `jaxdistill.experiment.resolve`'s job.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import sys
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import ml_collections

from jaxdistill.errors import ConfigError

_NONE = ("none", "null")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")



# ----------------------------------------------------------------------------------------------- loading
PACKAGED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def packaged_configs() -> Tuple[str, ...]:
    """Names of the experiment configs that ship with jaxdistill (`homodistil`, `finetune`, ...: the files that
    define get_config; `common` and `demo` are shared pieces)."""
    def is_experiment(name: str) -> bool:
        with open(os.path.join(PACKAGED_DIR, name), encoding="utf-8") as f:
            return "\ndef get_config(" in f.read()
    return tuple(sorted(f[:-3] for f in os.listdir(PACKAGED_DIR)
                        if f.endswith(".py") and not f.startswith("_") and is_experiment(f)))


def split_spec(spec: str) -> Tuple[str, Optional[str]]:
    """The config file and preset of `spec`: `"configs/homodistil.py:tiny"` -> ("configs/homodistil.py",
    "tiny"); a packaged config by name, `"homodistil:tiny"` -> (<package>/configs/homodistil.py, "tiny");
    no preset -> (path, None)."""
    spec = str(spec).strip()
    if not spec:
        raise ConfigError("--config is empty: give a config, e.g. homodistil:smoke or configs/homodistil.py:smoke")
    path, sep, preset = spec.rpartition(":")
    if not sep or "/" in preset:
        path, preset = spec, ""
    if not path.endswith(".py") and "/" not in path:
        if path not in packaged_configs():
            close = difflib.get_close_matches(path, packaged_configs(), n=1)
            raise ConfigError(f"--config {spec!r}: no packaged config named {path!r}; the packaged configs are "
                              f"{', '.join(packaged_configs())}" + (f" (did you mean {close[0]!r}?)" if close else "")
                              + "; or give a file, path.py[:preset]")
        path = os.path.join(PACKAGED_DIR, path + ".py")
    return path, (preset or None)


def _import_file(path: str):
    name = "jaxdistill_config_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(path))
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"config file {path!r} cannot be imported; it must be a Python (.py) file")
    module = importlib.util.module_from_spec(module_spec)
    directory = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, directory)  # a config may import a sibling helper file
    try:
        module_spec.loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"config file {path!r} failed to import: {type(e).__name__}: {e}") from e
    finally:
        if sys.path and sys.path[0] == directory:
            sys.path.pop(0)
    return module


def presets_of(path: str) -> Tuple[str, ...]:
    """The preset names a config file declares in `PRESETS` (empty when it declares none)."""
    return tuple(getattr(_import_file(path), "PRESETS", ()))


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Imports the config file of `spec` ("path.py[:preset]"), calls `get_config(preset)`, applies overrides."""
    path, preset = split_spec(spec)
    if not os.path.exists(path):
        here = os.path.dirname(path) or "."
        known = sorted(f for f in os.listdir(here) if f.endswith(".py")) if os.path.isdir(here) else []
        hint = f"; config files in {here!r}: {', '.join(known)}" if known else ""
        raise ConfigError(f"config file {path!r} does not exist{hint}")
    if os.path.isdir(path) or not path.endswith(".py"):
        raise ConfigError(f"config {path!r} is not a .py file; give path.py[:preset], e.g. "
                          "configs/homodistil.py:smoke")
    module = _import_file(path)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"config file {path!r} defines no get_config(preset) function")
    presets = tuple(getattr(module, "PRESETS", ()))
    if preset is None:
        preset = getattr(module, "DEFAULT_PRESET", None)
    if presets and preset is None:
        raise ConfigError(f"config file {path!r} needs a preset: {path}:PRESET with PRESET one of "
                          f"{', '.join(presets)}")
    if presets and preset not in presets:
        close = difflib.get_close_matches(preset, presets, n=1)
        raise ConfigError(f"unknown preset {preset!r} in {path}; known presets: {', '.join(presets)}"
                          + (f" (did you mean {close[0]!r}?)" if close else ""))
    try:
        config = get_config(preset) if preset is not None else get_config()
    except (ConfigError, FileNotFoundError, ImportError):
        raise
    except ValueError as e:
        raise ConfigError(f"{path}:{preset}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config in {path!r} returned {type(config).__name__}, not an ml_collections "
                          "ConfigDict")
    apply_overrides(config, overrides)
    return config


# --------------------------------------------------------------------------------------------- overrides
def flat_keys(config: Any, prefix: str = "") -> List[str]:
    """Every dotted key of a (nested) ConfigDict, sub-dicts included."""
    keys = []
    for k in config.keys():
        full = prefix + str(k)
        keys.append(full)
        v = config[k]
        if isinstance(v, (ml_collections.ConfigDict, dict)) and v:
            keys.extend(flat_keys(v, full + "."))
    return keys


def _unknown_key(config, key: str) -> ConfigError:
    keys = flat_keys(config)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    if not close:  # the same last component anywhere in the tree
        last = key.rsplit(".", 1)[-1]
        close = [k for k in keys if k.rsplit(".", 1)[-1] == last][:3]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _parse_bool(text: str, key: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"--config.{key}={text!r}: expected a boolean (true/false)")


def _parse_sequence(text: str, kind: type, key: str):
    stripped = text.strip()
    if stripped in ("", "()", "[]"):
        return kind()
    value = _literal(stripped)
    if isinstance(value, str) and "," not in stripped and not stripped.startswith(("[", "(")):
        value = (value,)  # one bare item: --config.student.layers=3
    elif isinstance(value, str):
        value = tuple(_literal(p.strip()) for p in stripped.strip("[]()").split(",") if p.strip())
    if isinstance(value, (int, float, bool)):
        value = (value,)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"--config.{key}={text!r}: expected a {kind.__name__} such as 0,2,4 or [0, 2, 4]")
    return kind(value)


def parse_value(text: str, field_type: Optional[type], key: str = "?") -> Any:
    """Parses an override's text with the type of the field it replaces (None: any Python literal)."""
    if text.strip().lower() in _NONE:
        return None
    if field_type is bool:
        return _parse_bool(text, key)
    if field_type is int:
        value = _literal(text.strip())
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"--config.{key}={text!r}: expected an integer")
        return value
    if field_type is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--config.{key}={text!r}: expected a number") from None
    if field_type is str:
        value = _literal(text) if text[:1] in "'\"" else text
        return value if isinstance(value, str) else text
    if field_type in (tuple, list):
        return _parse_sequence(text, field_type, key)
    if field_type is object:  # a bool-or-name field (train.remat, train.scan_layers)
        low = text.strip().lower()
        return True if low in _TRUE else False if low in _FALSE else _literal(text)
    if field_type in (dict, ml_collections.ConfigDict):
        value = _literal(text)
        if not isinstance(value, dict):
            raise ConfigError(f"--config.{key}={text!r}: expected a dict literal such as {{'a': 1}}")
        return value
    return _literal(text)


def split_override(item: str) -> Tuple[str, str]:
    """`"--config.train.steps=100"` / `"train.steps=100"` -> ("train.steps", "100")."""
    body = item
    for prefix in ("--config.", "config."):
        if body.startswith(prefix):
            body = body[len(prefix):]
            break
    key, sep, value = body.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form --config.KEY=VALUE "
                          "(e.g. --config.train.steps=100)")
    return key.strip(), value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """Applies dotted overrides in order (later ones win); raises ConfigError naming the key on failure."""
    for item in overrides:
        key, text = split_override(item)
        parts = key.split(".")
        parent = config
        for i, part in enumerate(parts[:-1]):
            if not isinstance(parent, (ml_collections.ConfigDict, dict)) or part not in parent:
                raise _unknown_key(config, key)
            parent = parent[part]
        leaf = parts[-1]
        if not isinstance(parent, (ml_collections.ConfigDict, dict)) or leaf not in parent:
            raise _unknown_key(config, key)
        if isinstance(parent, ml_collections.ConfigDict):
            field_type = parent.get_type(leaf)
            type_safe = parent.is_type_safe
        else:
            field_type, type_safe = (type(parent[leaf]) if parent[leaf] is not None else None), False
        if field_type is type(None):
            field_type = None
        try:
            value = parse_value(text, field_type, key)
        except ConfigError:
            if type_safe:
                raise
            value = _literal(text)  # a type-unsafe section (recipes) may take e.g. a schedule dict
        if isinstance(parent[leaf], ml_collections.ConfigDict) and isinstance(value, dict):
            value = ml_collections.ConfigDict(value)
        try:
            parent[leaf] = value
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--config.{key}={text!r} does not fit the field "
                              f"({field_type.__name__ if field_type else 'untyped'}): {e}") from None
    return config
