"""Critic scoring: judge-reply parsing, order-swapped pairwise aggregation, agreement with GPT-4V
votes (scripted judges), the critic task's data, and real tiny models end to end."""
from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from conftest import BUNDLED, real_or_skip, run_cli
from harness.errors import HarnessError
from harness.models.mock import MockBackend
from harness.judge.pipeline import (Judge, JudgeSettings, agreement, combine_orders, judge_pairwise, judge_pointwise,
                           pairwise_prompt, parse_score, parse_verdict, pointwise_prompt)
from harness.core.store import GenerationCache
from harness.core.task import get_task
from tasks.critic import read_votes

VOTES = ("critic", "mllm_bench", "pairwise_votes_gpt4v_subset.json")


def ScriptedJudge(reply, content_hash: str = "scripted-1") -> MockBackend:
    """A judge replying `reply(prompt text)`; `.requests` holds what it was asked."""
    return MockBackend(lambda req: reply(req.text), name="scripted", content_hash=content_hash)


def _answers(prompt: str) -> tuple[str, ...]:
    m = re.search(r"\nAnswer1: (.*)\nAnswer2: (.*)\n", prompt)
    return m.groups() if m else (re.search(r"\nAnswer: (.*)\n", prompt).group(1),)


@pytest.fixture
def cache(tmp_path):
    c = GenerationCache(tmp_path / "cache.sqlite")
    yield c
    c.close()


@pytest.fixture(scope="module")
def items():
    return {it.id: it for it in get_task("critic").load(BUNDLED)[:4]}


# --- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("reply, expected", [
    ("85", 85), ("Score: 73/100. The colour is right.", 73), ("150, excellent", 100), ("-5: wrong", 0),
    ("\u221220 (unicode minus)", 0), ("7-8 out of 10", 7), ("0.85", 0), ("Q3 is unclear; 40", 40),
    ("99999999999999999999", 100), ("  0 ", 0), ("no number here", None), ("", None), (None, None),
])
def test_parse_score_takes_the_first_integer_clamped(reply, expected):
    assert parse_score(reply) == expected


@pytest.mark.parametrize("reply, expected", [
    ("Answer1 is better: it names the colour.", "1"), ("answer 2.", "2"), ("Answer_2", "2"), ("Tie.", "tie"),
    ("unable to decide: situation one", "tie"), ("Both are equally wrong; Answer1", "tie"),
    ("Answer2, although Answer1 is close", "2"), ("Answer12", None), ("The first one", None), ("", None),
])
def test_parse_verdict_takes_the_first_verdict(reply, expected):
    assert parse_verdict(reply) == expected


@pytest.mark.parametrize("first, swapped, expected", [
    ("1", "2", ("win", True)),      # a chosen in both orders
    ("2", "1", ("loss", True)),     # b chosen in both orders
    ("tie", "tie", ("tie", True)),
    ("1", "1", ("tie", False)),     # always the first slot: position bias, no verdict
    ("2", "2", ("tie", False)),
    ("1", "tie", ("tie", False)),
    (None, "1", (None, None)), ("2", None, (None, None)),
])
def test_a_verdict_counts_only_when_both_orders_agree(first, swapped, expected):
    assert combine_orders(first, swapped) == expected


def test_prompts_carry_question_and_answers():
    p = pointwise_prompt(" What is it? ", "A red circle.")
    assert "Question: What is it?\nAnswer: A red circle.\n" in p and "0 to 100" in p and "score first" in p
    q = pairwise_prompt("What is it?", "x", "y")
    assert "Answer1: x\nAnswer2: y\n" in q and q != pairwise_prompt("What is it?", "y", "x")


