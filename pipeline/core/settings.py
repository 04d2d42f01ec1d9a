"""The machinery under config.py: a field that carries its facts, and the generic checks that read them.

A field is declared once with everything known about it: its default, a one-line help (shown by
`run.py <stage> --help` and in errors), its allowed choices, its valid range, and whether it is a location (a
path that may differ between machines; what is behind it is checked by fingerprint) or may change when a run is
resumed. Nothing else lists fields by name: choices, location and resume rules are read from here.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Callable

from pipeline.core.errors import PipelineError
from pipeline.core.layout import PLAIN_NAME


class ConfigError(PipelineError, ValueError):
    """A config file or override that does not fit the schema."""


@dataclass(frozen=True)
class Facts:
    help: str
    choices: tuple = ()  # allowed values (of each item, for a list)
    check: tuple[Callable, str] | None = None  # (predicate on the value, what is expected: "a value >= 0")
    location: bool = False  # a path, not a setting: may differ between machines and runs
    resumable: bool = False  # may change when a run is resumed, extended or predicted elsewhere
    plain_name: bool = False  # names a folder under output.dir: no separators, not hidden


def setting(default, help: str, **facts):
    """A config field with its facts (see Facts)."""
    kw = {"default_factory": (lambda: list(default))} if isinstance(default, list) else {"default": default}
    return field(metadata={"facts": Facts(help, **facts)}, **kw)


def at_least(low) -> tuple:
    return (lambda v: v >= low, f"a value >= {low}")


def between(low, high, low_open: bool = False, high_open: bool = False) -> tuple:
    def ok(v):
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    return ok, f"a value in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def facts_of(section) -> dict[str, Facts]:
    return {f.name: f.metadata["facts"] for f in dataclasses.fields(section) if "facts" in f.metadata}


def sections(cfg) -> dict[str, object]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))}


def check_fields(where: str, obj):
    """The facts of every field of one section (or the top level): finite numbers, choices, ranges, names."""
    for key, facts in facts_of(obj).items():
        value = getattr(obj, key)
        items = value if isinstance(value, list) else [value]
        name = f"{where}{key}"
        bad = [v for v in items if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise ConfigError(f"{name} = {value!r}; expected finite numbers")
        if facts.choices and any(v not in facts.choices for v in items):
            raise ConfigError(f"{name} = {value!r}; expected {'values' if isinstance(value, list) else 'one'} of "
                              f"{', '.join(map(str, facts.choices))} ({facts.help})")
        if facts.check and not all(facts.check[0](v) for v in items):
            raise ConfigError(f"{name} = {value!r}; expected {facts.check[1]} ({facts.help})")
        if facts.plain_name and value and not PLAIN_NAME.match(value):
            raise ConfigError(f"{name} = {value!r}: expected a plain name (letters, digits, '-', '_', '.'; no path "
                              "separators, not starting with '.'), since it names a folder under output.dir")


# ---- reading values: TOML tables and --set overrides, typed ----
def _fields(obj) -> dict[str, type]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def _check_type(where: str, value, typ):
    origin = typing.get_origin(typ)
    if origin is list:
        (inner,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {inner.__name__}, got {value!r}")
        return [_check_type(f"{where}[{i}]", v, inner) for i, v in enumerate(value)]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and not isinstance(value, bool) or (typ is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}")
    if not isinstance(value, typ):
        raise ConfigError(f"{where}: expected {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def apply(obj, data: dict, where: str = ""):
    """Set obj's fields from a (nested) dict; unknown keys and wrong types are errors listing what is valid."""
    fields = _fields(obj)
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"unknown key '{where}{key}'; valid keys: {', '.join(fields)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a [{key}] table, got {value!r}")
            apply(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _check_type(f"{where}{key}", value, fields[key]))


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # bare strings need no quotes on the command line


def _coerce(where: str, text: str, typ):
    """A command-line item as the field's type ("1e-5" for a float, "3" for an int), or a clear error."""
    try:
        return typ(text.strip())
    except ValueError:
        raise ConfigError(f"{where}: expected {typ.__name__} values, got {text.strip()!r}") from None


def override(cfg, assignment: str):
    """One `--set section.key=value` (value in TOML syntax; bare strings and comma lists allowed)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects section.key=value, got {assignment!r}")
    dotted, text = assignment.split("=", 1)
    *path, key = dotted.strip().split(".")
    value = _parse_value(text.strip())
    target = cfg
    for s in path:
        if s not in sections(target):
            raise ConfigError(f"--set {dotted}: unknown section {s!r}; valid sections: {', '.join(sections(target))}")
        target = getattr(target, s)
    typ = _fields(target).get(key)
    where = f"--set {dotted}"
    if typing.get_origin(typ) is list:
        inner = typing.get_args(typ)[0]
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [_coerce(where, v, inner) for v in str(value).split(",") if v.strip()]
    elif typ in (int, float) and isinstance(value, str):
        value = _coerce(where, value, typ)
    if typ is str and not isinstance(value, str):
        value = text.strip()  # e.g. --set train.run_name=2024 stays a string
    apply(target, {key: value}, ".".join(path) + "." if path else "")


# ---- writing: the resolved config as TOML (a run's config.toml) ----
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(d: dict) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for section, values in d.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def describe(section_name: str, section) -> list[str]:
    """One line per field: `section.key = default  help [choices]`, for --help."""
    out = []
    for key, facts in facts_of(section).items():
        extra = f" [{' | '.join(map(str, facts.choices))}]" if facts.choices else ""
        out.append(f"  {section_name}.{key} = {_toml_value(getattr(section, key))}\n      {facts.help}{extra}")
    return out
