"""lmms-eval's logged samples -> our store (samples.jsonl + summary.json in the harness contract).

Used by `harness eval --engine lmms-eval` (harness/bridges/lmms.py) on the samples that
simple_evaluate returns with log_samples on (each still holding its `doc`). The item id is the
doc's own id field (question_id, index, id, ...; lmms-eval's doc_id position when none is unique),
the category its category-like field. Per-sample score: the task's first metric logged as a number
per sample, or the one named by --lmms-metric. A task exported by `harness export-lmms-task`
(its YAML metadata names our task) is re-scored by our task class on the same outputs, and the
count of samples where lmms-eval's logged accuracy differs is kept (`lmms_disagreements`).
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.core.record import build_record, write_record
from harness.core.scoring import sample_record
from harness.core.store import atomic_write_jsonl
from harness.core.task import Task, get_task, task_names
from harness.core.types import Item

ID_FIELDS = ("question_id", "index", "id", "qid", "sample_id")
CATEGORY_FIELDS = ("harness_category", "category", "question_type", "l2-category", "subtask")
INVALID = {"", "[invalid]"}  # what lmms-eval's filters return when nothing was extracted


class LmmsTask(Task):
    """A stand-in for an lmms-eval task in our statistics: one unit per document, its logged score."""

    request_type = "generate"
    rescorable = False  # the scores are lmms-eval's metric, not a rule of ours
    score_range = (-math.inf, math.inf)  # any finite number: metrics have their own scales

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]


def import_task_samples(name: str, samples: list[dict[str, Any]], config: dict[str, Any], run_dir: Path,
                        ci_method: str = "bootstrap", metric: str | None = None,
                        meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """lmms-eval logged samples (with their docs) -> run_dir/samples.jsonl + summary.json."""
    if not samples:
        raise HarnessError(f"lmms-eval task {name}: no samples were logged")
    metadata = config.get("metadata") if isinstance(config.get("metadata"), dict) else {}
    ours = metadata.get("harness_task")
    extra: dict[str, Any] = {}
    if ours and ours in task_names():
        task: Task = get_task(ours, **(metadata.get("harness_options") or {}))
        records, items, extra["lmms_disagreements"] = _rescored(task, metadata.get("harness_data_dir"), samples)
    else:
        metrics = [m["metric"] for m in config.get("metric_list") or [] if isinstance(m, dict) and "metric" in m]
        task = LmmsTask(f"lmms-{name}")
        records, items = _logged(name, samples, _pick_metric(name, samples, metrics, metric),
                                 generated=config.get("output_type", "generate_until") == "generate_until")
    if all(not (r["output"] or "").strip() for r in records):
        raise HarnessError(
            f"lmms-eval task {name}: every output is empty (its wrappers log a generation error and return ''); "
            "see the warnings above"
        )
    record, _ = build_record(task, items, records, ci_method=ci_method, **(meta or {}), **extra,
                             empty_outputs=sum(1 for r in records if not (r["output"] or "").strip()))
    record = replace(record, task=f"lmms-{name}")
    atomic_write_jsonl(run_dir / "samples.jsonl", records)
    return write_record(run_dir, record).to_json()


def _outputs(sample: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """(raw outputs, filtered outputs), one per repeat: lmms-eval logs one request per repeat, each
    request's responses as a one-element list ([[out1], [out2]] beside [filtered1, filtered2])."""
    raw = sample.get("resps", sample.get("filtered_resps"))
    filtered = sample.get("filtered_resps")
    raw = raw if isinstance(raw, list) else [raw]
    raw = [r[0] if isinstance(r, list) and len(r) == 1 else r for r in raw]
    filtered = filtered if isinstance(filtered, list) else [filtered]
    return [r if isinstance(r, str) else "" if r is None else json.dumps(r, default=str) for r in raw], filtered


