"""Where samples live: the per-run samples.jsonl log and the cross-run generation cache.

samples.jsonl is the source of truth for a run: scores, statistics, leaderboards and scaling
curves are all recomputed from it without the model. Lines are appended (and flushed) as they
complete, so a run killed at any point loses at most one torn line, which the next start drops.
The generation cache (SQLite, one transaction per batch) survives across runs and settings:
switching a setting back and forth, or shrinking --limit, never regenerates what was done.
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.core.files import atomic_write_json, atomic_write_jsonl, atomic_write_text, numbered_jsonl, read_jsonl
from harness.errors import HarnessError

__all__ = ["GenerationCache", "SampleLog", "atomic_write_json", "atomic_write_jsonl", "atomic_write_text",
           "read_predictions", "read_sample_lines"]


def read_sample_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Valid sample records of a samples.jsonl; a torn or foreign line (from a kill) is skipped."""
    if not path.is_file():
        return
    for row in read_jsonl(path, skip_bad=True):
        if "id" in row and "sample" in row:
            yield row


def read_predictions(path: Path, items: dict) -> list[tuple[str, int, str]]:
    """Parse a predictions JSONL; every problem is an error naming the line."""
    if not path.is_file():
        raise HarnessError(f"predictions file not found: {path}")
    rows: list[tuple[str, int, str]] = []
    seen: set[tuple[str, int]] = set()
    for lineno, row in numbered_jsonl(path):
        where = f"{path}:{lineno}"
        if "id" not in row or "output" not in row:
            raise HarnessError(f'{where}: expected {{"id": ..., "output": "..."}} with an optional "sample"')
        item_id = str(row["id"])
        if item_id not in items:
            raise HarnessError(f"{where}: id {item_id!r} is not in the benchmark file; check --task and --data-dir")
        if not isinstance(row["output"], str):
            raise HarnessError(f"{where}: \"output\" must be a string")
        sample = row.get("sample", 0)
        if not isinstance(sample, int) or sample < 0:
            raise HarnessError(f'{where}: "sample" must be a non-negative integer')
        if (item_id, sample) in seen:
            raise HarnessError(f"{where}: duplicate output for id {item_id!r} sample {sample}; give each sample its own \"sample\" index")
        seen.add((item_id, sample))
        rows.append((item_id, sample, row["output"]))
    if not rows:
        raise HarnessError(f"{path}: no predictions found")
    return rows


class SampleLog:
    """Append-only samples.jsonl for one (checkpoint, task) run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = None

    def reset_to(self, records: Iterable[dict[str, Any]]) -> None:
        """Rewrite the file atomically with exactly `records` (dropping torn/stale lines)."""
        atomic_write_jsonl(self.path, records)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        for r in records:
            self._fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class GenerationCache:
    """key -> model output (text, plus optional JSON extras such as choice losses)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, output TEXT, extra TEXT)"
        )

    def get_many(self, keys: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, output, extra in self._db.execute(
                f"SELECT key, output, extra FROM generations WHERE key IN ({marks})", chunk
            ):
                found[key] = (output, json.loads(extra) if extra else {})
        return found

    def put_many(self, rows: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?)",
                [(k, o, json.dumps(e) if e else None) for k, o, e in rows],
            )

    def close(self) -> None:
        self._db.close()
