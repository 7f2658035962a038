"""Typed configs: dataclasses built from YAML/dicts with errors that name the field.

Every config in roboreal (robot specs, task configs, domain randomization, agent
hyper-parameters) is a dataclass. `from_dict` builds one from plain data and refuses
unknown keys, missing required fields and wrong types, naming the dotted path of the
offending field, e.g. ``joints[3].kp: expected a number, got 'high'``.
`apply_overrides` applies ``key.sub=value`` strings from the command line with the same
validation, so a misspelled key is an error, never a silent no-op.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown or malformed. The message names the field."""

    def __init__(self, field: str, message: str, source: str | None = None):
        self.field = field
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {message}" if field else f"{where}{message}")


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("", f"file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError("", f"invalid YAML: {e}", source=str(path)) from None



def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write` a temporary file beside `path`, then rename it over `path`: a reader (another
    process, or a run resumed after a crash) sees the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(value: Any, tp: Any, path: str, hints_ns: dict | None = None) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        if len(candidates) == 1:  # Optional[X]: X's own error names the exact field
            return _convert(value, candidates[0], path, hints_ns)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path, hints_ns)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(path, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if typing.get_origin(tp) is typing.Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(path, f"must be one of {list(choices)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        args = get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(path, f"expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        out = [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        args = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {value!r}")
        vt = args[1] if args else Any
        return {k: _convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict | None, path: str = "", source: str | None = None) -> T:
    """Build dataclass `cls` from `data`, validating every field recursively."""
    try:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected a mapping, got {data!r}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = [k for k in data if k not in fields]
        if unknown:
            raise ConfigError(
                _join(path, str(unknown[0])),
                f"unknown field (known: {', '.join(sorted(fields))})",
            )
        kwargs = {}
        for name, f in fields.items():
            fpath = _join(path, name)
            if name in data:
                kwargs[name] = _convert(data[name], hints[name], fpath)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(fpath, "missing required field")
        obj = cls(**kwargs)
    except ConfigError as e:
        if source and not e.source:
            raise ConfigError(e.field, str(e).split(": ", 1)[1] if e.field else str(e), source) from None
        raise
    except (TypeError, ValueError) as e:  # raised by a dataclass __post_init__ check
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(path, str(e), source) from None
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data (YAML-safe) view of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: dict, override: dict | None) -> dict:
    """`override` merged into `base`, mapping by mapping (neither is modified). An empty
    mapping clears the field (``observation_noise={}``: no observation noise), it does not
    merge as "change nothing"."""
    out = dict(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and v and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b=value``; the value is parsed as YAML (``1e-3``, ``[1, 2]``, ``true``)."""
    if "=" not in text:
        raise ConfigError(text, "override must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(text, "override has an empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    return key, value


def set_dotted(data: dict, key: str, value: Any, cls: type | None = None) -> None:
    """Set ``data['a']['b'] = value`` for key ``a.b``; with `cls`, unknown keys raise."""
    parts = key.split(".")
    node = data
    tp = cls
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        if tp is not None and dataclasses.is_dataclass(tp):
            names = {f.name for f in dataclasses.fields(tp)}
            if part not in names:
                raise ConfigError(path, f"unknown field (known: {', '.join(sorted(names))})")
            tp = typing.get_type_hints(tp)[part]
            # unwrap Optional[Dataclass]
            if get_origin(tp) in (Union, types.UnionType):
                inner = [a for a in get_args(tp) if a is not type(None)]
                tp = inner[0] if len(inner) == 1 else None
        elif tp is not None and get_origin(tp) is not dict and tp is not dict and i < len(parts) - 1:
            raise ConfigError(path, "is not a mapping; cannot set a sub-key")
        else:
            tp = None if tp is None else (get_args(tp)[1] if get_args(tp) else None)
        if i == len(parts) - 1:
            node[part] = value
        else:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else to_dict(child)
                if not isinstance(child, dict):
                    raise ConfigError(path, "is not a mapping; cannot set a sub-key")
                node[part] = child
            node = child


def apply_overrides(cls: type[T], base: dict | T, overrides: list[str] | dict[str, Any]) -> T:
    """Return a new `cls` with dotted overrides applied and the result validated."""
    data = to_dict(base) if dataclasses.is_dataclass(base) else dict(base or {})
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        set_dotted(data, key, value, cls)
    return from_dict(cls, data)
