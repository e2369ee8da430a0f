"""Small typed records that flow through the engine: Item -> Prompt -> output -> Sample."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

# An image is referenced, not loaded: a file path, or encoded bytes (e.g. MMBench's base64 cell).
ImageRef = Union[Path, bytes]


@dataclass(frozen=True)
class Item:
    """One benchmark question, as the benchmark defines it."""

    id: str  # the benchmark's own id, stable across runs
    question: str
    target: Any  # gold answer in the task's own form (letter, answer list, ...)
    choices: tuple[str, ...] = ()
    images: tuple[ImageRef, ...] = ()
    category: str = ""
    # Items sharing a group are not independent (MMBench circular copies); statistics resample
    # whole groups. Empty means the item is its own group.
    group: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cluster(self) -> str:
        return self.group or self.id


@dataclass(frozen=True)
class GenConfig:
    """Generation settings; part of every cache key."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Prompt:
    """A single user turn: text plus images, before the model's chat template is applied.

    The text holds no image placeholder; the backend inserts the model's own image tokens.
    """

    text: str
    images: tuple[ImageRef, ...] = ()
