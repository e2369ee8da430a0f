"""`harness score`: missing ids are an error unless --allow-missing (then counted, in the table and
summary.json); ids the official rule excludes (A-OKVQA DA difficult questions) are skipped and counted."""
from __future__ import annotations

import json

import pytest

from conftest import BUNDLED, real_or_skip
from harness.cli import main


def _official_da_file(path, rows):
    """Predictions for every question of the file, as the official evaluation takes them."""
    path.write_text("".join(json.dumps({"id": r["question_id"], "output": r["direct_answers"][0]}) + "\n" for r in rows))


@pytest.mark.parametrize("data", ["bundled", "real"])
def test_aokvqa_da_skips_and_counts_the_difficult_questions(tmp_path, capsys, data):
    root = BUNDLED if data == "bundled" else real_or_skip("aokvqa", "aokvqa_v1p0_val.json").parents[1]
    rows = json.loads((root / "aokvqa" / "aokvqa_v1p0_val.json").read_text(encoding="utf-8"))
    difficult = sum(r.get("difficult_direct_answer") is True for r in rows)
    assert difficult > 0
    _official_da_file(tmp_path / "p.jsonl", rows)
    rc = main(["score", "--task", "aokvqa_da", "--data-dir", str(root), "--predictions", str(tmp_path / "p.jsonl"),
               "--out", str(tmp_path / "s")])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["excluded"] == difficult and summary["n"] == len(rows) - difficult and summary["missing"] == 0
    assert "excluded" in capsys.readouterr().out


def test_allow_missing_scores_the_rest_and_shows_the_count(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": i, "output": "Answer: A"}) + "\n" for i in range(10)))
    argv = ["score", "--task", "geoqa", "--predictions", str(preds), "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    assert "290 of 300 geoqa item(s) have no prediction" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert main([*argv, "--allow-missing"]) == 0
    out = capsys.readouterr().out
    assert "missing" in out and "290" in out
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["n"] == 10 and summary["missing"] == 290