# --- pointwise aggregation with a scripted judge -----------------------------------------------
def test_pointwise_scores_missing_and_cache(items, cache, tmp_path):
    replies = {"good": "85, the answer is right", "bad": "Score: -10. Wrong.", "silent": "I cannot say."}
    backend = ScriptedJudge(lambda text: replies[_answers(text)[0]])
    samples = [{"id": "0", "sample": 0, "key": "a", "output": "good"}, {"id": "0", "sample": 1, "key": "b", "output": "bad"},
               {"id": "1", "sample": 0, "key": "c", "output": "good"}, {"id": "2", "sample": 0, "key": "d", "output": "silent"},
               {"id": "not-an-item", "sample": 0, "key": "e", "output": "good"}]
    judge = Judge(backend, cache, JudgeSettings(batch_size=2))
    result = judge_pointwise(judge, items, samples, tmp_path / "run", base={"task": "critic"})
    s = result.summary
    # item 0: (85 + 0) / 2, item 1: 85, item 2: no parsable reply -> left out, counted.
    assert result.units == {"0": pytest.approx(0.425), "1": pytest.approx(0.85)}
    assert s["score"] == pytest.approx((42.5 + 85) / 2) and s["ci_low"] <= s["score"] <= s["ci_high"]
    assert (s["n"], s["missing"], s["missing_items"], s["n_samples"], s["unparsed"]) == (2, 1, 1, 4, 1)
    assert s["categories"] == {items["0"].category: pytest.approx(42.5), items["1"].category: pytest.approx(85)}
    assert s["judge"]["hash"] == "scripted-1" and s["task"] == "critic"
    lines = [json.loads(x) for x in (tmp_path / "run" / "judgements.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"], r["score"], r["missing"]) for r in lines] == [
        ("0", 0, 85, False), ("0", 1, 0, False), ("1", 0, 85, False), ("2", 0, None, True)]
    assert lines[3]["reply"] == "I cannot say." and lines[0]["answer_key"] == "a"
    assert json.loads((tmp_path / "run" / "judged.json").read_text()) == s
    assert len(backend.requests) == 4

    # A re-run is served from the cache; another judge (content hash) is asked afresh.
    again = judge_pointwise(Judge(backend, cache), items, samples, tmp_path / "run")
    assert len(backend.requests) == 4 and again.units == result.units
    other = ScriptedJudge(lambda text: "50", content_hash="scripted-2")
    assert judge_pointwise(Judge(other, cache), items, samples, tmp_path / "run2").summary["score"] == 50.0
    assert len(other.requests) == 4


def test_pointwise_with_nothing_parsable_reports_no_score(items, cache, tmp_path):
    samples = [{"id": i, "sample": 0, "output": "x"} for i in items]
    s = judge_pointwise(Judge(ScriptedJudge(lambda t: "fine"), cache), items, samples, tmp_path).summary
    assert s["score"] is None and s["n"] == 0 and s["missing"] == len(items) == s["missing_items"]
    with pytest.raises(HarnessError, match="no answers to judge"):
        judge_pointwise(Judge(ScriptedJudge(lambda t: "1"), cache), items, [], tmp_path)


# --- pairwise aggregation with scripted verdicts ------------------------------------------------
def _fair(text: str) -> str:
    a1, a2 = _answers(text)
    if "mute" in (a1, a2):
        return "hmm"
    if a1 == a2:
        return "Tie: both are right"
    return "Answer1 is correct" if a1 == "right" else "Answer 2 names the shape"


PAIR_A = {"0": "right", "1": "wrong", "2": "right", "3": "mute"}
PAIR_B = {"0": "wrong", "1": "right", "2": "right", "3": "wrong"}


def _samples(outputs: dict[str, str]) -> list[dict]:
    return [{"id": i, "sample": 0, "output": o} for i, o in outputs.items()]


