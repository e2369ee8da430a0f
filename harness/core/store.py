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
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:
    import pandas as pd


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# --- CSV / TSV cells ------------------------------------------------------------------------------
# A spreadsheet runs a cell that starts with = + - @ (or tab / CR, which some strip first) as a
# formula: `=cmd|' /C calc'!A0` as a checkpoint name or a model output would execute on opening.
# Every CSV and TSV the project writes passes its text cells through csv_safe (OWASP's advice:
# prefix a quote). Plain numbers such as -3.5 or +2 cannot be formulas and are kept as written.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?%?")


def csv_safe(value: Any) -> Any:
    """A cell value that no spreadsheet reads as a formula (non-strings pass through)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` with csv_safe applied to its text cells and column names."""
    from pandas.api.types import is_numeric_dtype

    out = df.copy()
    for col in out.columns:
        if not is_numeric_dtype(out[col]):  # object or pandas' string dtype: text cells
            out[col] = out[col].map(csv_safe)
    out.columns = [csv_safe(str(c)) for c in out.columns]
    return out


def read_sample_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Valid sample records of a samples.jsonl; a torn or foreign line (from a kill) is skipped."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
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
