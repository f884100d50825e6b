"""Paths (contract §3): a JSONPath subset, `$` then `.key`, `['key']`, `[n]` and `[*]` steps."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec


class Every(msgspec.Struct, frozen=True):
    """The `[*]` step: every element of an array, or every member value of an object."""


EVERY = Every()
Step = str | int | Every  # a key, an array index, or [*]
Path = tuple[Step, ...]

_STEP = re.compile(
    r"\.(\w+)"  # .key: letters (any script), digits, _
    r"|\['((?:[^'\\]|\\.)*)'\]"  # ['any key']
    r'|\["((?:[^"\\]|\\.)*)"\]'  # ["any key"]
    r"|\[([0-9]+)\]"  # [n]
    r"|(\[\*\])"  # [*]
)
_ESCAPE = re.compile(r"\\(.)")


class PathError(ValueError):
    pass


def parse_path(text: str) -> Path:
    """The steps of a path; `plan` means `$.plan`. Raises PathError for anything else (§3)."""
    if not text.startswith("$"):
        text = "$." + text
    steps: list[Step] = []
    at = 1
    while at < len(text):
        m = _STEP.match(text, at)
        if m is None:
            raise PathError(
                f"path {text!r} is not supported at character {at + 1}: use .key, ['key'], [n]"
                " or [*] steps (no recursive descent, filters, slices or scripts)"
            )
        key, single, double, index, every = m.groups()
        if key is not None:
            steps.append(key)
        elif single is not None or double is not None:
            steps.append(_ESCAPE.sub(r"\1", single if single is not None else double))
        elif index is not None:
            steps.append(int(index))
        else:
            assert every
            steps.append(EVERY)
        at = m.end()
    return tuple(steps)


def find(document: Any, path: Path) -> Iterator[Any]:
    """The values a path finds in a document, nulls included (they count as no value)."""
    if len(path) == 1 and type(path[0]) is str:  # the usual `$.key`, found at once
        if isinstance(document, dict) and path[0] in document:
            return iter((document[path[0]],))
        return iter(())
    values = [document]
    for step in path:
        found: list[Any] = []
        for value in values:
            if isinstance(step, Every):
                if isinstance(value, list):
                    found.extend(value)
                elif isinstance(value, dict):
                    found.extend(value.values())
            elif isinstance(step, int):
                if isinstance(value, list) and step < len(value):
                    found.append(value[step])
            elif isinstance(value, dict) and step in value:
                found.append(value[step])
        values = found
    return iter(values)