def test_pairwise_consistent_judge(items, cache, tmp_path):
    backend = ScriptedJudge(_fair)
    result = judge_pairwise(Judge(backend, cache), items, _samples(PAIR_A), _samples(PAIR_B), tmp_path / "pair")
    s = result.summary
    assert result.units == {"0": 1.0, "1": 0.0, "2": 0.5}  # win, loss, tie; item 3 missing
    assert (s["n"], s["missing"], s["missing_items"]) == (3, 1, 1)
    assert [s[f"{o}_rate"] for o in ("win", "tie", "loss")] == [pytest.approx(100 / 3)] * 3
    assert s["score"] == pytest.approx(50.0) and s["position_consistency"] == 100.0
    assert s["first_slot_rate"] == 50.0 and s["always_first"] == s["always_second"] == 0
    assert len(backend.requests) == 7  # both orders of 4 pairs; item 2's orders are one prompt, asked once
    rows = [json.loads(x) for x in (tmp_path / "pair" / "judgements.jsonl").read_text().splitlines()]
    assert [(r["verdict_ab"], r["verdict_ba"], r["outcome"]) for r in rows] == [
        ("1", "2", "win"), ("2", "1", "loss"), ("tie", "tie", "tie"), (None, None, None)]


def test_pairwise_position_biased_judge_gets_only_ties(items, cache, tmp_path):
    s = judge_pairwise(Judge(ScriptedJudge(lambda t: "Answer1"), cache), items, _samples(PAIR_A), _samples(PAIR_B),
                       tmp_path / "pair").summary
    assert s["tie_rate"] == 100.0 and s["win_rate"] == s["loss_rate"] == 0.0 and s["score"] == 50.0
    assert s["position_consistency"] == 0.0 and s["first_slot_rate"] == 100.0 and s["always_first"] == 4
    assert s["missing"] == 0


def test_pairwise_pairs_by_item_and_sample(items, cache, tmp_path):
    a = _samples(PAIR_A) + [{"id": "0", "sample": 1, "output": "right"}]
    s = judge_pairwise(Judge(ScriptedJudge(_fair), cache), items, a, _samples(PAIR_B)[:2], tmp_path).summary
    assert s["n_samples"] == 2 and s["dropped"] == 3
    with pytest.raises(HarnessError, match="share no"):
        judge_pairwise(Judge(ScriptedJudge(_fair), cache), items, _samples({"0": "x"}), _samples({"1": "y"}), tmp_path)


# --- agreement with GPT-4V's votes (real MLLM-Bench file, scripted judges) ----------------------
def _gpt4v_tables(path: Path):
    """From the raw file, independently of read_votes: per row its verdict as a model name or 'tie'."""
    rows = json.loads(path.read_text())
    winner = {r["unique_idx"]: "tie" if r["vote"].startswith("unable") else r["vote"] for r in rows}
    by_question = defaultdict(list)
    for r in rows:
        by_question[r["unique_idx"].rsplit("_", 1)[0]].append(winner[r["unique_idx"]])
    return rows, winner, by_question


def test_agreement_of_an_oracle_and_a_first_slot_judge(cache, tmp_path):
    path = real_or_skip(*VOTES)
    comparisons = read_votes(path)
    rows, winner, by_question = _gpt4v_tables(path)
    assert len(comparisons) == len(rows) == 300
    slot = {"Answer1": "Answer1", "Answer2": "Answer2"}
    oracle_replies = {pairwise_prompt(c.question, c.answer1, c.answer2): slot.get(r["answer"], "Tie")
                      for c, r in zip(comparisons, rows)}
    s = agreement(Judge(ScriptedJudge(oracle_replies.__getitem__), cache), comparisons, tmp_path / "oracle")
    consistent_q = {q for q, w in by_question.items() if len(w) == 2 and w[0] == w[1]}
    assert s["agreement"] == 100.0 and s["missing"] == 0 and s["votes"] == 300
    assert s["position_consistency"] == pytest.approx(100 * len(consistent_q) / len(by_question))
    assert s["reference_consistency"] == pytest.approx(100 * len(consistent_q) / len(by_question))
    # The order-checked verdict matches GPT-4V where GPT-4V was itself consistent, or said tie.
    swapped_ok = [r["unique_idx"].rsplit("_", 1)[0] in consistent_q or winner[r["unique_idx"]] == "tie" for r in rows]
    assert s["agreement_swapped"] == pytest.approx(100 * sum(swapped_ok) / 300)
    low, high = s["agreement_swapped_ci"]
    assert low < s["agreement_swapped"] < high

    first_slot = ScriptedJudge(lambda t: "Answer1", content_hash="scripted-first")
    first = agreement(Judge(first_slot, cache), comparisons, tmp_path / "first")
    share_first = Counter(r["answer"] for r in rows)["Answer1"] / 300
    assert first["agreement"] == pytest.approx(100 * share_first)
    assert first["agreement_ci"][0] < first["agreement"] < first["agreement_ci"][1]
    assert first["first_slot_rate"] == 100.0 and first["position_consistency"] == 0.0 and first["always_first"] == 300
    assert len(json.loads((tmp_path / "first" / "judged.json").read_text())["judge_verdicts"]) == 1
    # Per pair of models (either slot): the first-slot judge agrees exactly where GPT-4V chose answer 1.
    by_pair = defaultdict(list)
    for r in rows:
        by_pair[" vs ".join(sorted((r["model_1"], r["model_2"])))].append(r["answer"] == "Answer1")
    assert first["agreement_by_pair"] == {p: {"n": len(x), "agreement": pytest.approx(100 * sum(x) / len(x))}
                                          for p, x in by_pair.items()}
    assert by_pair and all(v["agreement"] == 100.0 for v in s["agreement_by_pair"].values())


