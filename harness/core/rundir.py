"""A run folder read back: its record and its samples, re-scored, ready for any reader.

Everything downstream of a run (the leaderboard, view, diff, power, export, the bridges) reads run
folders through `read_run`, so each of them gets the same guarantees:
- every line of samples.jsonl is a JSON object with an id, a sample index and an output, and its
  stored score is a finite number in the task's range; anything else is an error naming the file
  and line (a torn line only with `allow_torn`, counted);
- every stored output is re-scored by the task's current rule (extract + score: no model, no
  images); a stored score that disagrees is replaced, and `Run.notes()` says how many and which
  ids; a record made under another rule version is named (`stale`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.core.files import jsonl_lines
from harness.core.record import RECORD_FILE, RunRecord, finite, load_record
from harness.core.scoring import data_hash, rescore
from harness.core.task import Task, Unit, resolve_data_dir, task_class
from harness.core.text import visible
from harness.core.types import Item
from harness.errors import HarnessError

SAMPLES_FILE = "samples.jsonl"
SHOWN_IDS = 5  # ids a note names before "..."


@dataclass
class Run:
    """One run folder: its record (None when only samples.jsonl is there), the task, the items its
    samples belong to, and the samples as the task's current rule scores them."""

    dir: Path
    task: Task
    items: dict[str, Item]
    records: list[dict[str, Any]]
    record: RunRecord | None = None
    rescored: list[str] = field(default_factory=list)  # ids whose stored score disagreed (replaced)
    torn: int = 0  # malformed lines skipped (allow_torn)
    stale: str | None = None  # the rule the record names, when it is not the task's current one

    @property
    def samples_path(self) -> Path:
        return self.dir / SAMPLES_FILE

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json's mapping ({} when the folder has none)."""
        return self.record.to_json() if self.record is not None else {}

    def per_item(self) -> dict[str, list[float]]:
        scores: dict[str, list[float]] = {}
        for r in self.records:
            scores.setdefault(r["id"], []).append(r["score"])
        return scores

    def units(self) -> list[Unit]:
        """The units statistics resample (Task.units), as a fresh run of these samples gives them."""
        return self.task.units(self.items, self.per_item())

    def notes(self) -> list[str]:
        """One line per thing a reader should say about this run (re-scored samples, stale rule, torn lines)."""
        out = []
        if self.rescored:
            out.append(rescored_note(self.samples_path, self.task, self.rescored))
        if self.stale:
            out.append(f"{self.dir}: scored under {self.stale}; re-scored under {self.task.name} rule "
                       f"{self.task.rule_version}")
        if self.torn:
            out.append(f"{self.samples_path}: {self.torn} torn or malformed line(s) skipped (--allow-missing)")
        return [visible(note, keep_lines=False) for note in out]  # paths and ids from files reach a terminal


def rescored_note(path: Path, task: Task, ids: Sequence[str]) -> str:
    shown = ", ".join(list(dict.fromkeys(ids))[:SHOWN_IDS]) + (", ..." if len(set(ids)) > SHOWN_IDS else "")
    return visible(f"{path}: {len(ids)} stored score(s) disagree with {task.name}'s current rule (ids {shown}); "
                   "re-scored from the outputs", keep_lines=False)


def run_task(record: RunRecord, data_dir_given: bool = False) -> Task:
    """The task (and options) a record names."""
    cls = task_class(record.task)
    return cls(**record.options) if data_dir_given else cls.reopen(record.options, record.extras)


def run_data_dir(record: RunRecord | None, data_dir: str | Path | None = None) -> Path:
    """`data_dir`, else the data dir the record names (when it still exists), else the default."""
    recorded = (record.data or {}).get("dir") if record is not None else None
    if data_dir is None and recorded and Path(recorded).is_dir():
        data_dir = recorded
    return resolve_data_dir(data_dir)


