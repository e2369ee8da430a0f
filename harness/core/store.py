"""Where samples live: the per-run samples.jsonl log and the cross-run generation cache.

samples.jsonl is the source of truth for a run: scores, statistics, leaderboards and scaling
curves are all recomputed from it without the model. Lines are appended (and flushed) as they
complete, so a run killed at any point loses at most one torn line, which the next start drops.
The generation cache (SQLite, one transaction per batch) survives across runs and settings:
switching a setting back and forth, or shrinking --limit, never regenerates what was done.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.core.files import (atomic_write_json, atomic_write_jsonl, atomic_write_text, numbered_jsonl, read_jsonl,
                                write_error)
from harness.errors import HarnessError

__all__ = ["GenerationCache", "SampleLog", "atomic_write_json", "atomic_write_jsonl", "atomic_write_text",
           "exclusive", "read_predictions", "read_sample_lines", "run_lock", "write_error"]

LOCK_NAME = ".lock"


@contextlib.contextmanager
def exclusive(lock_path: Path, what: str, quiet: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (flock: released by the OS even on kill -9).

    A second process on the same run folder or cache waits here (saying so once) rather than
    rewriting a samples.jsonl the first one is appending to.
    """
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(f"waiting for another harness process using {what} (lock {lock_path})", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def run_lock(run_dir: Path, rank: int | None = None):
    """The lock of one run folder (a data-parallel rank locks its own shard)."""
    name = LOCK_NAME if rank is None else f"{LOCK_NAME}-rank{rank}"
    return exclusive(run_dir / name, f"run folder {run_dir}")


def read_sample_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Valid sample records of a samples.jsonl; a torn or foreign line (from a kill) is skipped."""
    if not path.is_file():
        return
    for row in read_jsonl(path, skip_bad=True):
        if "id" in row and "sample" in row:
            yield row


def read_predictions(path: Path, items: dict, excluded: frozenset[str] = frozenset(),
                     skipped: list[str] | None = None) -> list[tuple[str, int, str]]:
    """Parse a predictions JSONL; every problem is an error naming the line.

    Ids in `excluded` (items the task's official rule leaves out) are skipped, appended to `skipped`.
    """
    if not path.is_file():
        raise HarnessError(f"predictions file not found: {path}")
    rows: list[tuple[str, int, str]] = []
    seen: set[tuple[str, int]] = set()
    for lineno, row in numbered_jsonl(path):
        where = f"{path}:{lineno}"
        if "id" not in row or "output" not in row:
            raise HarnessError(f'{where}: expected {{"id": ..., "output": "..."}} with an optional "sample"')
        item_id = str(row["id"])
        if item_id in excluded and item_id not in items:
            if skipped is not None:
                skipped.append(item_id)
            continue
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
    if not rows and not skipped:
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
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write(text)  # one write per batch: a failure leaves at most one torn line
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as e:
            raise write_error(self.path, e) from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class GenerationCache:
    """key -> model output (text, plus optional JSON extras such as choice losses).

    Writes are serialised across processes by a lock file beside the database (SQLite's own
    busy timeout gives up after a while); a damaged or unwritable database is a one-line error.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = path.with_name(path.name + ".lock")
        self._conn: sqlite3.Connection | None = None  # opened on first use: a run refused earlier writes nothing

    def open(self) -> None:
        """Open (creating) the database and check it is readable; errors are one line."""
        if self._conn is not None:
            return
        with self._errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=60)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, output TEXT, extra TEXT)")
                conn.execute("SELECT count(*) FROM generations WHERE key = ''").fetchone()
            except BaseException:
                conn.close()
                raise
            self._conn = conn

    @property
    def _db(self) -> sqlite3.Connection:
        self.open()
        assert self._conn is not None
        return self._conn

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise write_error(Path(e.filename or self.path), e) from None
        except sqlite3.DatabaseError as e:
            text = str(e)
            if "full" in text or "I/O" in text or "readonly" in text or "unable to open" in text:
                raise HarnessError(f"generation cache {self.path}: cannot write ({text}); free disk space or make "
                                   "the output dir writable") from None
            raise HarnessError(f"generation cache {self.path} is damaged ({text}); delete it (it only caches "
                               "outputs, which are regenerated) and re-run") from None

    def get_many(self, keys: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        with self._errors():
            for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, output, extra in self._db.execute(
                    f"SELECT key, output, extra FROM generations WHERE key IN ({marks})", chunk
                ):
                    found[key] = (output, json.loads(extra) if extra else {})
        return found

    def put_many(self, rows: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        values = [(k, o, json.dumps(e) if e else None) for k, o, e in rows]
        with self._errors(), exclusive(self._lock, f"generation cache {self.path}", quiet=True), self._db:
            self._db.executemany("INSERT OR REPLACE INTO generations VALUES (?, ?, ?)", values)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