def test_read_votes_rejects_bad_rows(tmp_path):
    (tmp_path / "images").mkdir()
    shutil.copy(BUNDLED / "critic" / "images" / "0.png", tmp_path / "images" / "0.png")
    good = {"unique_idx": "0_1", "image": "images/0.png", "raw_answer1": "a", "raw_answer2": "b",
            "question": "Q?", "answer": "Answer2"}
    path = tmp_path / "votes.json"
    path.write_text(json.dumps([good]))
    (c,) = read_votes(path)
    assert (c.reference, c.cluster, c.question, c.images) == ("2", "0", "Q?", (tmp_path / "images" / "0.png",))
    for bad, message in [({"answer": "Answer3"}, "is not Answer1"), ({"raw_answer2": None}, "raw_answer2"),
                         ({"image": "../x.png"}, "must be relative"), ({"image": "images/9.png"}, "image not found"),
                         ({"question": None, "prompt": "no block"}, "~~~Question")]:
        path.write_text(json.dumps([{**good, **bad}]))
        with pytest.raises(HarnessError, match=re.escape(message)):
            read_votes(path)


# --- the task and its data ---------------------------------------------------------------------
def test_bundled_set_is_balanced_and_reproducible(tmp_path):
    from tasks.synth import critic as synth

    task = get_task("critic")
    items = task.load(BUNDLED)
    assert len(items) == 60 and len({it.id for it in items}) == 60
    assert set(Counter(it.category for it in items).values()) == {12}
    assert all(Path(it.images[0]).is_file() and task.target_text(it) for it in items)
    assert task.extract("  A red circle. ", items[0]) == "A red circle." and task.extract(" \n", items[0]) is None
    assert task.score("anything", items[0]) == 1.0 and task.score(None, items[0]) == 0.0
    synth.build(tmp_path, "test", 60, seed=1)
    assert (tmp_path / "critic" / "questions.json").read_bytes() == (BUNDLED / "critic" / "questions.json").read_bytes()
    assert (tmp_path / "critic" / "images" / "7.png").read_bytes() == (BUNDLED / "critic" / "images" / "7.png").read_bytes()


def test_missing_images_error_or_are_skipped_on_request(tmp_path):
    shutil.copytree(BUNDLED / "critic", tmp_path / "critic")
    (tmp_path / "critic" / "images" / "3.png").unlink()
    with pytest.raises(HarnessError, match="1 of 60 question images are missing.*--questions with_images"):
        get_task("critic").load(tmp_path)
    kept = get_task("critic", questions="with_images").load(tmp_path)
    assert len(kept) == 59 and "3" not in {it.id for it in kept}


def test_real_mllm_bench_layout_loads():
    real_or_skip(*VOTES)
    data = real_or_skip()
    with pytest.raises(HarnessError, match="--questions with_images"):
        get_task("critic").load(data)
    items = get_task("critic", questions="with_images").load(data)
    assert len(items) == 150 and {it.category for it in items} <= {
        "Perception/Remembering", "Understanding", "Applying", "Analyzing", "Evaluating", "Creating"}


