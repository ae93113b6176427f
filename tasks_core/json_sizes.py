"""Sizes of JSON values, as stored and sent: compact, UTF-8.

A Flow step's input is a template whose ``{"$ref": ...}`` parts stand for
other values; :func:`resolved_size` gives the size it will have once
resolved without building it, so that a small template referring a thousand
times to a large value is refused before it is serialised.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

REF = "$ref"


def json_size(value: Any) -> int:
    """Bytes of a value as compact JSON (how it is stored and sent)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def is_ref(value: Any) -> bool:
    """Whether ``value`` is a reference, ``{"$ref": "<path>"}``."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(REF), str)


def resolved_size(template: Any, measure: Callable[[str], int]) -> int:
    """Bytes of ``template`` as compact JSON once each reference in it is
    replaced by its value, ``measure(path)`` bytes. Equal to ``json_size`` of
    the resolved value, which is never built."""
    if is_ref(template):
        return measure(template[REF])
    if isinstance(template, dict):
        items = sum(json_size(str(k)) + 1 + resolved_size(v, measure) for k, v in template.items())
        return 2 + items + max(0, len(template) - 1)  # braces, colons, commas
    if isinstance(template, list):
        items = sum(resolved_size(v, measure) for v in template)
        return 2 + items + max(0, len(template) - 1)
    return json_size(template)


def object_size(members: Mapping[str, Any], *, stop_over: int) -> int:
    """``json_size`` of a JSON object, measured one member at a time: it stops
    as soon as the size passes ``stop_over`` (the answer is then a size
    already over it, not the whole)."""
    size = 2 + max(0, len(members) - 1)
    for key, value in members.items():
        size += json_size(key) + 1 + json_size(value)
        if size > stop_over:
            break
    return size


def cached(measure: Callable[[str], int]) -> Callable[[str], int]:
    """``measure`` run once per path: a value referred to many times is measured once."""
    sizes: dict[str, int] = {}

    def once(path: str) -> int:
        if path not in sizes:
            sizes[path] = measure(path)
        return sizes[path]

    return once
