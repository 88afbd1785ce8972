"""Read a config file (TOML or legacy balance.conf) into a validated Config.

Every problem becomes a ConfigError naming the file, the line and the field,
and saying what was expected; unknown keys get a "did you mean".
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from nmbalance.config import model
from nmbalance.config.legacy import looks_legacy, parse_legacy
from nmbalance.config.model import Config, cross_check
from nmbalance.config.toml_lines import KeyLines, Path, line_of
from nmbalance.errors import ConfigError, ConfigErrors

DEFAULT_PATH = "/etc/nmbalance/nmbalance.toml"
# Where Net-ISP-Balance keeps its config (Debian, then Red Hat): read when ours is absent.
LEGACY_PATHS = ("/etc/network/balance.conf", "/etc/sysconfig/network-scripts/balance.conf")
MAX_SIZE = 16 << 20  # far beyond any real config; bounds what a crafted one can cost
MAX_REPORTED = 20  # errors listed for one file; the rest are counted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    config: Config
    warnings: list[str] = field(default_factory=list)  # "file:line: what has no effect"


def default_path(exists: Any = FsPath.exists) -> str:
    """Ours, or else Net-ISP-Balance's where only that one exists."""
    if exists(FsPath(DEFAULT_PATH)):
        return DEFAULT_PATH
    return next((p for p in LEGACY_PATHS if exists(FsPath(p))), DEFAULT_PATH)


def load_config(path: str | FsPath) -> Config:
    """The config; what it holds that has no effect is logged as warnings."""
    loaded = load(path)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    return loaded.config


