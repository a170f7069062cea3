"""Field checks for typed config nodes: each raises ``ValueError("<field>: <what is wrong>, got <value>")``.

A node validates its own fields in ``__post_init__`` / ``__init__`` with these; the builder
(:func:`fpa.config.build.build`) prefixes the node's config path, so a user reads
``objective.beta: must be a finite number > 0, got inf``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable


def number(name: str, value: Any, low: float | None = None, high: float | None = None, *, strict: bool = False,
           integer: bool = False, optional: bool = False) -> None:
    """A finite number (an integer if ``integer``) in ``[low, high]`` (``(low, high]`` if ``strict``)."""
    if value is None:
        if optional:
            return
        raise ValueError(f"{name}: required, got null")
    kind = "an integer" if integer else "a finite number"
    bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
    bound += "" if high is None else f"{' and' if bound else ''} <= {high:g}"
    wrong_type = isinstance(value, bool) or not isinstance(value, (int, float)) or (
        integer and not isinstance(value, int))
    if wrong_type or not math.isfinite(value) or (low is not None and (value <= low if strict else value < low)) \
            or (high is not None and value > high):
        raise ValueError(f"{name}: must be {kind}{bound}, got {value!r}")


def choice(name: str, value: Any, options: Iterable[Any]) -> None:
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name}: must be one of {' | '.join(map(str, options))}, got {value!r}")


def flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: must be true or false, got {value!r}")