def read_run(run_dir: str | Path, task: Task | None = None, items: dict[str, Item] | None = None,
             data_dir: str | Path | None = None, allow_torn: bool = False, unknown_ids: str = "error",
             need_record: bool = False) -> Run:
    """Read a run folder (samples.jsonl, and summary.json when present).

    `task` defaults to the record's; `items` to the task's test split from `data_dir`, else the
    data dir the record names (when it still exists), else the default. Samples of ids outside
    `items` are an error (`unknown_ids="error"`) or left out ("skip": a leaderboard with a limit)."""
    run_dir = Path(run_dir)
    samples = run_dir / SAMPLES_FILE
    if not samples.is_file():
        raise HarnessError(f"{run_dir} is not a run folder (no {SAMPLES_FILE}); point at a folder written by "
                           "`harness eval` or `harness score`")
    record = load_record(run_dir / RECORD_FILE) if (run_dir / RECORD_FILE).is_file() else None
    if record is None and (need_record or task is None):
        raise HarnessError(f"{run_dir} is not a run folder (no {RECORD_FILE}); point at a folder written by "
                           "`harness eval` or `harness score`")
    if task is None:
        assert record is not None
        task = run_task(record, data_dir is not None)
    if items is None:
        items = task.items_by_id(run_data_dir(record, data_dir)) if task.rescorable else {}
    rows, torn = read_samples(samples, task, allow_torn)
    if task.rescorable:
        _check_data(run_dir, task, record, items, list(dict.fromkeys(r["id"] for r in rows)), torn)
        unknown = sorted({r["id"] for r in rows} - items.keys())
        if unknown and unknown_ids == "error":
            raise HarnessError(f"{run_dir}: {len(unknown)} sample id(s) (e.g. {unknown[0]!r}) are not items of "
                               f"{task.name} in the data dir; pass the --data-dir the run was evaluated on")
        rows = [r for r in rows if r["id"] in items]
        records, changed = _rescored(task, items, rows)
    else:  # imported scores (lmms-eval's metric): validated, kept
        records, changed = rows, []
        items = {**{r["id"]: Item(id=r["id"], question="", target=None, category=r.get("category") or "")
                    for r in rows}, **(items or {})}
    seen = {r["id"] for r in records}
    stale = None
    if record is not None and record.rule and task.rule() and record.rule != task.rule():
        stale = f"{record.rule.get('task')} rule {record.rule.get('version')}"
    return Run(run_dir, task, {i: it for i, it in items.items() if i in seen}, records, record, changed, torn, stale)


def read_samples(path: Path, task: Task, allow_torn: bool = False) -> tuple[list[dict[str, Any]], int]:
    """samples.jsonl's rows, each checked; (rows, torn lines skipped). Errors name the file and line."""
    lo, hi = task.score_range
    rows, torn = [], 0
    try:
        for lineno, row, why in jsonl_lines(path, tolerant=allow_torn):
            why = f"torn or malformed line ({why})" if why is not None else _malformed(row)
            if why:
                if allow_torn:
                    torn += 1
                    continue
                raise HarnessError(f"{path}:{lineno}: {why}; re-run the evaluation to repair it, or pass "
                                   "--allow-missing to leave the line out")
            score = row.get("score")
            if not (finite(score) and lo <= score <= hi):
                raise HarnessError(f"{path}:{lineno}: score {score!r} is not a finite number in [{lo:g}, {hi:g}] "
                                   f"({task.name}); the file was edited or damaged, re-run or re-score it")
            rows.append(row)
    except UnicodeDecodeError as e:
        raise HarnessError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); re-run the evaluation") from None
    return rows, torn


def _malformed(row: Any) -> str | None:
    if not isinstance(row, dict):
        return "expected a JSON object per line"
    if not isinstance(row.get("id"), str) or not isinstance(row.get("output"), str):
        return 'a sample needs a string "id" and "output"'
    if not isinstance(row.get("sample"), int) or isinstance(row.get("sample"), bool) or row["sample"] < 0:
        return '"sample" must be a non-negative integer'
    return None


def _check_data(run_dir: Path, task: Task, record: RunRecord | None, items: dict[str, Item], ids: list[str],
                torn: int) -> None:
    """Re-scoring uses the items the run was scored on. Against other data (another copy of the
    benchmark with the same ids) every re-computed score would be the other data's, published as
    a re-score; the record's data hash (ids, questions, choices, targets in the run's order) tells."""
    want = (record.data or {}).get("hash") if record is not None else None
    if not want:
        return  # a record written without it: nothing to check against
    known = all(i in items for i in ids)
    if known and data_hash(items[i] for i in ids) == want:
        return
    recorded = (record.data or {}).get("dir") if record is not None else None
    ref: dict[str, Item] = {}
    if recorded and Path(recorded).is_dir():
        try:
            ref = task.items_by_id(Path(recorded))
        except HarnessError:
            pass  # the recorded copy is unreadable now: judge by the hash alone
    if all(i in ref for i in ids) and data_hash(ref[i] for i in ids) == want:  # the data it was scored on
        differ = [i for i in ids if i in items and data_hash([items[i]]) != data_hash([ref[i]])]
        if not differ:
            return  # a limited reader: the items it has are the run's
        raise HarnessError(f"{run_dir}: {len(differ)} item(s) (e.g. {differ[0]!r}) differ from the {task.name} data it "
                           f"was scored on ({recorded}); use that data dir (--data-dir, or data_dir in a leaderboard spec)")
    if known and not torn:
        where = f", which its record names {recorded}" if recorded else ""
        raise HarnessError(f"{run_dir}: scored on other {task.name} items than the data dir here holds (data hash "
                           f"{want}); use the data dir it was scored on{where} (--data-dir, or data_dir in a "
                           "leaderboard spec)")


def _rescored(task: Task, items: dict[str, Item], rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    records, changed = [], []
    for row in rows:
        fresh = rescore(task, items[row["id"]], row)
        if fresh["score"] != row["score"]:
            changed.append(row["id"])
        records.append(fresh)
    return records, changed