def load(path: str | FsPath) -> Loaded:
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except FileNotFoundError:
        raise ConfigError(source, "no such file") from None
    except OSError as exc:
        raise ConfigError(source, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_SIZE:
        raise ConfigError(source, f"larger than {MAX_SIZE >> 20} MiB: not a config file", line=1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(source, f"not UTF-8 text: byte {data[exc.start]:#04x} at column "
                                  f"{column}", line=line) from None
    return load_text(text, source)


def load_config_text(text: str, source: str = "<config>") -> Config:
    return load_text(text, source).config


def load_text(text: str, source: str = "<config>") -> Loaded:
    data, lines, errors, warnings = parse_text(text, source)
    return Loaded(validate(data, lines, source, errors), warnings)


class Lines(Protocol):
    """Where each key sits; worked out only for errors, and only as far as needed."""

    def line_of(self, loc: Path) -> int | None: ...


class _Known:
    def __init__(self, lines: dict[Path, int]) -> None:
        self.lines = lines

    def line_of(self, loc: Path) -> int | None:
        return line_of(self.lines, loc)


def parse_text(text: str, source: str
               ) -> tuple[dict[str, Any], Lines, list[ConfigError], list[str]]:
    """The document as a dict, where its keys sit, the errors found while parsing
    (a balance.conf reports them all) and warnings."""
    if looks_legacy(text):
        legacy = parse_legacy(text, source)
        return legacy.data, _Known(legacy.lines), legacy.errors, legacy.warnings
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = str(exc), None
        if m := re.search(r" \(at line (\d+), column (\d+)\)$", message):
            message, line = f"{message[:m.start()]} at column {m.group(2)}", int(m.group(1))
        elif message.endswith(" (at end of document)"):
            message, line = message.removesuffix(" (at end of document)") + " at the end", \
                text.count("\n") + 1
        raise ConfigError(source, f"not valid TOML: {message}", line=line or 1) from None
    except ValueError:  # an integer too long for Python to convert
        raise _too_long(text, source) from None
    except RecursionError:
        raise ConfigError(source, "not valid TOML: arrays or tables nested too deeply",
                          line=_deepest_line(text)) from None
    return data, KeyLines(text), [], []


def _too_long(text: str, source: str) -> ConfigError:
    m = re.search(r"[0-9_]{4000,}", text)
    line = text.count("\n", 0, m.start()) + 1 if m else 1
    return ConfigError(source, "a number with thousands of digits", line=line)


def _deepest_line(text: str, limit: int = 100) -> int:
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch in "[{") - (ch in "]}")
        if depth > limit:
            return text.count("\n", 0, i) + 1
    return 1


def validate(data: dict[str, Any], lines: Lines, source: str,
             found: Sequence[ConfigError] = ()) -> Config:
    """The Config, or every problem at once: `found` (from parsing) and the model's."""
    try:
        config = Config.model_validate(data, context={"defer_cross_check": True})
    except ValidationError as exc:
        errors = _merge_alternatives(
            [_to_config_error(e, lines, source) for e in exc.errors(include_url=False)])
        if found:  # an uplink list left empty by rows already refused says nothing new
            errors = [e for e in errors if e.field != "uplink"]
        raise _reported(_in_order([*found, *errors]), source) from None
    problems = [ConfigError(source, msg, line=lines.line_of(loc), field=field_path(loc))
                for loc, msg in cross_check(config)]
    if found or problems:
        raise _reported(_in_order([*found, *problems]), source)
    return config


def _in_order(errors: list[ConfigError]) -> list[ConfigError]:
    return sorted(errors, key=lambda e: e.line if e.line is not None else 1 << 30)


def _reported(errors: list[ConfigError], source: str) -> ConfigErrors:
    """The first MAX_REPORTED errors, and how many more there are."""
    if len(errors) <= MAX_REPORTED:
        return ConfigErrors(errors)
    more = len(errors) - MAX_REPORTED
    last = errors[MAX_REPORTED]
    return ConfigErrors([*errors[:MAX_REPORTED], ConfigError(
        source, f"... and {more} more problem{'s' if more > 1 else ''}", line=last.line,
        field=last.field)])


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


# What each pattern of the model asks, in words (a regex is no help to a user).
PATTERN_WORDS = {
    model.NAME_PATTERN: "should be 1-32 letters, digits, '_', '.' or '-'",
    model.IFNAME_PATTERN: "should be an interface name: 1-15 letters, digits, '_', '.', '+' or '-'",
    model.LAN_IFNAME_PATTERN: "should be an interface name (1-15 letters, digits, '_', '.', '+' "
                              "or '-'), with an optional address label (eth3:0)",
    model.GROUP_MEMBER_PATTERN: "should be an uplink or LAN name, ':isp' or ':lan'",
    r"^/": "should be an absolute path",
    r"^(/.*)?$": "should be an absolute path, or \"\" for none",
    model.TABLE_PATTERN: "should be \"nmbalance\" followed by at most 23 letters, digits or '_'",
    model.EMAIL_LIST: "should be e-mail addresses separated by commas",
}


def _to_config_error(error: Any, lines: Lines, source: str) -> ConfigError:
    # Drop pydantic's union/validator tags ("function-after[...]", "IPv4Address")
    # from the location so it matches the document's own keys.
    loc: Path = tuple(
        p for p in error["loc"]
        if isinstance(p, int) or p in _all_field_names() or error["type"] == "extra_forbidden"
    )
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "string_pattern_mismatch":
        message = PATTERN_WORDS.get(str(error.get("ctx", {}).get("pattern")), "not a valid value")
    elif error["type"] == "literal_error" and "'fastest-response'" in message:
        message += " (or the aliases 'balanced' for weighted, 'failover' for priority)"
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        key = str(loc[-1]) if loc else "?"
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        message = f"unknown key {key!r}{hint}"
    elif "input" in error and not isinstance(error["input"], dict | list):
        message = f"{message} (got {_short(error['input'])})"
    return ConfigError(source, message, line=lines.line_of(loc), field=field_path(loc) or None)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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


@functools.cache
def _all_field_names() -> frozenset[str]:
    names: set[str] = set()
    pending: list[type[BaseModel]] = [Config]
    while pending:
        model = pending.pop()
        for name, annotation in _model_fields(model).items():
            names.add(name)
            nested = _nested_model(annotation)
            if nested is not None and nested is not model:
                pending.append(nested)
    return frozenset(names)
