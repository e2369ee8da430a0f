"""Run folders shared by real concurrent processes: nothing lost, nothing duplicated, same results.

Two `harness eval` processes on one --output-dir used to both exit 0 with 16 of 80 items lost
(each atomically rewrote samples.jsonl under the other's appends). Now a run folder is locked:
the second process waits, then finds the work done.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HARNESS, REPO


def _start(*args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_DATA"}
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    return subprocess.Popen([*HARNESS, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


@pytest.mark.slow
def test_two_evals_on_one_output_dir_lose_nothing(tmp_path):
    limit = 24
    args = ("eval", "--ckpt", "tiny", "--tasks", "geoqa", "--limit", str(limit), "--batch-size", "4",
            "--output-dir", str(tmp_path / "runs"))
    procs = [_start(*args, cwd=tmp_path) for _ in range(2)]
    results = [_finish(p) for p in procs]
    for rc, _, err in results:
        assert rc == 0, err
    run = tmp_path / "runs" / "tiny" / "geoqa"
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == limit and len({(r["id"], r["sample"]) for r in rows}) == limit
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n"] == limit and summary["n_samples"] == limit
    # The two processes overlapped (each started before the other finished) and one of them waited.
    assert sum("waiting for another harness process" in err for _, _, err in results) >= 1
    # Not a terminal: the generating process logged a plain progress line, not a rich bar.
    assert any(f"tiny geoqa: {limit}/{limit} (100%)" in err for _, _, err in results)


SPEC = """name: {name}
baseline: tiny
checkpoints: [tiny]
blind: [tiny]
tasks: [geoqa]
limit: 12
bootstrap: 300
output_dir: {runs}
"""


@pytest.mark.slow
def test_two_leaderboards_on_one_runs_folder_match_one_alone(tmp_path):
    shared = tmp_path / "shared-runs"
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(SPEC.format(name=name, runs=shared))
    (tmp_path / "alone.yaml").write_text(SPEC.format(name="alone", runs=tmp_path / "alone-runs"))
    procs = [_start("leaderboard", "--spec", str(tmp_path / f"{name}.yaml"), cwd=tmp_path) for name in ("a", "b")]
    for rc, _, err in (_finish(p) for p in procs):
        assert rc == 0, err
    rc, _, err = _finish(_start("leaderboard", "--spec", str(tmp_path / "alone.yaml"), cwd=tmp_path))
    assert rc == 0, err
    alone = (tmp_path / "alone" / "leaderboard.csv").read_text()
    assert "tiny+blind" in alone and ",12," in alone
    assert (tmp_path / "a" / "leaderboard.csv").read_text() == alone
    assert (tmp_path / "b" / "leaderboard.csv").read_text() == alone


def test_a_held_run_lock_makes_a_second_process_wait(tmp_path):
    """The lock itself, between real processes: the child blocks until the parent releases."""
    import time

    from harness.core.store import run_lock

    code = ("import sys, time; from pathlib import Path; from harness.core.store import run_lock\n"
            "print('ready', flush=True); t = time.monotonic()\n"
            "with run_lock(Path(sys.argv[1])): print(round(time.monotonic() - t, 2))\n")
    with run_lock(tmp_path):
        child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert child.stdout.readline().strip() == "ready"  # imports done (slow on a busy machine): now it asks
        time.sleep(1.5)
        assert child.poll() is None  # still waiting
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0 and float(out) >= 1.0
    assert "waiting for another harness process using run folder" in err


# --- training outputs (issue 30) -----------------------------------------------------------------------
def _train(out: str, *extra: str, cwd: Path) -> subprocess.Popen:
    return _start("train", "sft", "--base", "tiny", "--task", "geoqa", "--out", out, "limit=8", *extra, cwd=cwd)


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_two_trainings_on_one_out_never_both_succeed(tmp_path):
    """Started together, then one after the other has begun: one trains and publishes, the other is refused in one line
    (it used to be: both exit 0, both print "wrote X", X holds one of them)."""
    import time

    rates = ["learning_rate=0.001", "learning_rate=0.0005"]
    results = [_finish(p) for p in [_train("X", rate, cwd=tmp_path) for rate in rates]]
    assert sorted(rc for rc, _, _ in results) == [0, 2], results
    winner = next(i for i, (rc, _, _) in enumerate(results) if rc == 0)
    loser_err = results[1 - winner][2]
    assert _error_lines(loser_err) == [line for line in loser_err.splitlines() if line.strip()]
    assert "X is being written by another harness process" in loser_err
    manifest = json.loads((tmp_path / "X" / "manifest.json").read_text())
    assert manifest["config"]["learning_rate"] == float(rates[winner].split("=")[1])

    first = _train("Y", rates[0], cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (tmp_path / ".Y.harness-lock").exists() and time.monotonic() < deadline:  # started, holds Y
        time.sleep(0.2)
    rc, _, err = _finish(_train("Y", rates[1], "--overwrite", cwd=tmp_path))  # --overwrite does not break a lock
    assert rc == 2 and "Y is being written by another harness process" in err
    assert _finish(first)[0] == 0
    rc, _, err = _finish(_train("Y", rates[1], cwd=tmp_path))
    assert rc == 2 and "Y already exists; pass --overwrite" in err
    assert json.loads((tmp_path / "Y" / "manifest.json").read_text())["config"]["learning_rate"] == 0.001
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X", "Y"]  # no lock or staging folder left


def test_overwrite_of_a_user_folder_refused_by_a_real_process(tmp_path):
    """`--overwrite` on a folder that is not a checkpoint (and on the working directory) deletes
    nothing: the process stops in one line before any model loads."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "thesis.tex").write_text("years of work")
    for out, needle in (("victim", "victim holds thesis.tex and is not a checkpoint"),
                        (".", ". is the working directory")):
        rc, out_text, err = _finish(_train(out, "--overwrite", cwd=tmp_path))
        assert rc == 2 and err.strip() == err.strip().splitlines()[0] and needle in err, err
    assert (tmp_path / "victim" / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]