# --- real tiny models end to end --------------------------------------------------------------
def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_eval_pointwise_end_to_end(random_tiny, tmp_path):
    args = ("eval", "--ckpt", str(random_tiny), "--tasks", "critic", "--judge", str(random_tiny), "--limit", "3",
            "--output-dir", str(tmp_path))
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    run = tmp_path / random_tiny.name / "critic"
    assert len(_jsonl(run / "samples.jsonl")) == 3
    records = _jsonl(run / "judgements.jsonl")
    assert len(records) == 3 and all(isinstance(r["reply"], str) for r in records)
    assert all(r["score"] == parse_score(r["reply"]) and r["missing"] == (r["score"] is None) for r in records)
    s = json.loads((run / "judged.json").read_text())
    assert s["mode"] == "pointwise" and s["judge"]["hash"] == s["checkpoint"]["hash"]
    assert s["n"] + s["missing_items"] == 3 and s["missing"] == sum(r["missing"] for r in records)
    assert run_cli(*args).returncode == 0  # served from the cache
    assert _jsonl(run / "judgements.jsonl") == records


def test_score_predictions_with_a_judge(random_tiny, tmp_path):
    task = get_task("critic")
    items = task.load(BUNDLED)[:4]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": it.id, "output": task.target_text(it)}) + "\n" for it in items))
    res = run_cli("score", "--task", "critic", "--predictions", str(preds), "--judge", str(random_tiny),
                  "--out", str(tmp_path / "s"))
    assert res.returncode == 0, res.stderr
    assert [r["output"] for r in _jsonl(tmp_path / "s" / "samples.jsonl")] == [task.target_text(it) for it in items]
    assert len(_jsonl(tmp_path / "s" / "judgements.jsonl")) == 4
    s = json.loads((tmp_path / "s" / "judged.json").read_text())
    assert s["missing_predictions"] == 56 and s["n"] + s["missing_items"] == 4 and s["judge"]["name"] == random_tiny.name
    res = run_cli("score", "--task", "critic", "--predictions", str(preds), "--ci", "wilson", "--out", str(tmp_path / "w"))
    assert res.returncode == 2 and "bootstrap" in res.stderr


@pytest.fixture(scope="module")
def other_tiny(random_tiny, tmp_path_factory):
    from transformers import AutoTokenizer

    from trainers.tiny_model import build_tiny

    tok = AutoTokenizer.from_pretrained(random_tiny)
    return build_tiny("llava", tok, tmp_path_factory.mktemp("other") / "other-tiny", image_size=32, patch_size=8,
                      hidden=32, layers=1, heads=2, vision_hidden=16, vision_layers=1, vision_heads=2, seed=7)


