"""Where samples live: the per-run samples.jsonl log and the cross-run generation cache.

samples.jsonl is the source of truth for a run: scores, statistics, leaderboards and scaling
curves are all recomputed from it without the model. Lines are appended (and flushed) as they
complete, so a run killed at any point loses at most one torn line, which the next start drops.
The generation cache (SQLite, one transaction per batch) survives across runs and settings:
switching a setting back and forth, or shrinking --limit, never regenerates what was done.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from harness.errors import HarnessError

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


def write_error(path: Path, e: OSError) -> HarnessError:
    """A failed write as one line naming the file and what to do."""
    fix = {errno.ENOSPC: "free disk space", errno.EDQUOT: "free disk space (quota)",
           errno.EROFS: "choose a writable output folder", errno.EACCES: "choose a writable output folder or fix its permissions",
           errno.EPERM: "choose a writable output folder or fix its permissions"}.get(e.errno, "check the output folder")
    return HarnessError(f"cannot write {path}: {e.strerror or e}; {fix} and re-run (finished work is kept)")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file."""
    tmp = None
    made_folder = not path.parent.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if made_folder:  # a failed first write leaves no empty output folder behind
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_sample_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Valid sample records of a samples.jsonl; a torn or foreign line (from a kill) is skipped."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8", errors="replace") as f:  # a torn multi-byte character is a torn line
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "id" in row and "sample" in row:
                yield row


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
