"""The held-out set recipes are chosen on (`make heldout`): built by a committed command, in the test
layout, deterministic, and with ids disjoint from both bundled splits."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness.core.task import get_task
from tasks.synth.__main__ import build_heldout

DATA = Path(__file__).resolve().parents[1] / "data"
TASKS = ("geoqa", "aokvqa_mc", "aokvqa_da", "mmbench", "ocrbench", "critic")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("heldout")
    build_heldout(out)
    return out


@pytest.mark.parametrize("name", TASKS)
def test_heldout_ids_are_disjoint_from_test_and_train(heldout, name):
    task = get_task(name)
    held = {it.id for it in task.load(heldout, "test")}
    assert len(held) >= 60
    for split in ("test", "train"):
        try:
            bundled = {it.id for it in task.load(DATA, split)}
        except Exception:  # the critic has no train split
            assert name == "critic" and split == "train"
            continue
        assert not held & bundled, (name, split)


def test_heldout_is_deterministic_and_has_every_angle_value(heldout, tmp_path):
    build_heldout(tmp_path)
    for rel in ("geoqa/test_questions.jsonl", "ocrbench/OCRBench.json", "mmbench/MMBench_DEV_EN.tsv"):
        assert hashlib.sha256((heldout / rel).read_bytes()).digest() == hashlib.sha256((tmp_path / rel).read_bytes()).digest()
    xs = {it.metadata["x"] for it in get_task("geoqa").load(heldout, "test")}
    assert {10, 15, 75, 80} <= xs  # the cells pretraining leaves to post-training are measured here too
