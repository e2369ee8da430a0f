"""The run record: what a run folder's summary.json holds, typed and versioned.

One record per run folder, written only here (`write_record`: the runner, `harness score` and the
lmms-eval import all build a `RunRecord` and hand it over). samples.jsonl stays the source of
truth: the record says how many samples it summarises (`n_samples`), which rule scored them
(`rule`: the task's `rule_version`) and everything needed to tell whether another run is
comparable (settings, checkpoint and data hashes, package versions, the harness's git revision).
A judge's results never go in here: they live in judged.json beside it (harness.judge).

Schema history (`schema_version`; a file without one is version 1):
  1  the flat summary written before the record was typed: task, options, n, n_items, n_samples,
     score, ci_low, ci_high, ci_method, unparsed, categories, task extras, checkpoint, generation,
     blind, limit, data, versions (some writers left some out)
  2  version 1 plus schema_version, git {revision, dirty}, timing {started, finished, seconds}
     and rule {task, version}
`load_record` reads every version up to RECORD_VERSION; a newer one is a one-line error.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.files import atomic_write_json, read_json
from harness.core.scoring import library_versions
from harness.core.task import Task, Unit, per_category
from harness.core.types import Item
from harness.errors import HarnessError

RECORD_VERSION = 2
RECORD_FILE = "summary.json"

# Blocks written only when set (a `harness score` run has no checkpoint or generation settings).
_OPTIONAL = ("clusters", "checkpoint", "generation", "blind", "git", "timing", "rule")


@dataclass(frozen=True)
class RunRecord:
    """summary.json. Scores and CIs are percent; `extras` are the task's own figures (OCRBench
    `points`, MMBench `vanilla`, ...) and the source's fields (`predictions`, `missing`,
    `lmms_eval`, ...), written flat beside the others as version 1 had them."""

    task: str
    options: dict[str, str] = field(default_factory=dict)
    n: int = 0  # units (items, or MMBench circular groups)
    n_items: int = 0
    n_samples: int = 0  # lines of samples.jsonl this record summarises
    score: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str = ""
    unparsed: int = 0
    categories: dict[str, float] = field(default_factory=dict)
    clusters: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None  # {name, hash}: the checkpoint's content hash
    generation: dict[str, Any] | None = None  # EvalSettings: GenConfig (budget resolved) + n_samples, batch_size, draws
    blind: bool | None = None
    limit: int | None = None
    data: dict[str, Any] | None = None  # {dir, hash}: the hash covers ids, questions, choices, targets
    versions: dict[str, str] = field(default_factory=dict)
    git: dict[str, Any] | None = None  # {revision, dirty} of the harness that wrote it (None outside a checkout)
    timing: dict[str, Any] | None = None  # {started, finished, seconds}
    rule: dict[str, Any] | None = None  # {task, version}: the extraction and scoring rule that made `score`
    schema_version: int = RECORD_VERSION

    def to_json(self) -> dict[str, Any]:
        """The summary.json mapping, keys in version 1's order with the new blocks after them."""
        head = {"schema_version": self.schema_version, "task": self.task, "options": self.options, "n": self.n,
                "clusters": self.clusters, "n_items": self.n_items, "n_samples": self.n_samples,
                "score": self.score, "ci_low": self.ci_low, "ci_high": self.ci_high, "ci_method": self.ci_method,
                "unparsed": self.unparsed, "categories": self.categories}
        tail = {"checkpoint": self.checkpoint, "generation": self.generation, "blind": self.blind,
                "limit": self.limit, "data": self.data, "versions": self.versions, "git": self.git,
                "timing": self.timing, "rule": self.rule}
        out = {**head, **self.extras, **tail}
        return {k: v for k, v in out.items() if not (k in _OPTIONAL and v is None)}

    @classmethod
    def from_json(cls, raw: dict[str, Any], where: str = "summary.json") -> RunRecord:
        """A record of any known schema version; unknown keys are the extras."""
        version = raw.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= RECORD_VERSION:
            raise HarnessError(f"{where}: run record schema version {version!r} is not one this harness reads "
                               f"(1-{RECORD_VERSION}); upgrade vlm-harness or re-run the evaluation")
        if not isinstance(raw.get("task"), str):
            raise HarnessError(f"{where}: unreadable run record (no task name); re-run the evaluation")
        names = {f.name for f in dataclasses.fields(cls)} - {"extras"}
        known = {k: v for k, v in raw.items() if k in names}
        extras = {k: v for k, v in raw.items() if k not in names}
        known["schema_version"] = RECORD_VERSION  # read in memory as the current version (v1 lacks only blocks)
        return cls(**known, extras=extras)

    def same_result(self, other: RunRecord | None) -> bool:
        """Equal but for when, and from which revision, it was written."""
        return other is not None and dataclasses.replace(self, timing=None, git=None) == dataclasses.replace(
            other, timing=None, git=None)


