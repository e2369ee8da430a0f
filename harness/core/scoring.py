"""Outputs -> per-sample scores (the run record's statistics: harness.core.record).

Nothing here needs a model or images, so any stored samples can be re-scored.
"""
from __future__ import annotations

import functools
import hashlib
import json
import platform
from importlib import metadata
from typing import Any, Iterable

from harness.core.task import Task
from harness.core.types import Item


def sample_record(task: Task, item: Item, sample: int, output: str, **fields: Any) -> dict[str, Any]:
    """One line of samples.jsonl: the raw output, what the task extracted, and its score."""
    extracted = task.extract(output, item)
    return {
        "id": item.id,
        "sample": sample,
        **fields,
        "output": output,
        "extracted": extracted,
        "score": float(task.score(extracted, item)),
        "category": item.category,
        "group": item.cluster,
    }


def rescore(task: Task, item: Item, row: dict[str, Any]) -> dict[str, Any]:
    """A stored sample re-extracted and re-scored by the task's current rule (the output text is
    the source of truth); its other fields (key, choice losses) are kept in their order."""
    return sample_record(task, item, row["sample"], row["output"], **{k: v for k, v in row.items() if k not in _DERIVED})


_DERIVED = {"id", "sample", "output", "extracted", "score", "category", "group"}


def data_hash(items: Iterable[Item]) -> str:
    """Hash of what was asked (ids, questions, choices, targets), independent of file layout."""
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.id, it.question, list(it.choices), it.target], default=str).encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)  # package metadata lookups cost ~60 ms per call; versions cannot change mid-process
def _library_versions() -> tuple[tuple[str, str], ...]:
    versions = {"python": platform.python_version()}
    for name in ("vlm-harness", "torch", "transformers", "peft", "trl", "numpy", "scipy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return tuple(versions.items())


def library_versions() -> dict[str, str]:
    return dict(_library_versions())
