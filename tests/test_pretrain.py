"""The base's pretraining (trainers/pretrain_data.py, trainers/pretrain_tiny.py): every format is the
one the harness sends, verdicts and scores come from gold, held-out cells stay out, numbers are
tokenized digit by digit, and a stopped run resumes to the same weights as an unbroken one."""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from trainers.pretrain_data import (
    FORMATS, HELD_OUT_WORDS, MAKERS, _select, draw_batch, held_out, load_sources,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return load_sources(tmp_path_factory.mktemp("pool"), scale=0.1, seed=5)


def test_held_out_cells_never_reach_pretraining(sources):
    assert all(not held_out(name, s.item) for name, rows in sources.items() for s in rows)
    assert not any(s.item.category == "position" for s in sources["aokvqa_mc"])
    assert not any(s.item.category == "physical_relation" for s in sources["mmbench"])
    words = {str(a).upper() for s in sources["ocrbench"] for a in s.item.target}
    assert not words & set(HELD_OUT_WORDS)
    assert {s.item.metadata["x"] for s in sources["geoqa"]} <= {20, 25, 35, 40, 50, 55, 65, 70}


def test_right_and_wrong_replies_are_scored_by_the_task(sources):
    for name, rows in sources.items():
        for s in rows[:20]:
            assert s.right, (name, s.item.id)
            for r in s.right:
                assert s.task.score(s.task.extract(r, s.item), s.item) == 1.0
            for w in s.wrong:
                assert s.task.score(s.task.extract(w, s.item), s.item) == 0.0


def test_selection_prompt_is_the_one_compare_sends_and_its_target_is_gold(sources):
    from harness.stats.selection import read_selection, selection_prompt

    rng = random.Random(0)
    seen_counts, all_wrong = set(), 0
    for s in sources["geoqa"][:200]:
        ex = _select(s, "geoqa", rng)
        shown = [line.split(": ", 1)[1] for line in ex.text.split("\n") if line.startswith("Model's Prediction")]
        assert ex.text == selection_prompt(s.prompt, shown)
        seen_counts.add(len(shown))
        all_wrong += all(c in s.wrong for c in shown)
        assert s.task.score(read_selection(s.task, ex.target, s.item), s.item) == 1.0
    assert seen_counts == set(range(1, 11))
    assert all_wrong > 0  # before select_right_from: any share of right candidates, none included
    for s in sources["geoqa"][:200]:  # from select_right_from on: R3V's setup, at least one right
        ex = _select(s, "geoqa", rng, needs_right=True)
        shown = [line.split(": ", 1)[1] for line in ex.text.split("\n") if line.startswith("Model's Prediction")]
        assert any(c in s.right for c in shown) and ex.text == selection_prompt(s.prompt, shown)


def test_judging_targets_follow_gold(sources):
    from harness.judge.pipeline import parse_score, parse_verdict

    rng = random.Random(1)
    verdicts = set()
    for name, rows in sources.items():
        for s in rows[:30]:
            pair = MAKERS["pair"](s, name, rng)
            if pair is not None:
                a = pair.text.split("\nAnswer1: ", 1)[1].split("\nAnswer2: ", 1)[0]
                b = pair.text.split("\nAnswer2: ", 1)[1].split("\n", 1)[0]
                right_a, right_b = a in s.right, b in s.right
                want = "tie" if right_a == right_b else "1" if right_a else "2"
                assert parse_verdict(pair.target) == want
                verdicts.add(want)
            point = MAKERS["point"](s, name, rng)
            answer = point.text.split("\nAnswer: ", 1)[1].split("\n", 1)[0]
            assert parse_score(point.target) == round(100 * s.task.score(s.task.extract(answer, s.item), s.item))
    assert verdicts == {"1", "2", "tie"}


def test_batches_hold_one_format_and_every_format_is_drawn(sources):
    rng = random.Random(2)
    formats = set()
    for _ in range(300):
        batch = draw_batch(sources, rng, 4)
        assert len({e.key for e in batch}) == 1
        formats.add(batch[0].format)
    assert formats == set(FORMATS)
    assert {e.category for e in draw_batch(sources, rng, 8, curriculum=True)} == {"color_single"}


def test_own_samples_become_selection_candidates_split_by_the_task_rule(sources):
    """The second stage's selection items show the base's own sampled replies: each is filed right
    or wrong by the task's own rule, only those replies (or gold where it has no right one) are
    shown, at least one right, and the target stays the gold final answer."""
    from harness.stats.selection import read_selection
    from trainers.pretrain_data import attach_own, sample_own

    rows = [copy.copy(s) for s in sources["geoqa"][:12]]
    for s in rows:
        s.own_right, s.own_wrong = [], []
    x = rows[0].item.metadata["x"]

    asked = iter(rows)

    class Sampler:  # a model whose samples are known: the gold final answer, a slip, a value in no choice
        def generate_images(self, texts, images, gen, n=1):
            assert gen.temperature == 1.0 and n == 3
            part = [next(asked) for _ in texts]
            assert [s.prompt for s in part] == list(texts)
            return [[s.right[-1], f"angle = {x}°. Answer: 999°", s.right[-1]] for s in part]

    samples = sample_own(Sampler(), rows, 3, seed=0, batch=5)
    assert list(samples) == [s.item.id for s in rows]
    attach_own(rows, samples)
    for s in rows:
        assert s.own_right == [s.right[-1]] and s.own_wrong == [f"angle = {x}°. Answer: 999°"]
    rows[1].own_right = []  # no right sample: gold stands in, so a right candidate is still shown
    rng = random.Random(3)
    for s in rows:
        ex = _select(s, "geoqa", rng, n=4, needs_right=True, own=True)
        shown = [line.split(": ", 1)[1] for line in ex.text.split("\n") if line.startswith("Model's Prediction")]
        allowed = (s.own_right or s.right) + s.own_wrong
        assert len(shown) == 4 and all(c in allowed for c in shown)
        assert any(s.task.score(s.task.extract(c, s.item), s.item) == 1.0 for c in shown)
        assert s.task.score(read_selection(s.task, ex.target, s.item), s.item) == 1.0
    pool = {**sources, "geoqa": rows + sources["geoqa"][12:]}
    only_select = {f: float(f == "select") for f in FORMATS}
    geo_only = {"geoqa": 1.0, "aokvqa_mc": 0.0, "aokvqa_da": 0.0, "mmbench": 0.0, "ocrbench": 0.0}
    for _ in range(5):  # own_share 1: every selection batch is drawn from the items with own samples
        batch = draw_batch(pool, rng, 6, format_weights=only_select, task_weights=geo_only, own_share=1.0)
        shown = [line.split(": ", 1)[1] for e in batch for line in e.text.split("\n") if line.startswith("Model's")]
        assert set(shown) <= {c for s in rows for c in (s.own_right or s.right) + s.own_wrong}


def test_a_mix_flag_overrides_named_weights_and_refuses_bad_ones():
    from harness.errors import HarnessError
    from trainers.pretrain_data import FORMAT_WEIGHTS, parse_weights

    mix = parse_weights("select=0.3, pair=0.2", FORMAT_WEIGHTS, "mix")
    assert mix == {**FORMAT_WEIGHTS, "select": 0.3, "pair": 0.2}
    for bad in ("selekt=0.3", "select=-1", "select=much", "select"):
        with pytest.raises(HarnessError, match="--mix .*NAME=WEIGHT"):
            parse_weights(bad, FORMAT_WEIGHTS, "mix")
    with pytest.raises(HarnessError, match="every weight is 0"):
        parse_weights(",".join(f"{f}=0" for f in FORMAT_WEIGHTS), FORMAT_WEIGHTS, "mix")


def test_numbers_are_tokenized_digit_by_digit():
    from trainers.tiny_model import build_tokenizer

    tok = build_tokenizer(["angle 1 = 80.0, then 180° - 80° = 100°"] * 40, vocab_size=300)
    assert [t for t in tok.tokenize("165°") if t.isdigit()] == ["1", "6", "5"]
    assert tok.decode(tok("Answer: 165°")["input_ids"], skip_special_tokens=True) == "Answer: 165°"


def test_a_paused_run_resumes_to_the_same_weights(tmp_path: Path):
    from safetensors.torch import load_file

    from trainers.pretrain_tiny import PretrainConfig, state_dir, train

    small = dict(steps=4, pool_scale=0.05, batch_size=2, hidden=32, layers=1, vision_hidden=32, vision_layers=1,
                 vocab_size=400, eval_every=100, eval_items=2, save_every=2, curriculum_steps=1, image_size=32)
    whole = train(tmp_path / "whole", PretrainConfig(**small))
    assert whole["steps"] == 4 and "held_out" in whole and (tmp_path / "whole" / "manifest.json").is_file()
    assert train(tmp_path / "split", PretrainConfig(**small, pause_at=2)) is None
    assert not (tmp_path / "split").exists() and (state_dir(tmp_path / "split") / "state.json").is_file()
    train(tmp_path / "split", PretrainConfig(**small))
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "split" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)