def _doc_id(sample: dict[str, Any]) -> str:
    doc = sample.get("doc") or {}
    for field in ID_FIELDS:
        if isinstance(doc.get(field), (str, int)) and not isinstance(doc.get(field), bool):
            return str(doc[field])
    return str(sample["doc_id"])


def _category(sample: dict[str, Any]) -> str:
    doc = sample.get("doc") or {}
    return next((str(doc[f]) for f in CATEGORY_FIELDS if isinstance(doc.get(f), str) and doc[f]), "")


def _unique_ids(samples: list[dict[str, Any]]) -> list[str]:
    ids = [_doc_id(s) for s in samples]
    return ids if len(set(ids)) == len(ids) else [str(s["doc_id"]) for s in samples]


def _rescored(task: Task, data_dir: str | None, samples: list[dict[str, Any]]
              ) -> tuple[list[dict[str, Any]], dict[str, Item], int]:
    """Records of an exported harness task, re-scored by our task class on lmms-eval's outputs."""
    from harness.core.task import resolve_data_dir

    items = task.items_by_id(resolve_data_dir(data_dir))
    records, used, disagree = [], {}, 0
    for sample in samples:
        item_id = _doc_id(sample)
        if item_id not in items:
            raise HarnessError(f"lmms-eval logged id {item_id!r}, which is not in {task.name}'s data; re-export the task")
        used[item_id] = items[item_id]
        raw, _ = _outputs(sample)
        for k, output in enumerate(raw):
            record = sample_record(task, items[item_id], k, output, doc_id=sample.get("doc_id"),
                                   lmms_score=sample.get("accuracy"))
            disagree += len(raw) == 1 and _is_number(record["lmms_score"]) and record["lmms_score"] != record["score"]
            records.append(record)
    return records, used, disagree


def _pick_metric(name: str, samples: list[dict[str, Any]], metrics: list[str], wanted: str | None) -> str:
    numeric = [m for m in metrics if _is_number(samples[0].get(m))]
    if wanted:
        if wanted not in numeric:
            raise HarnessError(
                f"lmms-eval task {name}: --lmms-metric {wanted!r} has no number per sample; "
                f"per-sample metrics: {', '.join(numeric) or 'none'}"
            )
        return wanted
    if not numeric:
        raise HarnessError(
            f"lmms-eval task {name}: no metric with a per-sample number ({', '.join(metrics) or 'none'} are only "
            "aggregated, e.g. by a GPT judge); our statistics need one score per item"
        )
    return numeric[0]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, complex)


def _logged(name: str, samples: list[dict[str, Any]], metric: str,
            generated: bool = True) -> tuple[list[dict[str, Any]], dict[str, Item]]:
    records, items = [], {}
    for sample, item_id in zip(samples, _unique_ids(samples)):
        raw, filtered = _outputs(sample)
        if not generated:  # likelihood tasks log one (loglik, greedy) pair per choice: one record per doc
            raw = filtered = [json.dumps(sample.get("filtered_resps"), default=str)]
        value = sample.get(metric)
        if not _is_number(value):
            raise HarnessError(f"lmms-eval task {name}: doc {sample.get('doc_id')} has no number for {metric!r}")
        if len(raw) > 1:
            raise HarnessError(
                f"lmms-eval task {name} logs one score per document (its first sample's), so --n-samples > 1 "
                "cannot be scored per sample; use --n-samples 1, or a task exported by `harness export-lmms-task`"
            )
        category = _category(sample)
        items[item_id] = Item(id=item_id, question=str(sample.get("input") or ""), target=str(sample.get("target")),
                              category=category)
        for k, output in enumerate(raw):
            got = filtered[k] if k < len(filtered) else output
            extracted = None if got is None or str(got).strip() in INVALID else str(got)
            records.append({"id": item_id, "sample": k, "doc_id": sample.get("doc_id"), "output": output,
                            "extracted": extracted, "score": float(value), "category": category,
                            "group": item_id, "lmms_metric": metric})
    return records, items
