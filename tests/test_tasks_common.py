"""What every task shares: bundled data round-trips, and images are needed to eval but not to score."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import BUNDLED, run_cli
from harness.core.task import get_task, task_names

ANNOTATIONS = {  # the files of each bundled test split, without images
    "geoqa": ["geoqa/test_questions.jsonl", "geoqa/test_answers.jsonl", "geoqa/test_meta.jsonl"],
    "aokvqa_mc": ["aokvqa/aokvqa_v1p0_val.json"],
    "aokvqa_da": ["aokvqa/aokvqa_v1p0_val.json"],
    "ocrbench": ["ocrbench/OCRBench.json"],
}


@pytest.mark.parametrize("name", ["geoqa", "aokvqa_mc", "aokvqa_da", "mmbench", "ocrbench"])
def test_bundled_test_split_is_solvable_from_targets(name):
    task = get_task(name)
    items = task.load(BUNDLED, "test")
    assert len(items) >= 150 and len({it.id for it in items}) == len(items)
    assert all(task.score(task.extract(task.target_text(it), it), it) == 1.0 for it in items)
    train_ids = {it.id for it in task.load(BUNDLED, "train")}
    assert not train_ids & {it.id for it in items}


def test_every_declared_task_is_registered():
    assert {"geoqa", "aokvqa_mc", "aokvqa_da", "mmbench", "ocrbench"} <= set(task_names())


@pytest.mark.parametrize("name", sorted(ANNOTATIONS))
def test_missing_image_root_blocks_eval_but_not_score(name, tmp_path):
    data = tmp_path / "data"
    for rel in ANNOTATIONS[name]:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUNDLED / rel, data / rel)
    res = run_cli("eval", "--ckpt", "tiny", "--tasks", name, "--data-dir", str(data), "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 2 and "image(s) missing" in res.stderr
    assert not (tmp_path / "runs").exists()

    task = get_task(name)
    items = task.load(data, "test")[:20]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": it.id, "output": task.target_text(it)}) + "\n" for it in items))
    res = run_cli("score", "--task", name, "--predictions", str(preds), "--data-dir", str(data), "--out", str(tmp_path / "s"),
                  "--allow-missing")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["score"] == 100.0 and summary["unparsed"] == 0