def test_a_run_killed_between_the_state_renames_resumes_from_the_previous_state(tmp_path: Path, capsys):
    import os

    from trainers.pretrain_tiny import PretrainConfig, state_dir, train

    small = dict(steps=4, pool_scale=0.05, batch_size=2, hidden=32, layers=1, vision_hidden=32, vision_layers=1,
                 vocab_size=400, eval_every=100, eval_items=2, save_every=2, curriculum_steps=1, image_size=32)
    out = tmp_path / "tiny"
    assert train(out, PretrainConfig(**small, pause_at=2)) is None
    sdir = state_dir(out)
    os.replace(sdir, sdir.with_name(sdir.name + ".old"))  # what a kill between the two renames leaves
    capsys.readouterr()
    assert train(out, PretrainConfig(**small))["steps"] == 4
    assert "resuming at step 2" in capsys.readouterr().out


def test_a_pruned_base_keeps_the_chosen_layers_renumbered_and_trains_on(tmp_path: Path):
    """--init-from/--keep-layers: a shallower base starts from a trained one's weights, layer k of the
    kept list becoming layer k; every other weight is carried over unchanged."""
    from safetensors.torch import load_file

    from harness.errors import HarnessError
    from trainers.pretrain_tiny import PretrainConfig, pruned_copy, train

    small = dict(steps=2, pool_scale=0.05, batch_size=2, hidden=32, layers=3, vision_hidden=32, vision_layers=1,
                 vocab_size=400, eval_every=100, eval_items=2, save_every=2, curriculum_steps=1, image_size=32)
    deep_manifest = train(tmp_path / "deep", PretrainConfig(**small))
    pruned_copy(tmp_path / "deep", tmp_path / "shallow", [0, 2])
    deep, shallow = load_file(tmp_path / "deep" / "model.safetensors"), load_file(tmp_path / "shallow" / "model.safetensors")
    layer = "language_model.model.layers."
    for key, tensor in shallow.items():
        source = key.replace(f"{layer}1.", f"{layer}2.") if key.startswith(f"{layer}1.") else key
        assert (deep[source] == tensor).all(), key
    assert not any(k.startswith(f"{layer}2.") for k in shallow)
    assert len(shallow) == len(deep) - sum(k.startswith(f"{layer}1.") for k in deep)
    with pytest.raises(HarnessError, match="keep-layers 0,3"):
        pruned_copy(tmp_path / "deep", tmp_path / "bad", [0, 3])
    done = train(tmp_path / "cont", PretrainConfig(**{**small, "init_from": str(tmp_path / "deep"), "keep_layers": "1"}))
    assert done["steps"] == 2 and done["parameters"] < deep_manifest["parameters"]
    assert done["init"]["history"] == deep_manifest["history"] and done["config"]["keep_layers"] == "1"
    assert json.loads((tmp_path / "cont" / "config.json").read_text())["text_config"]["num_hidden_layers"] == 1
