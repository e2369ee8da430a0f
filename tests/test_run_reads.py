"""The run record (summary.json: typed, versioned) and everything that reads run folders back
(harness.core.rundir.read_run): stored scores re-computed from the outputs, bad scores and torn
lines refused with the file and line, model-free boards that never look at images."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import BUNDLED, real_or_skip, run_cli
from viewer_runs import answer, write_run

from harness.core.record import RECORD_VERSION, RunRecord, load_record
from harness.core.rundir import read_run
from harness.core.task import get_task
from harness.errors import HarnessError

LIMIT = 40


def _half_right(run_dir: Path, limit: int = LIMIT, data_dir: Path = BUNDLED, label: str = "ckpt") -> Path:
    """geoqa: the first half of the items answered right, the rest wrong."""
    return write_run(run_dir, "geoqa", lambda it, s: answer(it, int(it.id) % 2 == 0), limit=limit, label=label,
                     data_dir=data_dir)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_lines(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _runs_board(tmp_path: Path, name: str, rows: dict[str, Path], extra: str = "") -> Path:
    """A model-free board: one {name, runs} row per entry (the first is the baseline), geoqa only."""
    spec = tmp_path / "lb.yaml"
    checkpoints = ", ".join(f"{{name: {label}, runs: {run.parent}}}" for label, run in rows.items())
    spec.write_text(f"name: {name}\nbaseline: {next(iter(rows))}\ncheckpoints: [{checkpoints}]\ntasks: [geoqa]\n"
                    f"bootstrap: 200\noutput_dir: {tmp_path / 'runs'}\n{extra}")
    return spec


def _tamper(run_dir: Path, count: int) -> list[str]:
    """Set `count` wrong samples' stored score to 1 (outputs unchanged); returns their ids."""
    path = run_dir / "samples.jsonl"
    rows = _lines(path)
    ids = []
    for r in rows:
        if r["score"] == 0.0 and len(ids) < count:
            r["score"] = 1.0
            ids.append(r["id"])
    _write_lines(path, rows)
    return ids


# --- the record ------------------------------------------------------------------------------------
def test_score_writes_a_versioned_record(tmp_path):
    preds = tmp_path / "p.jsonl"
    items = get_task("geoqa").load(BUNDLED)[:LIMIT]
    _write_lines(preds, [{"id": it.id, "output": answer(it, True)} for it in items])
    res = run_cli("score", "--task", "geoqa", "--predictions", str(preds), "--out", str(tmp_path / "s"), "--allow-missing")
    assert res.returncode == 0, res.stderr
    raw = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert raw["schema_version"] == RECORD_VERSION and raw["n_samples"] == LIMIT and raw["score"] == 100.0
    assert raw["rule"] == {"task": "geoqa", "version": get_task("geoqa").rule_version}
    assert set(raw["timing"]) == {"started", "finished", "seconds"}
    assert raw["git"] is None or set(raw["git"]) == {"revision", "dirty"}
    record = load_record(tmp_path / "s" / "summary.json")
    assert record.to_json() == raw and record.extras["predictions"] == str(preds)


def test_a_version_1_record_reads_and_a_newer_one_is_named(tmp_path):
    run = _half_right(tmp_path / "run")
    raw = json.loads((run / "summary.json").read_text())
    v1 = {k: v for k, v in raw.items() if k not in ("schema_version", "git", "timing", "rule")}
    (run / "summary.json").write_text(json.dumps(v1))
    record = load_record(run / "summary.json")
    assert record.task == "geoqa" and record.score == raw["score"] and record.rule is None
    assert record.checkpoint == {"name": "ckpt", "hash": "0"}
    (run / "summary.json").write_text(json.dumps({**raw, "schema_version": RECORD_VERSION + 1}))
    with pytest.raises(HarnessError, match=f"schema version {RECORD_VERSION + 1} is not one this harness reads"):
        load_record(run / "summary.json")
    res = run_cli("view", str(run), "--out", str(tmp_path / "v"))
    assert res.returncode == 2 and "schema version" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_record_round_trips_its_extras():
    record = RunRecord(task="mmbench", n=3, score=50.0, extras={"vanilla": 60.0, "circular": 50.0})
    again = RunRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record and list(record.to_json())[:3] == ["schema_version", "task", "options"]


# --- scores come from outputs (30.3) -------------------------------------------------------------
def test_read_run_rescores_tampered_scores_and_names_them(tmp_path):
    run_dir = _half_right(tmp_path / "run")
    ids = _tamper(run_dir, 15)
    run = read_run(run_dir)
    assert run.rescored == ids
    assert sum(r["score"] for r in run.records) == LIMIT // 2  # the outputs' truth, not the edit
    note = run.notes()[0]
    assert "15 stored score(s) disagree" in note and ids[0] in note and str(run_dir / "samples.jsonl") in note


