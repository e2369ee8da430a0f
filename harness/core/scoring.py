"""Outputs -> per-sample scores -> a summary. Shared by `harness eval` and `harness score`.

Nothing here needs a model or images, so any stored samples can be re-scored.
"""
from __future__ import annotations

import functools
import hashlib
import json
import platform
from collections import defaultdict
from importlib import metadata
from typing import Any, Iterable

from harness.core.task import Task, Unit, per_category
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


def rescore(task: Task, items: dict[str, Item], records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Re-extract and re-score stored samples (the output text is the source of truth)."""
    return [
        sample_record(task, items[r["id"]], r["sample"], r["output"],
                      **{k: v for k, v in r.items() if k not in _DERIVED})
        for r in records
        if r["id"] in items
    ]


_DERIVED = {"id", "sample", "output", "extracted", "score", "category", "group"}


def summarize(task: Task, items: dict[str, Item], records: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """summary.json: headline score (percent) with CI, per-category scores, unparsed count."""
    return summarize_units(task, items, records, **kwargs)[0]


def summarize_units(
    task: Task,
    items: dict[str, Item],
    records: list[dict[str, Any]],
    ci_method: str = "auto",
    seed: int = 0,
    **meta: Any,
) -> tuple[dict[str, Any], list[Unit]]:
    """The summary and the units it was computed from (what the leaderboard resamples)."""
    from harness.stats import ci as stats

    per_item: dict[str, list[float]] = defaultdict(list)
    for r in records:
        per_item[r["id"]].append(r["score"])
    units = task.units(items, dict(per_item))
    clustered = any(u.cluster is not None for u in units)
    groups = [u.cluster or u.id for u in units] if clustered else None
    ci = stats.score_ci([u.score for u in units], method=ci_method, seed=seed, groups=groups)
    summary = {
        "task": task.name,
        "options": task.opts,
        "n": len(units),
        **({"clusters": ci.n} if clustered else {}),
        "n_items": len(per_item),
        "n_samples": len(records),
        "score": ci.estimate,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "ci_method": ci.method,
        "unparsed": sum(1 for r in records if r["extracted"] is None),
        "categories": per_category(units),
        **task.extras(items, dict(per_item)),
        **meta,
    }
    return summary, units


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
