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


def _base_replies(calls):
    """Stands in for the base: every other question gets one right reply and two wrong ones, the rest only wrong ones."""

    def sample(backend, examples, n, gen, batch_size, advance=lambda k=1: None):
        calls.append((type(backend.model).__name__, gen, [e.item.id for e in examples]))
        wrong = lambda e: f"Angles: 10°. Answer: ({'ABCD'[('ABCD'.index(e.item.target) + 1) % 4]})"
        return [[f"Angles. Answer: ({e.item.target})", wrong(e), wrong(e)][:n] if i % 2 else [wrong(e)] * n
                for i, e in enumerate(examples)]

    return sample


def test_select_replay_trains_select_items_over_the_bases_own_replies(random_tiny, tmp_path, monkeypatch):
    import trainers.sampling as sampling
    import trainers.sft as sft
    from harness.stats.selection import selection_prompt
    from trainers.sft import SFTConfig, run

    calls, seen = [], []

    def fit(backend, model, examples, *args, **kwargs):
        seen.extend(examples)
        return original(backend, model, examples, *args, **kwargs)

    original = sft.fit_lora_sft
    monkeypatch.setattr(sampling, "sample_answers", _base_replies(calls))
    monkeypatch.setattr(sft, "fit_lora_sft", fit)
    cfg = SFTConfig(max_steps=1, batch_size=2, limit=8, lora_r=2, select_replay=0.5, select_samples=3,
                    select_candidates="2..3")
    manifest = run(cfg, str(random_tiny), "geoqa", tmp_path / "sft", progress=False)
    # 4 of the 8 questions asked, once, of the base itself, at the configured temperature
    assert len(calls) == 1 and calls[0][0] == "LlavaForConditionalGeneration" and len(calls[0][2]) == 4
    assert (calls[0][1].temperature, calls[0][1].top_p, calls[0][1].top_k) == (1.0, 1.0, 0)
    assert manifest["data"]["select_replay"] == {"share": 0.5, "questions": 4, "samples": 12, "correct_samples": 2,
                                                 "unparsed": 0, "gold_stand_ins": 2, "items": 4}
    gold, replayed = seen[:8], seen[8:]
    assert len(replayed) == 4 and {e.item.id for e in replayed} == set(calls[0][2])
    for e in replayed:  # the compare prompt over its shown replies, one right; the target is the right reply's answer
        question = next(g for g in gold if g.item.id == e.item.id)
        shown = [line.split(": ", 1)[1] for line in e.text.splitlines() if line.startswith("Model's Prediction")]
        assert 2 <= len(shown) <= 3 and e.text == selection_prompt(question.text, shown)
        own_right = f"Angles. Answer: ({e.item.target})"
        # the base's own right reply where it has one, else the reference rationale stands in
        assert (own_right in shown) != (question.target in shown)
        assert e.target.startswith("Answer:") and e.task.score(e.task.extract(e.target, e.item), e.item) == 1.0
    with pytest.raises(HarnessError, match="select_replay must be in"):
        SFTConfig(select_replay=1.5)
    with pytest.raises(HarnessError, match="select_samples"):
        SFTConfig(select_samples=1)


def test_select_replay_without_gold_skips_the_questions_the_base_never_solves(monkeypatch):
    from types import SimpleNamespace

    import trainers.sampling as sampling
    from harness.core.task import get_task
    from trainers.data import load_examples
    from trainers.replay import select_replay
    from trainers.sft import SFTConfig

    monkeypatch.setattr(sampling, "sample_answers", _base_replies([]))
    examples = load_examples(get_task("geoqa"), DATA, limit=8)
    base = SimpleNamespace(model=SimpleNamespace(eval=lambda: None))
    data: dict = {}
    items = select_replay(base, examples, data, SFTConfig(select_replay=1.0, select_samples=3, select_gold=False))
    assert len(items) == 4 and data["select_replay"]["gold_stand_ins"] == 0
    rationale = {e.item.id: e.target for e in examples}
    assert all(rationale[e.item.id] not in e.text for e in items)  # no reference rationale shown
    assert select_replay(base, examples, data, SFTConfig()) == []  # select_replay=0: nothing sampled


def test_select_target_rationale_restates_the_first_right_candidate_whole(monkeypatch):
    from types import SimpleNamespace

    import trainers.sampling as sampling
    from harness.core.task import get_task
    from trainers.data import load_examples
    from trainers.replay import select_replay
    from trainers.self_train import SelfTrainConfig
    from trainers.sft import SFTConfig

    monkeypatch.setattr(sampling, "sample_answers", _base_replies([]))
    examples = load_examples(get_task("geoqa"), DATA, limit=8)
    base = SimpleNamespace(model=SimpleNamespace(eval=lambda: None))
    cfg = dict(select_replay=1.0, select_samples=3, select_candidates="2..4")
    answers = select_replay(base, examples, {}, SFTConfig(**cfg))
    restated = select_replay(base, examples, {}, SFTConfig(**cfg, select_target="rationale"))
    assert [e.text for e in restated] == [e.text for e in answers]  # the same prompts, only the reply differs
    for short, whole in zip(answers, restated):
        shown = [line.split(": ", 1)[1] for line in whole.text.splitlines() if line.startswith("Model's Prediction")]
        right = [s for s in shown if whole.task.score(whole.task.extract(s, whole.item), whole.item) == 1.0]
        assert whole.target == right[0] and whole.target.endswith(short.target) and short.target.startswith("Answer:")
    for config in (SFTConfig, SelfTrainConfig):
        with pytest.raises(HarnessError, match="select_target must be one of answer, rationale"):
            config(select_target="letter")
