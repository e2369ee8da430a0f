"""The installed set equals the lock: `make setup` on a fresh clone reproduces exactly what was tested."""
from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "constraints.txt"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _public(version: str) -> str:
    return version.split("+", 1)[0]  # torch's local label (+cpu) names the build, not the release


def read_lock(path: Path = LOCK) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"{path.name}:{number}: {line!r} is not an exact pin (name==version)"
        pins[_norm(match[1])] = match[2]
    return pins


def test_every_lock_line_is_an_exact_pin_of_a_core_dependency():
    pins = read_lock()
    for core in ("torch", "transformers", "peft", "trl", "accelerate", "numpy", "scipy", "pandas", "filelock",
                 "lmms-eval", "pip"):
        assert core in pins, f"{core} is not pinned in constraints.txt"


@pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
                    reason="not running in this checkout's .venv (made by `make setup`)")
def test_installed_set_equals_the_lock():
    pins = read_lock()
    installed = {_norm(d.metadata["Name"]): d.version for d in distributions()}
    installed.pop("vlm-harness", None)
    wrong = {n: (installed[n], pins[n]) for n in pins if n in installed and _public(installed[n]) != _public(pins[n])}
    missing = sorted(set(pins) - set(installed))
    extra = sorted(set(installed) - set(pins))
    assert not wrong, f"installed versions differ from the lock: {wrong}"
    assert not missing, f"locked but not installed: {missing}"
    assert not extra, f"installed but not in the lock (run `make lock`): {extra}"
