"""Replay (trainers/replay.py): a share of the other tasks' train items joins a treatment's SFT data."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from harness.errors import HarnessError

DATA = Path(__file__).resolve().parents[1] / "data"


def test_replay_draws_the_share_evenly_from_the_other_tasks():
    from trainers.replay import replay_examples

    items, info = replay_examples(["geoqa"], 40, 0.5, DATA, seed=3)
    tasks = Counter(e.task.name for e in items)
    assert tasks == {"aokvqa_mc": 5, "aokvqa_da": 5, "mmbench": 5, "ocrbench": 5}
    assert info == {"share": 0.5, "n": 20, "n_per_task": dict(tasks)}
    train_ids = {name: {it.id for it in e.task.load(DATA, "train")} for name, e in {e.task.name: e for e in items}.items()}
    for e in items:  # the eval prompt and the reference reply of a train item
        assert e.text == e.task.prompt(e.item) and e.target == e.task.target_text(e.item)
        assert e.item.id in train_ids[e.task.name]
    again, _ = replay_examples(["geoqa"], 40, 0.5, DATA, seed=3)
    other, _ = replay_examples(["geoqa"], 40, 0.5, DATA, seed=4)
    assert [e.item.id for e in again] == [e.item.id for e in items] != [e.item.id for e in other]
    assert replay_examples(["geoqa"], 40, 0.0, DATA, seed=3) == ([], {})


def test_replay_tasks_are_checked():
    from trainers.common import load_config
    from trainers.replay import replay_examples
    from trainers.sft import SFTConfig

    with pytest.raises(HarnessError, match="already trains on"):
        replay_examples(["geoqa"], 10, 1.0, DATA, 0, named="geoqa,mmbench")
    with pytest.raises(HarnessError, match="unknown task"):
        replay_examples(["geoqa"], 10, 1.0, DATA, 0, named="mmbnech")
    items, info = replay_examples(["geoqa"], 10, 1.0, DATA, 0, named="mmbench")
    assert info["n_per_task"] == {"mmbench": 10}
    with pytest.raises(HarnessError, match=r"replay must be in \[0, 10\]"):
        load_config(SFTConfig, None, ["replay=-0.5"])


def test_replay_weights_split_the_share_in_proportion():
    from trainers.replay import replay_examples

    _, info = replay_examples(["ocrbench"], 40, 0.5, DATA, 0, named="geoqa:3,aokvqa_mc,aokvqa_da,mmbench")
    assert info["n_per_task"] == {"geoqa": 10, "aokvqa_mc": 4, "aokvqa_da": 3, "mmbench": 3}  # 20 x 3/6, 1/6 ...
    _, info = replay_examples(["ocrbench"], 7, 1.0, DATA, 0, named="geoqa:0.5,mmbench:1")
    assert info["n_per_task"] == {"geoqa": 2, "mmbench": 5}  # 2.33 / 4.67: the larger remainder gets the 7th
    even, _ = replay_examples(["geoqa"], 42, 0.5, DATA, 0)
    named, _ = replay_examples(["geoqa"], 42, 0.5, DATA, 0, named="aokvqa_mc:1,aokvqa_da,mmbench:1,ocrbench")
    assert [e.item.id for e in even] == [e.item.id for e in named]  # equal weights: the even split
    for bad in ("geoqa:0", "geoqa:-1", "geoqa:x", "geoqa:nan"):
        with pytest.raises(HarnessError, match="replay_tasks entry .* positive number"):
            replay_examples(["ocrbench"], 10, 1.0, DATA, 0, named=bad)


def test_replay_pairs_prefer_the_reference_by_each_tasks_rule():
    from trainers.replay import replay_examples, replay_pairs

    items, _ = replay_examples(["ocrbench"], 40, 1.0, DATA, seed=0)
    pairs = replay_pairs(items, 7, seed=0)
    assert {p.kind for p in pairs} == {"replay"} and len(pairs) >= 0.9 * len(items)
    for p in pairs:
        e = items[p.index - 7]
        assert p.chosen == e.target.strip() and p.rejected != p.chosen
        assert e.task.score(e.task.extract(p.chosen, e.item), e.item) >= 1.0
        assert e.task.score(e.task.extract(p.rejected, e.item), e.item) <= 0.0
    assert {items[p.index - 7].task.name for p in pairs} == {"geoqa", "aokvqa_mc", "aokvqa_da", "mmbench"}
    assert [(p.index, p.rejected) for p in replay_pairs(items, 7, seed=0)] == [(p.index, p.rejected) for p in pairs]


def test_sft_and_mpo_train_on_replay(random_tiny, tmp_path):
    from trainers.mpo import MPOConfig
    from trainers.mpo import run as mpo_run
    from trainers.sft import SFTConfig, run

    manifest = run(SFTConfig(max_steps=1, batch_size=2, limit=8, lora_r=2, replay=0.5), str(random_tiny), "geoqa",
                   tmp_path / "sft", progress=False)
    assert manifest["data"]["replay"]["n"] == 4 and manifest["data"]["task"] == "geoqa"
    # a random model solves nothing: gold_chosen pairs for the questions, gold pairs for the replay items
    manifest = mpo_run(MPOConfig(max_steps=1, batch_size=2, limit=4, lora_r=2, samples_per_question=2,
                                 gold_chosen=True, replay=1.0), str(random_tiny), "geoqa", tmp_path / "mpo",
                       progress=False)
    assert manifest["data"]["replay"]["n"] == 4 and manifest["data"]["given_pairs"] == 4