def test_a_runs_row_board_publishes_rescored_values(tmp_path):
    base = _half_right(tmp_path / "base" / "geoqa", label="base")
    edited = _half_right(tmp_path / "edited" / "geoqa", label="edited")
    _tamper(edited, 15)
    spec = _runs_board(tmp_path, "tampered", {"base": base, "edited": edited}, f"limit: {LIMIT}\n")
    res = run_cli("leaderboard", "--spec", str(spec))
    assert res.returncode == 0, res.stderr
    assert "15 stored score(s) disagree" in res.stderr
    rows = {r["checkpoint"]: r for r in csv.DictReader((tmp_path / "tampered" / "leaderboard.csv").open())}
    assert float(rows["edited"]["score"]) == 50.0 and float(rows["edited"]["delta"]) == 0.0


def test_resume_rescores_an_edited_log(tmp_path, capsys):
    from harness.core.runner import EvalSettings, evaluate
    from harness.core.store import GenerationCache
    from harness.models.mock import MockBackend

    task = get_task("geoqa")
    items = task.load(BUNDLED)[:12]
    backend = MockBackend(lambda prompt: "Answer: A")
    cache = GenerationCache(tmp_path / "cache.sqlite")
    try:
        first = evaluate(backend, task, items, EvalSettings(), tmp_path / "run", cache)
        rows = _lines(tmp_path / "run" / "samples.jsonl")
        for r in rows:
            r["score"] = 1.0
        _write_lines(tmp_path / "run" / "samples.jsonl", rows)
        (tmp_path / "run" / "summary.json").unlink()
        again = evaluate(backend, task, items, EvalSettings(), tmp_path / "run", cache)
    finally:
        cache.close()
    assert again.record.score == first.record.score < 100.0
    assert "stored score(s) disagree with geoqa's current rule" in capsys.readouterr().err
    assert _lines(tmp_path / "run" / "samples.jsonl") == first.records
    assert backend.calls == 1  # the re-run generated nothing


def test_an_eval_rerun_on_an_edited_folder_publishes_the_outputs_score(tmp_path):
    """As the audit did it: `harness eval` twice on one folder, stored scores edited 0 -> 1 in between
    (outputs untouched). The re-run used to publish the edit (41.25 -> 53.75); now it names the
    edited samples and its record and log hold the outputs' score."""
    args = ("eval", "--ckpt", "tiny", "--tasks", "geoqa", "--limit", "16", "--output-dir", str(tmp_path / "runs"))
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "tiny" / "geoqa"
    truth, score = (run / "samples.jsonl").read_text(), json.loads((run / "summary.json").read_text())["score"]
    ids = _tamper(run, 15)
    assert ids and score < 100.0  # the tiny model gets some wrong: there is something to falsify
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{len(ids)} stored score(s) disagree" in again.stderr and ids[0] in again.stderr
    assert json.loads((run / "summary.json").read_text())["score"] == score
    assert (run / "samples.jsonl").read_text() == truth


def test_a_run_scored_under_another_rule_is_named(tmp_path):
    run_dir = _half_right(tmp_path / "run")
    raw = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**raw, "rule": {"task": "geoqa", "version": "0"}}))
    notes = read_run(run_dir).notes()
    assert any("scored under geoqa rule 0; re-scored under geoqa rule" in n for n in notes)


# --- readers validate scores (30.5): the refusals are cases of tests/test_bad_inputs.py ----------------
def test_torn_lines_in_a_runs_row_are_left_out_when_allowed(tmp_path):
    """Without --allow-missing the torn line is an error naming the file (test_bad_inputs.py)."""
    base = _half_right(tmp_path / "base" / "geoqa", label="base")
    other = _half_right(tmp_path / "other" / "geoqa", label="other")
    with (other / "samples.jsonl").open("a") as f:
        f.write('{"id": "7", "sample": 0, "outp')  # a torn last line
    spec = _runs_board(tmp_path, "torn", {"base": base, "other": other}, f"limit: {LIMIT}\n")
    res = run_cli("leaderboard", "--spec", str(spec), "--allow-missing")
    assert res.returncode == 0, res.stderr
    assert "1 torn or malformed line(s) skipped" in res.stderr


# --- rows that run no model never check images (30.7) ----------------------------------------------
def test_a_runs_board_over_the_real_geoqa_answers_needs_no_images(tmp_path):
    real = real_or_skip("geoqa", "gllava")
    data = tmp_path / "data"
    (data / "geoqa").mkdir(parents=True)
    for name in ("test_questions.jsonl", "test_answers.jsonl"):
        shutil.copy(real / name, data / "geoqa" / name)
    n = len(get_task("geoqa").load(data))
    assert n == 754
    base = _half_right(tmp_path / "a" / "geoqa", limit=None, data_dir=data, label="a")
    other = write_run(tmp_path / "b" / "geoqa", "geoqa", lambda it, s: answer(it, True), label="b", data_dir=data)
    spec = _runs_board(tmp_path, "real", {"a": base, "b": other}, f"data_dir: {data}\n")
    res = run_cli("leaderboard", "--spec", str(spec))
    assert res.returncode == 0, res.stderr
    rows = {r["checkpoint"]: r for r in csv.DictReader((tmp_path / "real" / "leaderboard.csv").open())}
    assert int(rows["b"]["n"]) == 754 and float(rows["b"]["score"]) == 100.0
