"""The command line as a user meets it: listing, scoring real files, and every bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUNDLED, REPO, real_or_skip, run_cli


def test_help_imports_no_heavy_library():
    code = "import sys, harness.cli; harness.cli.build_parser(); print(sorted(m for m in ('torch', 'transformers', 'pandas', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_tasks_lists_every_task_with_its_layout():
    res = run_cli("tasks")
    assert res.returncode == 0
    for name in ("geoqa", "aokvqa_mc", "aokvqa_da", "mmbench", "ocrbench"):
        assert name in res.stdout
    assert "test_questions.jsonl" in res.stdout and "--extract" in res.stdout


@pytest.fixture
def real_geoqa(tmp_path) -> Path:
    src = real_or_skip("geoqa", "gllava")
    (tmp_path / "geoqa").mkdir()
    for name in ("test_questions.jsonl", "test_answers.jsonl"):
        shutil.copy(src / name, tmp_path / "geoqa" / name)
    return tmp_path


def _write_preds(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_on_the_real_geoqa_files(real_geoqa, tmp_path):
    answers = [json.loads(line) for line in (real_geoqa / "geoqa" / "test_answers.jsonl").read_text().splitlines()]
    # Half the items right, a quarter wrong, a quarter unparsed (no "Answer:" marker).
    preds = []
    for i, a in enumerate(answers):
        wrong = "ABCD"[("ABCD".index(a["text"]) + 1) % 4]
        output = [f"So it is 40°. Answer: {a['text']}", f"Answer: ({wrong})", "I cannot tell."][min(i % 4, 2)]
        preds.append({"id": a["question_id"], "output": output})
    pred_file = _write_preds(tmp_path / "preds.jsonl", preds)
    res = run_cli("score", "--task", "geoqa", "--predictions", str(pred_file), "--data-dir", str(real_geoqa),
                  "--out", str(tmp_path / "scored"))
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "scored" / "summary.json").read_text())
    n = len(answers)
    right = sum(1 for i in range(n) if i % 4 == 0)
    unparsed = sum(1 for i in range(n) if i % 4 >= 2)
    assert summary["n"] == n == 754
    assert summary["score"] == pytest.approx(100 * right / n)
    assert summary["unparsed"] == unparsed
    assert summary["ci_low"] < summary["score"] < summary["ci_high"]
    rows = [json.loads(line) for line in (tmp_path / "scored" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == n and {"id", "sample", "extracted", "score"} <= rows[0].keys()

    # The r3v mode parses more (its loose fallbacks), and never gives random credit.
    res = run_cli("score", "--task", "geoqa", "--extract", "r3v", "--predictions", str(pred_file),
                  "--data-dir", str(real_geoqa), "--out", str(tmp_path / "r3v"))
    r3v = json.loads((tmp_path / "r3v" / "summary.json").read_text())
    assert res.returncode == 0 and r3v["options"] == {"extract": "r3v"}
    assert r3v["unparsed"] < summary["unparsed"]


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"id": 0, "output": "Answer: A"}', "{not json"], "malformed JSON"),
        (['{"id": 999999, "output": "Answer: A"}'], "not in the benchmark"),
        (['{"id": 0, "output": "Answer: A"}', '{"id": 0, "output": "Answer: B"}'], "duplicate"),
        (['{"id": 0}'], "expected"),
        (['{"id": 0, "output": 5}'], "must be a string"),
    ],
)
def test_score_rejects_bad_predictions(real_geoqa, tmp_path, lines, message):
    pred = tmp_path / "p.jsonl"
    pred.write_text("\n".join(lines) + "\n")
    res = run_cli("score", "--task", "geoqa", "--predictions", str(pred), "--data-dir", str(real_geoqa),
                  "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert message in res.stderr and res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--ckpt", "tiny", "--tasks", "nope"], "unknown task 'nope'"),
        (["eval", "--ckpt", "tiny", "--tasks", "geoqa", "--data-dir", "/does/not/exist"], "data dir not found"),
        (["eval", "--ckpt", "/does/not/exist", "--tasks", "geoqa", "--limit", "2"], "/does/not/exist"),
        (["eval", "--ckpt", "tiny", "--tasks", "mmbench", "--extract", "r3v"], "--extract does not apply"),
        (["eval", "--ckpt", "tiny", "--tasks", "geoqa", "--extract", "loose"], "is not one of"),
        (["eval", "--ckpt", "tiny", "--tasks", "geoqa", "--n-samples", "3"], "temperature"),
        (["score", "--task", "geoqa", "--predictions", "/nope.jsonl", "--out", "x"], "predictions file not found"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path, args, message):
    res = run_cli(*args, "--output-dir", str(tmp_path / "runs")) if args[0] == "eval" else run_cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag", [["--temperature", "-1"], ["--top-p", "2"], ["--limit", "0"], ["--batch-size", "x"]])
def test_bad_flag_values_are_rejected(flag, tmp_path):
    res = run_cli("eval", "--ckpt", "tiny", "--tasks", "geoqa", *flag, "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 2 and flag[0] in res.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_images_stop_eval_but_not_score(real_geoqa, tmp_path):
    res = run_cli("eval", "--ckpt", "tiny", "--tasks", "geoqa", "--data-dir", str(real_geoqa),
                  "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 2 and "image(s) missing" in res.stderr and "harness score" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_broken_checkpoint_is_named(random_tiny, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(random_tiny, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    res = run_cli("eval", "--ckpt", str(broken), "--tasks", "geoqa", "--limit", "2", "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 2 and str(broken) in res.stderr
    assert not list((tmp_path / "runs").glob("*/geoqa/summary.json"))


def test_eval_tiny_prints_a_score_with_its_ci(tmp_path):
    if not (REPO / "checkpoints" / "tiny" / "config.json").exists():
        pytest.fail("the shipped tiny checkpoint is missing; run `make tiny`")
    res = run_cli("eval", "--ckpt", "tiny", "--tasks", "geoqa", "--limit", "24", "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "runs" / "tiny" / "geoqa" / "summary.json").read_text())
    assert summary["n"] == 24
    assert f"{summary['score']:.1f}" in res.stdout and f"{summary['ci_low']:.1f}" in res.stdout
