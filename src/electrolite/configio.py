"""Typed configs to and from plain data: build a dataclass from a (nested) dict rejecting unknown
keys and wrong types, YAML in and out, and each field's docstring (the string under it) for --help.

(Split from config.py, which holds the config classes and the size table.)
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from electrolite.errors import UserError, shown, shown_repr


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def build(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Construct dataclass `cls` from a (nested) dict, rejecting unknown keys and wrong types.

    Args:
        cls: the dataclass type.
        data: field values; missing ones take defaults.
        where: dotted prefix for error messages ("model", "train").
    """
    data = dict(data or {})
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(shown(k) for k in data if k not in known)  # YAML keys may be numbers, null, dates
    if unknown:
        names = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise UserError(f"unknown config key{'s' if len(unknown) > 1 else ''}: {names}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{where}.{name}" if where else name
        if _is_dataclass_type(tp):
            if not isinstance(value, dict):
                raise UserError(f"config {key} must be a mapping")
            kwargs[name] = build(tp, value, key)
        else:
            kwargs[name] = coerce(value, tp, key)
    return cls(**kwargs)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML or command-line value to a field's type, or raise UserError naming the key."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,100}", value.strip()):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - our configs only use the four scalar types
        return value
    raise UserError(f"config {key} must be {tp.__name__}, got {shown_repr(value)}")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read config ({e.__class__.__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', None) or 'parse error'})") from None
    except RecursionError:
        raise UserError(f"{path}: invalid YAML (nested too deeply)") from None
    except (ValueError, OverflowError) as e:  # a scalar PyYAML cannot build: 2001-13-01, a 5000-digit int
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: invalid YAML value ({shown(reason)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def save_yaml(data: dict[str, Any], path: str | Path) -> None:
    """Write a YAML mapping atomically (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def _undot(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"config {key}: {p} is not a section")
        node[parts[-1]] = value
    return out


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string under each field), for --help."""
    source = textwrap.dedent(inspect.getsource(cls))
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def iter_fields(cls: type, prefix: str = ""):
    """Yield (dotted name, type, default, doc) for every scalar field of a nested config."""
    hints = get_type_hints(cls)
    docs = field_docs(cls)
    for f in fields(cls):
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if _is_dataclass_type(tp):
            yield from iter_fields(tp, name + ".")
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            yield name, tp, default, docs.get(f.name, "")