def test_eval_pairwise_end_to_end(random_tiny, other_tiny, tmp_path):
    res = run_cli("eval", "--ckpt", str(random_tiny), "--tasks", "critic", "--vs", str(other_tiny), "--judge",
                  str(random_tiny), "--limit", "3", "--output-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / other_tiny.name / "critic" / "samples.jsonl").is_file()
    pair = tmp_path / random_tiny.name / f"critic-vs-{other_tiny.name}"
    records = _jsonl(pair / "judgements.jsonl")
    assert len(records) == 3
    for r in records:
        assert (r["verdict_ab"], r["verdict_ba"]) == (parse_verdict(r["reply_ab"]), parse_verdict(r["reply_ba"]))
        assert r["outcome"] == combine_orders(r["verdict_ab"], r["verdict_ba"])[0]
    s = json.loads((pair / "judged.json").read_text())
    assert s["mode"] == "pairwise" and s["vs"]["name"] == other_tiny.name and s["n"] + s["missing_items"] == 3
    if s["n"]:
        assert s["win_rate"] + s["tie_rate"] + s["loss_rate"] == pytest.approx(100.0)


def test_agreement_cli_with_a_tiny_judge(random_tiny, tmp_path):
    votes = real_or_skip(*VOTES)
    res = run_cli("critic", "agreement", "--judge", str(random_tiny), "--votes", str(votes), "--limit", "2",
                  "--output-dir", str(tmp_path), "--out", str(tmp_path / "agree"))
    assert res.returncode == 0, res.stderr
    s = json.loads((tmp_path / "agree" / "judged.json").read_text())
    assert s["votes"] == 2 and s["votes_file"] == str(votes) and len(_jsonl(tmp_path / "agree" / "judgements.jsonl")) == 2


@pytest.mark.parametrize("args, message", [
    (("eval", "--ckpt", "tiny", "--tasks", "geoqa", "--judge", "tiny"), "apply only to judged tasks"),
    (("critic", "agreement", "--votes", "nowhere.json"), "votes file not found"),
    (("eval", "--ckpt", "tiny", "--tasks", "critic", "--judge", "no/such/dir"), "checkpoint not found"),
])
def test_cli_bad_inputs(args, message, tmp_path):
    res = run_cli(*args, "--output-dir", str(tmp_path))
    assert res.returncode == 2 and message in res.stderr
    assert not list(tmp_path.iterdir())


def test_vs_the_same_checkpoint_is_refused(random_tiny, tmp_path):
    res = run_cli("eval", "--ckpt", str(random_tiny), "--tasks", "critic", "--vs", str(random_tiny), "--output-dir", str(tmp_path))
    assert res.returncode == 2 and "same checkpoint" in res.stderr


def test_leaderboard_gets_critic_columns(random_tiny, tmp_path, monkeypatch):
    from harness.judge import pipeline as judge_mod
    from harness.report.leaderboard import load_spec, run_leaderboard

    def scripted_ask(self, prompts, label="judge"):
        return ["Tie" if "Answer1:" in p.text else "70 good" for p in prompts]

    monkeypatch.setattr(judge_mod.Judge, "ask", scripted_ask)
    spec = tmp_path / "lb.yaml"
    spec.write_text(f"name: lb\nbaseline: base\ncheckpoints:\n  - {{name: base, path: {random_tiny}}}\n"
                    f"  - {{name: other, path: {random_tiny}}}\ntasks: [critic]\nlimit: 3\njudge: {random_tiny}\n"
                    f"output_dir: {tmp_path / 'runs'}\nbootstrap: 200\n")
    run_leaderboard(load_spec(spec))
    rows = {(r["checkpoint"], r["task"]): r for r in csv.DictReader((tmp_path / "lb" / "leaderboard.csv").open())}
    assert set(rows) == {("base", "critic"), ("other", "critic"), ("other", "critic-vs-base")}
    assert float(rows[("base", "critic")]["score"]) == 70.0 and rows[("other", "critic")]["n"] == "3"
    assert float(rows[("other", "critic-vs-base")]["score"]) == 50.0  # all ties
    assert json.loads((tmp_path / "runs" / "other" / "critic-vs-base" / "judged.json").read_text())["tie_rate"] == 100.0


def test_leaderboard_judges_seeds_rows_with_a_built_judge_and_names_its_agreement(random_tiny, tmp_path, monkeypatch):
    """A seeds row gets judged columns (one judged run per seed), the judge is built from its
    recipe like a row (but is no row), and every render names it with its gold-verdict agreement."""
    from harness.judge import pipeline as judge_mod
    from harness.report.leaderboard import load_spec, run_leaderboard

    def scripted_ask(self, prompts, label="judge"):  # agrees with every gold vote where Answer1 is the right one
        return ["Answer1" if "Answer1:" in p.text else "70 good" for p in prompts]

    built = []

    def build_recipe(c):  # stands in for the trainers: every recipe "trains" a copy of the base
        built.append(c.name)
        shutil.copytree(random_tiny, c.ckpt)

    monkeypatch.setattr(judge_mod.Judge, "ask", scripted_ask)
    spec = tmp_path / "lb.yaml"
    recipe = f"{{trainer: sft, base: {random_tiny}, task: geoqa}}"
    spec.write_text(
        f"name: lb\nbaseline: base\ncheckpoints:\n  - {{name: base, path: {random_tiny}}}\n"
        f"  - {{name: seeded, seeds: [0, 1], path: {tmp_path / 'seeded'}, recipe: {recipe}}}\n"
        f"tasks: [critic]\nlimit: 3\njudge: {{name: critic, path: {tmp_path / 'critic'}, recipe: {recipe}}}\n"
        f"output_dir: {tmp_path / 'runs'}\nbootstrap: 200\n")
    run_leaderboard(load_spec(spec), build_recipe=build_recipe)
    assert sorted(built) == ["critic", "seeded", "seeded"]
    rows = {(r["checkpoint"], r["task"]): r for r in csv.DictReader((tmp_path / "lb" / "leaderboard.csv").open())}
    assert set(rows) == {("base", "critic"), ("seeded", "critic"), ("seeded", "critic-vs-base")}
    assert float(rows[("seeded", "critic")]["score"]) == 70.0
    assert float(rows[("seeded", "critic-vs-base")]["score"]) == 50.0  # Answer1 in both orders: a tie
    for seed in (0, 1):
        assert (tmp_path / "runs" / "seeded" / f"seed{seed}" / "critic-vs-base" / "judgements.jsonl").is_file()
    agreement = json.loads((tmp_path / "runs" / "judge-agreement" / "critic" / "judged.json").read_text())
    gold = json.loads((BUNDLED / "critic" / "votes_gold.json").read_text())
    assert agreement["votes"] == len(gold) and agreement["agreement"] == pytest.approx(
        100 * sum(v["answer"] == "Answer1" for v in gold) / len(gold), abs=0.01)
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert f"judge {tmp_path / 'critic'}, agreement with {len(gold)} gold verdicts {agreement['agreement']:.1f}%" in md
    consistency = agreement["position_consistency"]
    assert f"position consistency {'n/a' if consistency is None else f'{consistency:.1f}%'}\n" in md + "\n"


def test_critic_agreement_compares_judges_on_the_bundled_gold_votes(random_tiny, tmp_path):
    """Default votes: the bundled gold verdicts; a second --judge gets a paired delta over questions."""
    other = tmp_path / "judge2"
    shutil.copytree(random_tiny, other)
    res = run_cli("critic", "agreement", "--judge", str(random_tiny), "--judge", str(other), "--limit", "8",
                  "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "runs" / "critic-agreement.json").read_text())
    (votes,) = report["votes"]
    assert votes.endswith("critic/votes_gold.json") and set(report["votes"][votes]) == {random_tiny.name, "judge2"}
    (c,) = report["comparisons"]
    assert (c["judge"], c["vs"], c["n"]) == ("judge2", random_tiny.name, 2)  # 8 votes = 2 questions x 4 pairs
    assert c["delta"] == 0.0  # the same weights judge identically
    res = run_cli("critic", "agreement", "--judge", str(random_tiny), "--judge", str(random_tiny), "--limit", "2",
                  "--output-dir", str(tmp_path / "runs2"))
    assert res.returncode == 2 and "same checkpoint twice" in res.stderr


@pytest.mark.parametrize("judge, message", [
    ("{recipe: {trainer: critic}}", "judge must be a checkpoint name or path, or {name, recipe, path}"),
    ("{name: c, recipe: {trainer: critic}, seeds: [1]}", "judge must be a checkpoint name or path"),
    ("{name: c, recipe: {task: critic}}", "a recipe needs at least a 'trainer'"),
])
def test_a_bad_judge_entry_is_one_line(tmp_path, judge, message):
    from harness.report.leaderboard import load_spec

    spec = tmp_path / "lb.yaml"
    spec.write_text(f"baseline: tiny\ncheckpoints: [tiny]\ntasks: [critic]\njudge: {judge}\n")
    with pytest.raises(HarnessError, match=re.escape(message)):
        load_spec(spec)
