"""Read a config file (TOML or legacy balance.conf) into a validated Config.

Every problem becomes a ConfigError naming the file, the line and the field,
and saying what was expected; unknown keys get a "did you mean".
"""

from __future__ import annotations

import difflib
import tomllib
import types
import typing
from pathlib import Path as FsPath
from typing import Any

from pydantic import BaseModel, ValidationError

from nmbalance.config.legacy import looks_legacy, parse_legacy
from nmbalance.config.model import Config, cross_check
from nmbalance.config.toml_lines import Path, key_lines, line_of
from nmbalance.errors import ConfigError, ConfigErrors

DEFAULT_PATH = "/etc/nmbalance/nmbalance.toml"


def load_config(path: str | FsPath) -> Config:
    source = str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, f"cannot read: {exc}") from None
    return load_config_text(text, source)


def load_config_text(text: str, source: str = "<config>") -> Config:
    data, lines = parse_text(text, source)
    return validate(data, lines, source)


def parse_text(text: str, source: str) -> tuple[dict[str, Any], dict[Path, int]]:
    if looks_legacy(text):
        return parse_legacy(text, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = None
        if "(at line " in message:
            message, _, where = message.partition(" (at line ")
            line = int(where.split(",")[0])
        raise ConfigError(source, f"not valid TOML: {message}", line=line) from None
    return data, key_lines(text)


def validate(data: dict[str, Any], lines: dict[Path, int], source: str) -> Config:
    try:
        config = Config.model_validate(data, context={"defer_cross_check": True})
    except ValidationError as exc:
        raise ConfigErrors(_merge_alternatives(
            [_to_config_error(e, lines, source) for e in exc.errors()]
        )) from None
    problems = cross_check(config)
    if problems:
        raise ConfigErrors(
            [ConfigError(source, msg, line=line_of(lines, loc), field=field_path(loc))
             for loc, msg in problems]
        )
    return config


def _merge_alternatives(errors: list[ConfigError]) -> list[ConfigError]:
    """A value that fits no arm of a union gives one error per arm: say it once."""
    merged: dict[tuple[int | None, str | None], ConfigError] = {}
    for error in errors:
        key = (error.line, error.field)
        if key in merged and error.field is not None:
            first = merged[key]
            got = ""
            if " (got " in first.message:
                got = " (got " + first.message.split(" (got ", 1)[1]
            alternatives = [_alternative(m.split(" (got ")[0])
                            for m in (first.message, error.message)]
            text = " or ".join(alternatives)
            merged[key] = ConfigError(
                first.source, (text if text.startswith("expected") else f"expected {text}") + got,
                line=first.line, field=first.field,
            )
        else:
            merged[key] = error
    return list(merged.values())


def _alternative(message: str) -> str:
    for prefix in ("Input should be ", "Input is not "):
        message = message.removeprefix(prefix)
    return message


def field_path(loc: Path) -> str:
    """("uplink", 1, "weight") -> "uplink[1].weight"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _to_config_error(error: Any, lines: dict[Path, int], source: str) -> ConfigError:
    # Drop pydantic's union/validator tags ("function-after[...]", "IPv4Address")
    # from the location so it matches the document's own keys.
    loc: Path = tuple(
        p for p in error["loc"]
        if isinstance(p, int) or p in _all_field_names() or error["type"] == "extra_forbidden"
    )
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        key = str(loc[-1]) if loc else "?"
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        message = f"unknown key {key!r}{hint}"
    elif "input" in error and not isinstance(error["input"], dict | list):
        message = f"{message} (got {error['input']!r})"
    return ConfigError(source, message, line=line_of(lines, loc), field=field_path(loc) or None)


def _model_fields(model: type[BaseModel]) -> dict[str, Any]:
    return {name: info.annotation for name, info in model.model_fields.items()}


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside Annotated[list[Model], ...], Model | None, and so on."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated or origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def _fields_at(loc: Path) -> list[str]:
    model: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        model = _nested_model(_model_fields(model).get(part))
    return list(model.model_fields) if model is not None else []


def _all_field_names() -> set[str]:
    names: set[str] = set()
    pending: list[type[BaseModel]] = [Config]
    while pending:
        model = pending.pop()
        for name, annotation in _model_fields(model).items():
            names.add(name)
            nested = _nested_model(annotation)
            if nested is not None and nested is not model:
                pending.append(nested)
    return names
