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


def test_sft_trains_on_replay_and_dpo_treatments_refuse_it(random_tiny, tmp_path):
    from trainers.mpo import MPOConfig
    from trainers.mpo import run as mpo_run
    from trainers.sft import SFTConfig, run

    manifest = run(SFTConfig(max_steps=1, batch_size=2, limit=8, lora_r=2, replay=0.5), str(random_tiny), "geoqa",
                   tmp_path / "sft", progress=False)
    assert manifest["data"]["replay"]["n"] == 4 and manifest["data"]["task"] == "geoqa"
    with pytest.raises(HarnessError, match="mpo: replay is not supported"):
        mpo_run(MPOConfig(max_steps=1, replay=0.5), str(random_tiny), "geoqa", tmp_path / "mpo", progress=False)
    assert not (tmp_path / "mpo").exists()
