"""Write a Config as TOML (for `nmbalance convert`): only what differs from defaults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from nmbalance.config.model import Config


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return str(value[0]) if value[0] == value[1] else f'"{value[0]}-{value[1]}"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return _string(str(value))


def _string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _pairs(model: BaseModel) -> list[tuple[str, Any]]:
    """Set fields that are plain values (not nested models or lists of models)."""
    out = []
    for name in type(model).model_fields:
        if name not in model.model_fields_set:
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel) or (
            isinstance(value, list) and value and isinstance(value[0], BaseModel)
        ):
            continue
        if value is None:
            continue
        out.append((name, value))
    return out


def to_toml(config: Config, header: str = "",
            extra: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> str:
    """The config as TOML; `extra`: more array tables (carried-over port forwards and
    routes). The firewall is written out whole, so what it does is on the page."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{k} = {_value(v)}" for k, v in _pairs(config)]
    for section in ("health", "kernel", "firewall", "daemon"):
        sub = getattr(config, section)
        pairs = _pairs(sub) if section != "firewall" or not sub.restrictive else [
            (name, getattr(sub, name)) for name in type(sub).model_fields]
        if pairs:
            lines += ["", f"[{section}]"] + [f"{k} = {_value(v)}" for k, v in pairs]
    for array in ("uplink", "lan", "rule", "forwarding_group", "port_forward", "route"):
        for item in getattr(config, array):
            lines += ["", f"[[{array}]]"] + [f"{k} = {_value(v)}" for k, v in _pairs(item)]
        for entry in (extra or {}).get(array, ()):
            lines += ["", f"[[{array}]]"] + [f"{k} = {_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"
