"""Output folders: which existing folders a command may write into, or (`--overwrite`) replace.

Nothing a user owns is written over. A command writes into a new folder, an empty one, or one the
project wrote itself, recognised by what it holds: a checkpoint by its manifest.json (its
`treatment`), a `harness score` folder by its summary.json (a run record), a `harness view` folder
by its pages' harness-key, a leaderboard folder by its renders. The working directory, a folder
above it, the project's own root and the home folder are never an output folder. A refusal is one
line naming the folder and what it holds.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from harness.core.text import visible
from harness.errors import HarnessError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _json_has(path: Path, *keys: str) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and all(k in data for k in keys)


def _is_page(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            return '<meta name="harness-key"' in f.read(400)
    except OSError:
        return False


def _checkpoint(folder: Path) -> bool:
    return _json_has(folder / "manifest.json", "treatment", "config")


def _score(folder: Path) -> bool:
    return _json_has(folder / "summary.json", "task", "n", "score")


def _view(folder: Path) -> bool:
    return any(_is_page(p) for p in folder.glob("*.html"))


def _leaderboard(folder: Path) -> bool:
    renders = ("leaderboard.csv", "leaderboard.md", "leaderboard.html", ".render-cache.json")
    return any((folder / name).is_file() for name in renders) or _view(folder / "samples")


# kind -> (what the project writes there, how to recognise a folder it wrote)
KINDS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "checkpoint": ("a checkpoint harness train wrote (manifest.json)", _checkpoint),
    "score": ("a folder harness score wrote (summary.json)", _score),
    "view": ("a folder harness view wrote (its pages)", _view),
    "leaderboard": ("a leaderboard folder (leaderboard.csv)", _leaderboard),
}


def refuse_protected(folder: str | Path, flag: str = "--out", verb: str = "write into") -> None:
    """One error line when `folder` is one no command ever writes into or replaces."""
    why = _protected(Path(folder))
    if why:
        raise HarnessError(f"{flag} {visible(folder, keep_lines=False)} is {why}; harness will not {verb} it; "
                           f"give a new folder, e.g. {flag} out/")


def _protected(folder: Path) -> str | None:
    """Why `folder` can never be an output folder, or None."""
    real, cwd = folder.resolve(), Path.cwd().resolve()
    if real == cwd:
        return "the working directory"
    if real in cwd.parents:
        return "a folder above the working directory"
    if real == PROJECT_ROOT or real in PROJECT_ROOT.parents:
        return "the project's root" if real == PROJECT_ROOT else "a folder above the project's root"
    if real == Path.home().resolve():
        return "the home folder"
    return None


def holds(folder: Path, shown: int = 3) -> str:
    """'a, b, c (+N more)': what a folder holds, for a refusal."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return visible(", ".join(names[:shown]), keep_lines=False) + more


def check_output_folder(folder: str | Path, kind: str, flag: str = "--out", replace: bool = False) -> None:
    """Refuse (one HarnessError line) unless `kind` may write into `folder` (replace=True: delete and
    replace it, as `harness train --overwrite` does): it does not exist, is empty, or is one the
    project wrote as `kind`; never a protected folder or a file."""
    what, ours = KINDS[kind]
    folder = Path(folder)
    name = visible(folder, keep_lines=False)
    verb = "replace" if replace else "write into"
    refuse_protected(folder, flag, verb)
    if not os.path.lexists(folder):
        return
    if not folder.is_dir():
        raise HarnessError(f"{flag} {name} is a file, not a folder; give a new folder")
    if not any(folder.iterdir()) or ours(folder):
        return
    raise HarnessError(f"{flag} {name} holds {holds(folder)} and is not {what}; harness will not {verb} it; "
                       f"give a new or empty folder")
