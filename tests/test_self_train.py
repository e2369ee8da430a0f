"""R3V self-training (issue 8): the per-iteration data (cot, self-refine, self-select in the exact
`harness compare ... self-select` prompt, qa), a 2-iteration run whose adapters load, the leaderboard
recipe that builds every iteration once, and bad configs."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from conftest import BUNDLED
from harness.errors import HarnessError

pytest.importorskip("torch")
pytest.importorskip("trl")

TINY_RUN = dict(iterations=2, samples_per_question=3, max_steps=2, batch_size=4, limit=6, lora_r=2, logging_steps=1)


def _examples(n: int = 6):
    from harness.core.task import get_task
    from trainers.data import load_examples

    return load_examples(get_task("geoqa"), BUNDLED, limit=n)  # targets: the reference rationales


def _wrong(ex) -> str:
    letter = "ABCD"[("ABCD".index(ex.item.target) + 1) % 4]
    return f"Angles: 10°. Answer: ({letter})"


def _right(ex) -> str:
    return ex.task.target_text(ex.item)  # "Vertical angles are equal: 40°. Answer: 40°"


def _scripted(calls: list):
    """A sampler standing in for the model (a random model is never right): iteration 1 mixes right
    and wrong answers; iteration 2 gets question 0 wrong every time."""

    def sample(backend, examples, n, gen, batch_size, advance=lambda k=1: None):
        calls.append((type(backend.model).__name__, gen))
        first = len(calls) == 1
        out = []
        for i, ex in enumerate(examples):
            if i == 0 and not first:
                out.append([_wrong(ex)] * n)
            else:
                out.append(([_right(ex), _wrong(ex), f"{_right(ex)} "] if i % 2 else [_wrong(ex), _right(ex), "", _wrong(ex)])[:n])
        return out

    return sample


def _pool(examples, *iterations):
    from trainers.self_train import judge

    pool = [[] for _ in examples]
    stats = []
    for k, samples in enumerate(iterations, 1):
        judged, s = judge(examples, samples, k)
        for row, new in zip(pool, judged):
            row += new
        stats.append(s)
    return pool, stats


# --- the data of one iteration ---------------------------------------------------------------------
def test_items_cot_refine_select_structure():
    from harness.stats.selection import selection_prompt
    from trainers.self_train import QA_INSTRUCTION, REFINE_INSTRUCTION, build_items, qa_items

    examples = _examples(6)
    rows = [[_right(e), _wrong(e), _right(e), _wrong(e)] if i % 3 else [_right(e), _wrong(e), _wrong(e), ""]
            for i, e in enumerate(examples)]
    rows[5] = [_wrong(examples[5])] * 4  # never right: no item at all
    pool, (stats,) = _pool(examples, rows)
    assert stats["samples"] == 24 and stats["correct_samples"] == 3 * 2 + 2 * 1
    assert stats["sample_accuracy"] == round(8 / 24, 4) and stats["questions_with_correct"] == 5
    assert stats["unparsed"] == 2  # the empty outputs
    items = build_items(examples, pool, random.Random(0), select_per_question=2)
    kinds = Counter(it.kind for it in items)
    assert kinds == {"cot": 5, "refine": 5, "select": 3 * 2 + 2 * 1}
    assert all(it.index != 5 for it in items)

    score = lambda ex, text: ex.task.score(ex.task.extract(text, ex.item), ex.item)  # noqa: E731
    for it in items:
        ex = examples[it.index]
        if it.kind == "cot":
            assert it.prompt == ex.text and score(ex, it.target) == 1.0 and it.target_from == 1
        elif it.kind == "refine":
            (wrong,) = it.candidates
            assert wrong.score == 0.0 and wrong.text.strip() and score(ex, wrong.text) == 0.0
            assert it.prompt == f"{ex.text}\nModel's Prediction: {wrong.text}\n{REFINE_INSTRUCTION}"
            assert it.target == _right(ex) and score(ex, it.target) == 1.0  # a whole correct rationale
        else:
            texts = [c.text for c in it.candidates]
            flags = [c.score >= 1.0 for c in it.candidates]
            assert 2 <= len(texts) <= 3 and any(flags) and not all(flags)
            assert "" not in texts  # empty outputs are never shown
            # Exactly the prompt `harness compare ... self-select` asks with these candidates.
            assert it.prompt == selection_prompt(ex.task.prompt(ex.item), texts)
            assert it.target.startswith("Answer:") and score(ex, it.target) == 1.0
    # Questions with 2 right + 2 wrong get one set of each kind; with 1 right + 2 wrong only 1 + 2.
    sizes = Counter((it.index, sum(c.score >= 1 for c in it.candidates)) for it in items if it.kind == "select")
    assert sizes[(1, 2)] == 1 and sizes[(1, 1)] == 1 and sizes[(0, 1)] == 1 and (0, 2) not in sizes
    # Shuffled: the correct candidates do not always sit in the same slots.
    patterns = {tuple(c.score >= 1 for c in it.candidates) for it in items if it.kind == "select"}
    assert len(patterns) >= 3

    one = build_items(examples, pool, random.Random(0), select_per_question=1, refine=False)
    assert Counter(it.kind for it in one) == {"cot": 5, "select": 5}
    # qa: the gold answer alone, asked for in a prompt of its own (not the chain-of-thought prompt).
    qa = qa_items(examples)
    assert [score(e, it.target) for e, it in zip(examples, qa)] == [1.0] * 6
    assert all(it.target.startswith("Answer:") and it.prompt == f"{e.text}\n{QA_INSTRUCTION}" for e, it in zip(examples, qa))
    gold = qa_items(examples, "cot")
    assert [(it.prompt, it.target) for it in gold] == [(e.text, e.target) for e in examples] and not qa_items(examples, "none")


def test_later_iterations_build_from_the_pool_of_all_samples():
    from trainers.self_train import build_items

    examples = _examples(2)
    first = [[_right(examples[0]), _right(examples[0])], [_wrong(examples[1]), _right(examples[1])]]
    second = [[_wrong(examples[0])] * 2, [_right(examples[1]), _wrong(examples[1])]]
    pool, stats = _pool(examples, first, second)
    assert [s["correct_samples"] for s in stats] == [3, 1]
    items = build_items(examples, pool, random.Random(1))
    by = {(it.kind, it.index): it for it in items}
    # Question 0 was right only in iteration 1: its rationale still trains iteration 2, and the
    # refine item pairs it with iteration 2's wrong answer.
    assert by[("cot", 0)].target_from == 1 and by[("cot", 0)].target == _right(examples[0])
    assert by[("refine", 0)].candidates[0].iteration == 2 and by[("refine", 0)].target_from == 1
    # Question 1: the newest correct rationale (iteration 2) is the one learned.
    assert by[("cot", 1)].target_from == 2


def test_select_items_span_the_candidate_range_and_hold_a_right_answer():
    from trainers.self_train import build_items

    examples = _examples(6)
    pool, _ = _pool(examples, [[_right(ex), _wrong(ex), _wrong(ex), _right(ex)] for ex in examples])
    sizes = set()
    for seed in range(30):
        for it in build_items(examples, pool, random.Random(seed), 3, False, "2..10"):
            if it.kind == "select":
                assert 2 <= len(it.candidates) <= 10 and any(c.score >= 1.0 for c in it.candidates)
                assert it.prompt.count("Model's Prediction") == len(it.candidates)
                sizes.add(len(it.candidates))
    assert sizes == set(range(2, 11))


# --- a run ---------------------------------------------------------------------------------------
def test_two_iterations_write_loadable_adapters(random_tiny, tmp_path, monkeypatch):
    import trainers.sampling as sampling
    from trainers.self_train import SelfTrainConfig, run

    calls: list = []
    monkeypatch.setattr(sampling, "sample_answers", _scripted(calls))
    out = tmp_path / "st"
    manifest = run(SelfTrainConfig(**TINY_RUN), str(random_tiny), "geoqa", out, progress=False)
    # Iteration 1 samples from the base, iteration 2 from the iteration-1 adapter; R3V's settings.
    assert [c[0] for c in calls] == ["LlavaForConditionalGeneration", "PeftModelForCausalLM"]
    assert {(g.temperature, g.top_p, g.top_k) for _, g in calls} == {(0.9, 0.95, 50)}
    assert calls[0][1].seed != calls[1][1].seed
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoints"] == ["iter1", "iter2"] and manifest["evaluate"] == str(out / "iter2")
    it1, it2 = manifest["iterations"]
    assert (it1["sampled_from"], it2["sampled_from"]) == ("base", "iter1")
    assert it1["samples"] == 18 and it1["correct_samples"] == 3 * 1 + 3 * 2
    assert it2["correct_samples"] == it1["correct_samples"] - 1  # question 0 all wrong in iteration 2
    assert it1["train_items"]["qa"] == 6 and it1["train"]["steps"] == 2
    rows = {k: [json.loads(x) for x in (out / f"iter{k}" / "train_items.jsonl").read_text().splitlines()] for k in (1, 2)}
    assert len(rows[2]) == it2["train_items"]["total"] and Counter(r["kind"] for r in rows[2])["cot"] == 6
    # Iteration 2 trains on the data of both iterations: question 0's rationale is from iteration 1.
    q0 = next(r for r in rows[2] if r["kind"] == "cot" and r["id"] == rows[2][0]["id"])
    assert q0["target_from"] == 1 and {r["target_from"] for r in rows[2] if r["kind"] == "cot"} == {1, 2}
    samples = [json.loads(x) for x in (out / "iter2" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and samples[0]["scores"] == [0.0] * 3
    for k in (1, 2):
        sub = json.loads((out / f"iter{k}" / "manifest.json").read_text())
        assert sub["treatment"] == "self_train" and sub["iteration"] == k and len(sub["iterations"]) == k
    # Each iteration is a fresh LoRA on the base: the same adapter tensors, not one nested in another.
    from safetensors import safe_open

    keys = [set(safe_open(str(out / f"iter{k}" / "adapter_model.safetensors"), "pt").keys()) for k in (1, 2)]
    assert keys[0] == keys[1] and all(k.count("base_model") == 1 for k in keys[1])

    from harness.cli import main

    assert main(["eval", "--ckpt", str(out / "iter2"), "--tasks", "geoqa", "--limit", "2", "--output-dir", str(tmp_path / "runs")]) == 0
    assert json.loads((tmp_path / "runs" / "iter2" / "geoqa" / "summary.json").read_text())["n"] == 2


def test_select_passes_run_until_select_loss_reaches_the_reasoning_loss(random_tiny, tmp_path, monkeypatch):
    import trainers.sampling as sampling
    from trainers.self_train import SelfTrainConfig, run

    monkeypatch.setattr(sampling, "sample_answers", _scripted([]))
    cfg = SelfTrainConfig(**{**TINY_RUN, "iterations": 1}, select_candidates="2..10", select_extra_epochs=2)
    manifest = run(cfg, str(random_tiny), "geoqa", tmp_path / "st", progress=False)
    train = manifest["iterations"][0]["train"]
    losses = train["item_losses"]
    assert set(losses[0]) == {"cot", "select"} and len(losses) == train["select_extra_epochs"] + 1
    # A random base: select targets start above the rationales' loss, so the passes run, and lower it.
    assert losses[0]["select"] > losses[0]["cot"] and train["select_extra_epochs"] >= 1
    assert losses[-1]["select"] < losses[0]["select"]


def test_self_training_from_a_warm_up_adapter(random_tiny, tmp_path, monkeypatch):
    """R3V starts from a warm-up (SFT on distilled rationales): --base ADAPTER samples iteration 1 from
    it, and every iteration trains a fresh copy of it (its shape, not the config's lora_r)."""
    import torch
    from safetensors.torch import load_file

    import trainers.sampling as sampling

    from trainers.self_train import SelfTrainConfig, run
    from trainers.sft import SFTConfig
    from trainers.sft import run as sft_run

    warm = tmp_path / "warm"
    sft_run(SFTConfig(max_steps=2, batch_size=4, limit=6, lora_r=4), str(random_tiny), "geoqa", warm, progress=False)
    calls: list = []
    monkeypatch.setattr(sampling, "sample_answers", _scripted(calls))
    out = tmp_path / "st"
    manifest = run(SelfTrainConfig(**TINY_RUN), str(warm), "geoqa", out, progress=False)
    assert [c[0] for c in calls] == ["PeftModelForCausalLM", "PeftModelForCausalLM"]  # the warm-up, then iter1
    assert manifest["start_adapter"] == str(warm.resolve()) and manifest["iterations"][0]["sampled_from"] == "start"
    start = load_file(str(warm / "adapter_model.safetensors"))
    for k in (1, 2):
        assert json.loads((out / f"iter{k}" / "adapter_config.json").read_text())["r"] == 4
        tensors = load_file(str(out / f"iter{k}" / "adapter_model.safetensors"))
        assert set(tensors) == set(start) and any(not torch.equal(tensors[n], start[n]) for n in start)


def test_real_sampling_and_nothing_to_train_on(random_tiny, tmp_path):
    from trainers.self_train import SelfTrainConfig, run

    few = {**TINY_RUN, "iterations": 1, "limit": 3, "samples_per_question": 2, "max_new_tokens": 6}
    manifest = run(SelfTrainConfig(**few), str(random_tiny), "geoqa", tmp_path / "st", progress=False)
    (it1,) = manifest["iterations"]
    assert it1["samples"] == 6 and it1["train_items"]["qa"] == 3  # a random model's samples are scored
    with pytest.raises(HarnessError, match="nothing to train on"):
        # A random model is never right: without qa items there is no data.
        run(SelfTrainConfig(**few, qa="none"), str(random_tiny), "geoqa", tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()


def test_leaderboard_rows_share_one_build(random_tiny, tmp_path, monkeypatch):
    import trainers.sampling as sampling
    from harness.report.leaderboard import CheckpointSpec, load_spec, run_leaderboard
    from trainers.recipes import build_recipe

    monkeypatch.setattr(sampling, "sample_answers", _scripted([]))
    built = tmp_path / "built" / "self_train"
    cfg = ", ".join(f"{k}: {v}" for k, v in TINY_RUN.items())
    spec_file = tmp_path / "lb.yaml"
    spec_file.write_text(f"""
baseline: base
checkpoints:
  - {{name: base, path: {random_tiny}}}
  - name: self_train_iter1
    path: {built / 'iter1'}
    recipe: &st {{trainer: self_train, base: {random_tiny}, task: geoqa, out: {built}, config: {{{cfg}}}}}
  - {{name: self_train_iter2, path: {built / 'iter2'}, recipe: *st}}
tasks: [geoqa]
output_dir: {tmp_path / 'runs'}
limit: 2
bootstrap: 100
""")
    names: list[str] = []
    df = run_leaderboard(load_spec(spec_file), build_recipe=lambda spec: names.append(spec.name) or build_recipe(spec))
    assert names == ["self_train_iter1"]  # one build made both rows' checkpoints
    assert set(df.checkpoint) == {"base", "self_train_iter1", "self_train_iter2"}
    assert (built / "iter2" / "manifest.json").is_file() and (built / "manifest.json").is_file()

    recipe = load_spec(spec_file).checkpoints[1].recipe
    with pytest.raises(HarnessError, match="exists but has no iter3; delete"):
        build_recipe(CheckpointSpec("self_train_iter3", str(built / "iter3"), recipe))
    with pytest.raises(HarnessError, match="must lie inside the recipe's out folder"):
        build_recipe(CheckpointSpec("x", str(tmp_path / "elsewhere"), recipe))
    other = {**recipe, "out": str(tmp_path / "b2"), "config": {**TINY_RUN, "iterations": 1}}
    with pytest.raises(HarnessError, match="wrote .* but no iter2; check the recipe's config"):
        build_recipe(CheckpointSpec("self_train_iter2", str(tmp_path / "b2" / "iter2"), other))


# --- bad inputs ----------------------------------------------------------------------------------
def test_bad_configs_are_clear_errors(capsys):
    from harness.cli import main
    from trainers.common import load_config
    from trainers.self_train import SelfTrainConfig

    for overrides, message in [
        (["iterations=0"], "iterations must be >= 1"),
        (["temperature=0"], r"temperature must be in \(0, 2\]"),
        (["temperature=2.5"], r"temperature must be in \(0, 2\]"),
        (["top_p=0"], r"top_p must be in \(0, 1\]"),
        (["top_k=-1"], "top_k must be >= 0"),
        (["qa=gold"], "qa must be one of direct, cot, none"),
        (["iteration=2"], "unknown key.*iteration.*valid keys:.*iterations"),
        (["iterations=two"], "iterations='two' is not a valid int"),
        (["select_candidates=1..4"], "select_candidates must be 'LO..HI'"),
        (["select_candidates=ten"], "select_candidates must be 'LO..HI'"),
        (["select_extra_epochs=-1"], "select_extra_epochs must be >= 0"),
    ]:
        with pytest.raises(HarnessError, match=message):
            load_config(SelfTrainConfig, None, overrides)
    assert main(["train", "self_train", "--base", "tiny", "--task", "geoqa", "--out", "/nonexistent/x", "iterations=0"]) == 2
    assert "config: iterations must be >= 1" in capsys.readouterr().err