def write_record(run_dir: Path, record: RunRecord) -> RunRecord:
    """The one writer of summary.json; returns the record the folder now holds. An unchanged
    re-run keeps the file (and its timing) as it was."""
    path = run_dir / RECORD_FILE
    if path.is_file():
        try:
            old = load_record(path)
        except HarnessError:
            old = None  # a damaged or foreign record is replaced
        if record.same_result(old):
            return old
    atomic_write_json(run_dir / RECORD_FILE, record.to_json())
    return record


def load_record(path: Path) -> RunRecord:
    """summary.json of any schema version; errors are one line naming the file."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: unreadable run record (not a JSON object); re-run the evaluation")
    return RunRecord.from_json(raw, str(path))


# --- building a record -------------------------------------------------------------------------
def build_record(task: Task, items: dict[str, Item], records: list[dict[str, Any]], ci_method: str = "auto",
                 seed: int = 0, **fields: Any) -> tuple[RunRecord, list[Unit]]:
    """The record of `records` (samples.jsonl's rows) and the units its statistics resampled.

    `fields` are RunRecord fields (checkpoint, generation, data, ...); any other keyword is an
    extra. Package versions, the git revision and the task's rule are filled in here."""
    from harness.stats import ci as stats

    per_item: dict[str, list[float]] = defaultdict(list)
    for r in records:
        per_item[r["id"]].append(r["score"])
    units = task.units(items, dict(per_item))
    clustered = any(u.cluster is not None for u in units)
    groups = [u.cluster or u.id for u in units] if clustered else None
    ci = stats.score_ci([u.score for u in units], method=ci_method, seed=seed, groups=groups)
    names = {f.name for f in dataclasses.fields(RunRecord)}
    given = {k: v for k, v in fields.items() if k in names}
    extras = {**task.extras(items, dict(per_item)), **{k: v for k, v in fields.items() if k not in names}}
    record = RunRecord(
        task=task.name, options=dict(task.opts), n=len(units), clusters=ci.n if clustered else None,
        n_items=len(per_item), n_samples=len(records), score=ci.estimate, ci_low=ci.low, ci_high=ci.high,
        ci_method=ci.method, unparsed=sum(1 for r in records if r["extracted"] is None),
        categories=per_category(units), extras=extras,
        **{"versions": library_versions(), "git": git_revision(), "rule": task.rule(), **given},
    )
    return record, units


def summarize(task: Task, items: dict[str, Item], records: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """summary.json's mapping for `records` (build_record without the units)."""
    return build_record(task, items, records, **kwargs)[0].to_json()


class Timer:
    """When a run started and finished, for the record's `timing`."""

    def __init__(self) -> None:
        self.started, self._t0 = _now(), time.monotonic()

    def timing(self) -> dict[str, Any]:
        return {"started": self.started, "finished": _now(), "seconds": round(time.monotonic() - self._t0, 3)}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@functools.lru_cache(maxsize=1)
def _git_revision() -> tuple[str | None, bool | None]:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None, None  # an installed copy, not a checkout
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return rev or None, bool(status.strip())


def git_revision() -> dict[str, Any] | None:
    """{revision, dirty} of the harness checkout (tracked files only), or None outside one."""
    rev, dirty = _git_revision()
    return None if rev is None else {"revision": rev, "dirty": dirty}


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
