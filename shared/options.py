"""Command-line flags made from config fields.

A field declared with `shared.config.option` is a flag whose type, choices, default and help all
come from the field, so an option is added in one place (the config dataclass) and the
command line, the TOML file and the Python API agree on it. A flag left out gives None, so the
TOML file's value, or else the field's default, applies.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Iterable


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass that are command-line flags, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def help_text(f: dataclasses.Field) -> str:
    """The field's help, with its default unless the text gives it (a switch has none)."""
    text = f.metadata["help"]
    if f.type in (bool, "bool") or "(default" in text:
        return text
    return f"{text} (default {f.default})"


def add_options(parser: argparse.ArgumentParser, cls: type, name: Callable[[str], str] = lambda field: field,
                only: Iterable[str] | None = None) -> list[str]:
    """A flag for every option field of `cls` (or those named in `only`): `--NAME` (or the
    field's own `flag`), its value under `name(field)` in the parsed arguments. Returns those names."""
    hints = typing.get_type_hints(cls)
    names = []
    for f in option_fields(cls):
        if only is not None and f.name not in only:
            continue
        dest = name(f.name)
        flag = f.metadata["flag"] or "--" + dest.replace("_", "-")
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=dest, action="store_true", default=None, help=help_text(f))
        else:
            choices, const = f.metadata["choices"], f.metadata.get("const")
            extra = {"nargs": "?", "const": const} if const is not None else {}
            parser.add_argument(flag, dest=dest, type=None if choices else hints[f.name],
                                choices=list(choices) if choices else None, help=help_text(f),
                                metavar=None if choices else flag[2:].replace("-", "_").upper(), **extra)
        names.append(dest)
    return names
