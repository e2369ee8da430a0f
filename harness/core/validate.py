"""Checks of user-given values, run before anything is loaded or written.

Flags, spec values and names all pass through here so a bad one is a one-line error naming the
value and the fix, never a traceback from deep inside a library after the model has loaded.
"""
from __future__ import annotations

import math
import re
from typing import Any

from harness.errors import HarnessError

_SAFE_NAME = re.compile(r"[A-Za-z0-9._+@-]+")


def safe_name(value: Any, what: str) -> str:
    """A name that becomes one folder: letters, digits and . _ - + @, not '.' or '..'.

    Names are joined to output folders (runs/<checkpoint>, leaderboards/<spec>); a `/` or `..`
    would write outside them, and a leading - + = @ would read as a formula in a spreadsheet.
    """
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or not _SAFE_NAME.fullmatch(text) or text in (".", "..") or text[0] in "+-@":
        raise HarnessError(f"{what} {value!r} is not a safe name; use letters, digits and . _ - + @ "
                           "(not starting with + - @, no / or ..)")
    return text


def as_int(value: Any, what: str, minimum: int | None = None) -> int:
    """An integer (bool and float rejected: `seed: 1.5` or `seed: true` is a typo, not a seed)."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise HarnessError(f"{what} must be an integer, got {value!r}") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise HarnessError(f"{what} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise HarnessError(f"{what} must be >= {minimum}, got {value}")
    return value


def as_float(value: Any, what: str) -> float:
    """A finite number (inf and nan rejected: they run, and score random tokens)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise HarnessError(f"{what} must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise HarnessError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise HarnessError(f"{what} must be a finite number, got {value}")
    return value


def check_generation(max_new_tokens: Any, temperature: Any, top_p: Any, top_k: Any, seed: Any,
                     where: str = "") -> tuple[int | None, float, float, int, int]:
    """The generation settings every backend accepts, checked and typed (max_new_tokens None:
    each task's own budget)."""
    pre = f"{where}: " if where else ""
    if max_new_tokens is not None:
        max_new_tokens = as_int(max_new_tokens, f"{pre}max_new_tokens", minimum=1)
    temperature = as_float(temperature, f"{pre}temperature")
    if temperature < 0:
        raise HarnessError(f"{pre}temperature must be >= 0 (0 = greedy), got {temperature}")
    top_p = as_float(top_p, f"{pre}top_p")
    if not 0.0 < top_p <= 1.0:
        raise HarnessError(f"{pre}top_p must be in (0, 1], got {top_p}")
    top_k = as_int(top_k, f"{pre}top_k", minimum=0)
    seed = as_int(seed, f"{pre}seed")
    return max_new_tokens, temperature, top_p, top_k, seed
