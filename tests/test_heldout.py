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


def test_heldout_board_reads_only_the_heldout_set_and_shares_only_identical_recipes():
    """leaderboards/heldout.yaml chooses the recipes: it evaluates on data/heldout, and a checkpoint
    folder it shares with the default board holds the same recipe in both (else one board would find
    the other's build stale)."""
    from harness.report.spec import load_spec

    root = DATA.parent / "leaderboards"
    held, default = load_spec(root / "heldout.yaml"), load_spec(root / "default.yaml")
    assert Path(held.data_dir).as_posix().endswith("data/heldout") and held.settings.limit
    recipes = {b.ckpt: b.recipe for c in default.checkpoints for b in c.builds() if b.recipe}
    shared = [b for c in held.checkpoints for b in c.builds() if b.recipe and b.ckpt in recipes]
    assert {Path(b.ckpt).parent.name for b in shared} >= {"sft", "sfte", "sft_small", "remgcl"}  # <row>/seed0
    for b in shared:
        assert b.recipe == recipes[b.ckpt], b.ckpt


def test_ocr_board_compares_sft_and_remgcl_on_one_recipe_and_the_fresh_items_make_writes():
    """leaderboards/ocr_full.yaml: the two rows differ in the trainer only, train every weight, and
    read the folder `make ocr-board` writes with bench/ocr_capacity.py (never a test or held-out split)."""
    from harness.report.spec import load_spec

    root = DATA.parent
    rows = {c.name: c.recipe for c in load_spec(root / "leaderboards" / "ocr_full.yaml").checkpoints if c.recipe}
    sft, remgcl = rows["sft_ocr_full"], rows["remgcl_full"]
    assert (sft["trainer"], remgcl["trainer"]) == ("sft", "remgcl")
    assert {k: v for k, v in sft.items() if k != "trainer"} == {k: v for k, v in remgcl.items() if k != "trainer"}
    assert sft["config"]["full_finetune"] is True and sft["task"] == "ocrbench"
    assert f"--write-data {sft['data_dir']}" in (root / "Makefile").read_text()


def test_ocr_probe_reads_separable_inputs_and_not_noise():
    """bench/ocr_probe.py's linear probe, on simulated inputs with known truth."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("ocr_probe", DATA.parent / "bench" / "ocr_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    g = torch.Generator().manual_seed(0)
    labels = [k % 5 for k in range(300)]
    centres = torch.randn(5, 40, generator=g) * 3
    x = centres[labels] + torch.randn(300, 40, generator=g)
    train = torch.arange(300) < 200
    assert probe.probe_accuracy(x, labels, train) >= 95.0
    noise = torch.randn(300, 40, generator=g)
    assert probe.probe_accuracy(noise, labels, train) <= 40.0  # chance is 20


def test_ocr_capacity_items_are_fresh_and_leave_out_the_held_out_words(tmp_path):
    """bench/ocr_capacity.py's training items: a train split the OCR task loads, other items than the
    bundled train split, and none of the words pretraining held out (README "The embedded default")."""
    import importlib.util

    from trainers.pretrain_data import HELD_OUT_WORDS

    spec = importlib.util.spec_from_file_location("ocr_capacity", DATA.parent / "bench" / "ocr_capacity.py")
    capacity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(capacity)
    capacity.write_items(tmp_path, 120, seed=0)
    task = get_task("ocrbench")
    items = task.load(tmp_path, "train")
    assert 80 <= len(items) < 120  # the held-out words' items are dropped, the rest kept
    assert not any(str(t).upper() in HELD_OUT_WORDS for it in items for t in it.target)
    assert all((tmp_path / "ocrbench" / "OCRBench_Images" / it.metadata["image_path"]).is_file() for it in items)
    bundled = {(it.metadata["image_path"], it.target) for it in task.load(DATA, "train")}
    fresh = [(it.metadata["image_path"], it.target) for it in items]
    assert sum(f in bundled for f in fresh) < len(fresh) / 4  # another seed: other answers under the same names


def test_ocr_capacity_scores_digit_strings_digit_by_digit(tmp_path):
    """--digits: per digit-string item, the share of gold digits at their position; other types ignored."""
    import importlib.util
    import json

    from tasks.synth import ocrbench as synth_ocr

    spec = importlib.util.spec_from_file_location("ocr_capacity", DATA.parent / "bench" / "ocr_capacity.py")
    capacity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(capacity)
    synth_ocr.build(tmp_path, "test", 30, seed=3)
    items = get_task("ocrbench").load(tmp_path, "test")
    digits = [it for it in items if it.category == "Digit String Recognition"]
    rows = []
    for k, it in enumerate(items):
        gold = it.target[0].strip()
        reply = gold if k % 2 else "X" + gold[1:]  # every other reply misses the first character
        rows.append({"id": it.id, "sample": 0, "output": reply})
    run = tmp_path / "run"
    (run / "ocrbench").mkdir(parents=True)
    (run / "ocrbench" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = capacity.digit_accuracy(run, tmp_path)
    assert set(got) == {it.id for it in digits}
    for k, it in enumerate(items):
        if it.id in got:
            n = len(it.target[0].strip())
            assert got[it.id] == (1.0 if k % 2 else (n - 1) / n)
