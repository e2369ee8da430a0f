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


# The reply budget of a bare backend call that names none (no task to take a budget from).
DEFAULT_MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class GenConfig:
    """Generation settings; part of every cache key (with max_new_tokens resolved)."""

    max_new_tokens: int | None = field(default=None, metadata={
        "help": "reply budget in tokens (default: each task's own)", "kind": "positive"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy", "kind": "non_negative"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold", "kind": "probability"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling (0: off)", "kind": "count"})
    seed: int = field(default=0, metadata={"help": "seeds sampling (and the bootstrap)"})

    def __post_init__(self) -> None:
        # Checked here so every path (flags, leaderboard specs, trainers) fails before a model loads.
        from harness.core.validate import check_generation

        checked = check_generation(self.max_new_tokens, self.temperature, self.top_p, self.top_k, self.seed)
        for name, value in zip(("max_new_tokens", "temperature", "top_p", "top_k", "seed"), checked):
            object.__setattr__(self, name, value)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def budget(self) -> int:
        """max_new_tokens, or the bare default when nothing resolved it."""
        return self.max_new_tokens if self.max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS

    def for_task(self, task_budget: int) -> GenConfig:
        """None means "the task's own budget"; an explicit value (64 included) is kept."""
        return self if self.max_new_tokens is not None else dataclasses.replace(self, max_new_tokens=task_budget)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Prompt:
    """A single user turn: text plus images, before the model's chat template is applied.

    The text holds no image placeholder; the backend inserts the model's own image tokens.
    """

    text: str
    images: tuple[ImageRef, ...] = ()
