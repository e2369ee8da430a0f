"""Settings dataclasses -> command-line flags, written once.

Every settings field carries `metadata={"help": ...}` (TRL style), optionally `"flag"` (the flag
name when it is not the field name), `"kind"` (a value check: positive, count (an integer >= 0),
probability, non_negative) and `"choices"`. `add_flags` turns the fields into argparse options and
`from_args` builds the dataclass back from the parsed namespace, so a setting's name, type,
default and help live in one place: the dataclass.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: `convert` the text, then require `ok(value)`; errors name what was expected."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
_probability = _checked(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
# nan fails `>= 0`; inf would sample uniformly random tokens
_non_negative_float = _checked(float, lambda v: 0 <= v < float("inf"), "a finite number >= 0")


KINDS: dict[str, Callable[[str], Any]] = {
    "positive": _positive_int, "count": _non_negative_int, "probability": _probability,
    "non_negative": _non_negative_float,
}


def _base_type(annotation: Any) -> type:
    """int for `int | None`, float for `float`, ..."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation if isinstance(annotation, type) else str


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, cls: type, only: Iterable[str] | None = None,
              defaults: dict[str, Any] | None = None, helps: dict[str, str] | None = None) -> None:
    """One argparse option per field of `cls` (or per field named in `only`, in that order);
    `defaults` and `helps` override a field's default and help where a command means it its own way
    (compare's sampling temperature) while the name, type and check stay the field's."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)  # resolves the string annotations of `from __future__ import annotations`
    names = list(only) if only is not None else [n for n, f in fields.items() if "help" in f.metadata]
    for name in names:
        f = fields[name]
        default = (defaults or {}).get(name, f.default if f.default is not dataclasses.MISSING else None)
        kwargs: dict[str, Any] = {"dest": name, "default": default, "help": (helps or {}).get(name, f.metadata.get("help"))}
        base = _base_type(hints[name])
        if base is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = KINDS[f.metadata["kind"]] if "kind" in f.metadata else base
            if "choices" in f.metadata:
                kwargs["choices"] = list(f.metadata["choices"])
        parser.add_argument(flag_name(f), **kwargs)


def from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """The dataclass from a namespace: every field found on `args`, then `overrides`."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})
