"""Reading and writing files: one atomic writer, one JSONL reader, one TSV reader, CSV cell safety.

Every result file is written to a temp file in the same folder and renamed into place, so a
crash never leaves half a file, with mode 0644 (results are meant to be shared; mkstemp alone
would leave them 0600). Readers turn every malformed input into a one-line HarnessError naming
the file and line, except where a torn line is expected (a killed run's log: `skip_bad`).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:
    import pandas as pd

from harness.errors import HarnessError

FILE_MODE = 0o644


def write_error(path: Path, e: OSError) -> HarnessError:
    """A failed write as one line naming the file and what to do."""
    fix = {errno.ENOSPC: "free disk space", errno.EDQUOT: "free disk space (quota)",
           errno.EROFS: "choose a writable output folder", errno.EACCES: "choose a writable output folder or fix its permissions",
           errno.EPERM: "choose a writable output folder or fix its permissions"}.get(e.errno, "check the output folder")
    return HarnessError(f"cannot write {path}: {e.strerror or e}; {fix} and re-run (finished work is kept)")


def not_utf8(path: Path, e: UnicodeDecodeError) -> HarnessError:
    return HarnessError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); re-save it as UTF-8")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside `path`; whatever is written there replaces `path` when the block ends.

    A failed write (disk full, read-only folder) is one HarnessError line; the temp file is removed
    and a folder this write created is removed again, so no empty output folder is left behind.
    """
    path = Path(path)
    tmp = None
    made_folder = not path.parent.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if made_folder:
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes atomically, flushed to disk before the rename."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: Path, skip_bad: bool = False) -> Iterator[dict[str, Any]]:
    """JSON objects line by line. A malformed line is an error naming file and line, or with
    `skip_bad` (a log a kill may have torn) silently skipped."""
    for _, row in numbered_jsonl(path, skip_bad):
        yield row


def numbered_jsonl(path: Path, skip_bad: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) pairs of read_jsonl, for callers whose own checks name the line.
    With `skip_bad` an undecodable byte (a torn multi-byte character) only spoils its own line."""
    try:
        yield from _numbered_jsonl(path, skip_bad)
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None


def _numbered_jsonl(path: Path, skip_bad: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, row, why in jsonl_lines(path, tolerant=skip_bad):
        if why is None and not isinstance(row, dict):
            why = "expected a JSON object per line"
        elif why is not None:
            why = f"malformed JSON line ({why}); fix or remove it"
        if why is None:
            yield lineno, row
        elif not skip_bad:
            raise HarnessError(f"{path}:{lineno}: {why}")


def jsonl_lines(path: Path, tolerant: bool = False) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, decoded value, None) per non-blank line, or (line number, None, why) for a line
    that is not JSON; callers decide what a bad line means. `tolerant`: an undecodable byte (a torn
    multi-byte character) only spoils its own line, else it is a UnicodeDecodeError."""
    with path.open(encoding="utf-8", errors="replace" if tolerant else "strict") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line), None
            except json.JSONDecodeError as e:
                yield lineno, None, e.msg


def read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise HarnessError(f"{path}: malformed JSON at line {e.lineno} ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None


def read_tsv(path: Path, hint: str = "check the file") -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a tab-separated file (field limit raised: base64 image cells are large)."""
    import csv
    import sys

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (csv.Error, UnicodeDecodeError) as e:
        raise HarnessError(f"{path}: not a readable tab-separated file ({e}); {hint}") from None
    return header, rows


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
