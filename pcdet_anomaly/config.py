"""YAML configs with `_BASE_CONFIG_` inheritance, strict keys and typed `--set` overrides.

Rules
-----
* Every config is merged onto the built-in schema `pcdet_anomaly/defaults.yaml`, which names every key the code
  reads. A key that is not in the schema is rejected with its full path and the file it came from.
* `_BASE_CONFIG_: relative/or/absolute.yaml` is resolved relative to the file that contains it (never the working
  directory); bases may chain; a cycle is an error that lists the chain.
* Types are checked against the schema value: int, float (an int is accepted), bool, str, list, dict; a schema value
  of `null` accepts anything. A dict whose schema value is `{}` is open: any keys are accepted below it.
* `--set A.B.C value` parses `value` as YAML and applies the same checks.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable

import yaml
from easydict import EasyDict

__all__ = ["ConfigError", "load_config", "cfg_from_list", "save_config", "merge_strict", "SCHEMA_PATH"]

SCHEMA_PATH = Path(__file__).with_name("defaults.yaml")
BASE_KEY = "_BASE_CONFIG_"


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the file and the key path."""


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


AUTO_OR_NUMBER = ("EVAL_GRID.Z_SHIFT",)   # keys whose value is the string auto or a number


def _check_type(schema_value: Any, value: Any, key_path: str, source: str) -> Any:
    if schema_value is None or value is None:
        return value
    if isinstance(schema_value, bool):
        ok = isinstance(value, bool)
    elif isinstance(schema_value, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(schema_value, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif schema_value == "auto" and key_path.endswith(AUTO_OR_NUMBER):     # 'auto' or a number
        ok = value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool))
        if ok and value != "auto":
            value = float(value)
    elif isinstance(schema_value, str):
        ok = isinstance(value, str)
    elif isinstance(schema_value, list):
        ok = isinstance(value, list)
    elif isinstance(schema_value, dict):
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise ConfigError(
            f"{source}: {key_path}: expected {_type_name(schema_value)} (like {schema_value!r}), "
            f"got {_type_name(value)} {value!r}")
    return value


def merge_strict(base: dict, update: dict, source: str, prefix: str = "", open_tree: bool = False) -> dict:
    """Merge `update` into a deep copy of `base`; unknown keys and wrong types raise ConfigError."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key == BASE_KEY:
            continue
        key_path = f"{prefix}{key}"
        if key not in out:
            if not open_tree:
                known = ", ".join(sorted(str(k) for k in out)) or "(none)"
                raise ConfigError(f"{source}: unknown key '{key_path}'; known keys here: {known}")
            out[key] = copy.deepcopy(value)
            continue
        schema_value = out[key]
        value = _check_type(schema_value, value, key_path, source)
        if isinstance(schema_value, dict) and isinstance(value, dict):
            is_open = open_tree or len(schema_value) == 0
            out[key] = merge_strict(schema_value, value, source, key_path + ".", is_open)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_chain(path: Path, seen: tuple = ()) -> list[tuple[Path, dict]]:
    """Return [(file, data)] from the deepest base to `path` itself."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in seen + (path,))
        raise ConfigError(f"{path}: {BASE_KEY} cycle: {chain}")
    data = _read_yaml(path)
    base = data.get(BASE_KEY)
    chain: list[tuple[Path, dict]] = []
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: {BASE_KEY} must be a path string, got {_type_name(base)}")
        base_path = Path(base) if os.path.isabs(base) else path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{path}: {BASE_KEY} '{base}' not found (looked at {base_path.resolve()})")
        chain = _resolve_chain(base_path, seen + (path,))
    chain.append((path, data))
    return chain


def _to_easydict(data: Any) -> Any:
    if isinstance(data, dict):
        return EasyDict({k: _to_easydict(v) for k, v in data.items()})
    if isinstance(data, list):
        return [_to_easydict(v) for v in data]
    return data


def load_config(cfg_file: str | os.PathLike, overrides: Iterable[str] | None = None) -> EasyDict:
    """Load `cfg_file` with its base chain onto the schema, apply `--set` style overrides, return an EasyDict.

    The result carries `CFG_FILE` (absolute path) and `CFG_TAG` (stem of the file).
    """
    cfg = _read_yaml(SCHEMA_PATH)
    for path, data in _resolve_chain(Path(cfg_file)):
        cfg = merge_strict(cfg, data, str(path))
    cfg["CFG_FILE"] = str(Path(cfg_file).resolve())
    cfg["CFG_TAG"] = Path(cfg_file).stem
    cfg = _to_easydict(cfg)
    if overrides:
        cfg_from_list(list(overrides), cfg)
    return cfg


def _schema_is_open(parts: list[str]) -> bool:
    """Whether the schema declares this key an open mapping (default {})."""
    node: Any = _read_yaml(SCHEMA_PATH)
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, dict) and not node


def cfg_from_list(items: list[str], cfg: EasyDict) -> EasyDict:
    """Apply ['A.B.C', 'value', ...] in place; values are parsed as YAML and type-checked."""
    if len(items) % 2 != 0:
        raise ConfigError(f"--set: expected KEY VALUE pairs, got an odd number of items: {items}")
    for key_path, raw in zip(items[0::2], items[1::2]):
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key_path}: value {raw!r} is not valid YAML: {err}") from err
        node = cfg
        parts = key_path.split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"--set: unknown key '{'.'.join(parts[:i + 1])}' in '{key_path}'")
            node = node[part]
        leaf = parts[-1]
        if not isinstance(node, dict) or leaf not in node:
            raise ConfigError(f"--set: unknown key '{key_path}'")
        current = node[leaf]
        if isinstance(current, dict) and isinstance(value, dict) and _schema_is_open(parts):
            node[leaf] = _to_easydict(value)       # an open mapping (DATA_CONFIG.SPLIT.LISTS): replaced whole
        elif isinstance(current, dict) and isinstance(value, dict):
            node[leaf] = _to_easydict(merge_strict(current, value, "--set", key_path + "."))
        else:
            node[leaf] = _to_easydict(_check_type(current, value, key_path, "--set"))
    return cfg


def _to_plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _to_plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_to_plain(v) for v in data]
    return data


def save_config(cfg: dict, path: str | os.PathLike) -> None:
    """Write the resolved config (no bases left) as YAML, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(_to_plain(cfg), f, sort_keys=False)
    os.replace(tmp, path)
