"""`harness compare`: the exact estimators against enumeration, the self-select wiring, the CLI."""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import random
import re
from collections import Counter, defaultdict
from fractions import Fraction
from math import comb
from pathlib import Path

import pytest

from conftest import BUNDLED, REPO, run_cli
from harness.errors import HarnessError
from harness.models.mock import MockBackend
from harness.stats.selection import (
    SELECT_INSTRUCTION, best_at_n, draw_subsets, majority_at_n, parse_ns, pass_at_n, selection_prompt,
)


# --- brute force, written independently of the code under test -----------------------------------
def brute_majority(votes, value, n):
    """Average over every n-subset: the plurality answers share the subset's credit equally."""
    total, count = Fraction(0), 0
    for subset in itertools.combinations(range(len(votes)), n):
        count += 1
        tally = Counter(votes[i] for i in subset if votes[i] is not None)
        if tally:
            top = max(tally.values())
            winners = [a for a, c in tally.items() if c == top]
            total += sum(Fraction(value.get(a, 0)) for a in winners) / len(winners)
    return total / count


def brute_best(scores, n):
    subsets = list(itertools.combinations(scores, n))
    return sum(max(s) for s in subsets) / len(subsets)


# --- estimators ----------------------------------------------------------------------------------
def test_majority_vote_hand_cases():
    votes = ["A", "B", None]  # gold A; one unparsed sample
    # n=1: only the subset {A} is right; n=2: {A,B} ties (1/2), {A,-} right, {B,-} wrong; n=3: a tie.
    assert majority_at_n(votes, {"A": 1.0}, 1) == pytest.approx(1 / 3)
    assert majority_at_n(votes, {"A": 1.0}, 2) == pytest.approx((0.5 + 1 + 0) / 3)
    assert majority_at_n(votes, {"A": 1.0}, 3) == pytest.approx(0.5)
    assert majority_at_n([None, None, "A"], {"A": 1.0}, 2) == pytest.approx(2 / 3)  # {-,-} scores 0
    assert majority_at_n([None] * 4, {"A": 1.0}, 3) == 0.0
    assert majority_at_n(["B", "B", "A"], {"A": 1.0}, 3) == 0.0  # outvoted


def test_majority_vote_matches_enumeration_with_ties_and_unparsed():
    rng = random.Random(7)
    for _ in range(400):
        k = rng.randint(1, 9)
        n = rng.randint(1, k)
        votes = [rng.choice(["A", "B", "C", "D", None]) for _ in range(k)]
        # Partial credit too: two answers can be worth something (a soft-scored task).
        value = {"A": 1.0, "C": rng.choice([0.0, 0.25, 0.5])}
        assert majority_at_n(votes, value, n) == pytest.approx(float(brute_majority(votes, value, n)), abs=1e-12)


def test_majority_vote_is_exact_for_larger_k():
    votes = ["A"] * 5 + ["B"] * 5 + ["C"] * 2 + [None] * 2  # K=14, 3432 subsets at n=7
    for n in (1, 4, 7, 14):
        expected = brute_majority(votes, {"A": 1.0}, n)
        assert majority_at_n(votes, {"A": 1.0}, n) == pytest.approx(float(expected), abs=1e-12)


def test_pass_at_n_closed_form_and_best_of_n():
    assert pass_at_n(5, 2, 2) == pytest.approx(1 - 3 / 10)
    for k in range(1, 9):
        for c in range(k + 1):
            scores = [1.0] * c + [0.0] * (k - c)
            for n in range(1, k + 1):
                assert best_at_n(scores, n) == pytest.approx(1 - comb(k - c, n) / comb(k, n))
                assert pass_at_n(k, c, n) == pytest.approx(brute_best(scores, n))
    rng = random.Random(3)
    for _ in range(50):  # partial credit: expected best of the n
        scores = [rng.choice([0.0, 0.3, 0.5, 1.0]) for _ in range(rng.randint(1, 7))]
        n = rng.randint(1, len(scores))
        assert best_at_n(scores, n) == pytest.approx(brute_best(scores, n))


def test_at_one_every_method_is_the_mean_sample_score():
    votes = ["A", "B", None, "A", "C"]
    scores = [1.0 if v == "A" else 0.0 for v in votes]
    assert majority_at_n(votes, {"A": 1.0}, 1) == pytest.approx(sum(scores) / 5) == best_at_n(scores, 1)


def test_n_outside_one_to_k_is_refused():
    with pytest.raises(HarnessError, match="n=4"):
        majority_at_n(["A", "B", "C"], {"A": 1.0}, 4)
    with pytest.raises(HarnessError, match="n=0"):
        best_at_n([1.0], 0)


@pytest.mark.parametrize("spec, expected", [
    ("1..10", tuple(range(1, 11))), ("1,2,4,8", (1, 2, 4, 8)), ("3", (3,)), ("8,1..3", (1, 2, 3, 8)), (" 2 , 2 ", (2,)),
])
def test_parse_ns(spec, expected):
    assert parse_ns(spec) == expected


@pytest.mark.parametrize("spec", ["0", "5..2", "a", "", "1..x", "-1..3"])
def test_parse_ns_rejects(spec):
    with pytest.raises(HarnessError, match="--n"):
        parse_ns(spec)


def test_draw_subsets_all_or_distinct_random():
    full = draw_subsets(5, 2, 10, random.Random(0))  # C(5,2) = 10 <= 10: every subset once
    assert sorted(tuple(sorted(s)) for s in full) == list(itertools.combinations(range(5), 2))
    some = draw_subsets(6, 3, 7, random.Random(0))  # C(6,3) = 20 > 7
    assert len(some) == 7 and len({frozenset(s) for s in some}) == 7
    assert all(len(set(s)) == 3 and set(s) <= set(range(6)) for s in some)
    assert some == draw_subsets(6, 3, 7, random.Random(0))  # seeded: reproducible
    # Candidate order is shuffled, so sample 0 is not always shown first.
    assert {s[0] for s in draw_subsets(6, 3, 20, random.Random(1))} == set(range(6))


def test_selection_prompt_is_r3v_format():
    text = selection_prompt("Q?\nChoices:\n(A) 1\n(B) 2", ["so 1. Answer: A", "Answer: (B)"])
    lines = text.split("\n")
    assert lines[:3] == ["Q?", "Choices:", "(A) 1"]
    assert lines[4:] == ["Model's Prediction 1: so 1. Answer: A", "Model's Prediction 2: Answer: (B)", SELECT_INSTRUCTION]
    assert SELECT_INSTRUCTION.startswith("Which prediction is correct?")


def test_selection_reply_without_marker_is_read_as_the_answer():
    from harness.core.task import get_task
    from harness.stats.selection import read_selection

    task = get_task("geoqa")
    item = task.load(BUNDLED, "test")[0]
    gold = item.target
    value = item.choices["ABCD".index(gold)]
    other = next(c for c in item.choices if c != value)
    assert task.extract(value, item) is None  # strict extraction needs the marker
    assert read_selection(task, value, item) == gold  # the bare value of the chosen option
    assert read_selection(task, f"({gold})", item) == gold
    assert read_selection(task, f"Answer: {other}", item) != gold  # with the marker: as the task reads it
    assert read_selection(task, f"I think {value}. The answer is unclear", item) is None
    assert read_selection(task, "   ", item) is None


def test_monte_carlo_variance():
    from harness.self_select import _mc_variance

    assert _mc_variance([1.0, 0.0, 1.0], 3) == 0.0  # every subset asked
    # s^2 = 1/3, R = 4, 10 subsets: (1/3) / 4 * (1 - 4/10)
    assert _mc_variance([1.0, 0.0, 1.0, 0.0], 10) == pytest.approx(1 / 3 / 4 * 0.6)


def test_curve_frame_groups_and_paired_delta():
    from harness.commands.compare import CompareConfig, curve_frame
    from harness.stats.selection import MethodCurve
    from harness.core.types import Item

    items = {i: Item(i, "q", "A", group=g) for i, g in [("a1", "g"), ("a2", "g"), ("b", "")]}
    results = {
        "majority-vote": {1: MethodCurve({"a1": 1.0, "a2": 0.0, "b": 1.0})},
        "self-select": {1: MethodCurve({"a1": 0.0, "a2": 0.0, "b": 0.5}, {"b": 0.01})},
    }
    df = curve_frame(results, items, CompareConfig(ns=(1,), bootstrap=500))
    mv, ss = df.to_dict("records")
    assert mv["score"] == pytest.approx(100 * (0.5 + 1.0) / 2)  # a group weighs one unit
    assert ss["score"] == pytest.approx(100 * (0.0 + 0.5) / 2)
    assert ss["delta"] == pytest.approx(ss["score"] - mv["score"])
    assert ss["delta_ci_low"] <= ss["delta"] <= ss["delta_ci_high"]
    assert ss["mc_se"] == pytest.approx(100 * (0.01 ** 0.5) / 2) and mv["mc_se"] == 0


# --- self-select wiring with a scripted model --------------------------------------------------------
def _scripted_reply(req) -> str:
    """Selection prompts pick the smallest candidate letter; sampling prompts draw from the prompt
    text and seed."""
    if "Model's Prediction 1:" in req.text:
        letters = re.findall(r"Model's Prediction \d+: Answer: ([A-D])", req.text)
        return f"Answer: {min(letters)}" if letters else "no idea"
    rng = random.Random(hashlib.sha256(f"{req.text}{req.gen.seed}".encode()).hexdigest())
    options = ["Answer: A", "Answer: B", "Answer: C", "hmm"]
    return [rng.choice(options) for _ in range(req.k + 1)][-1]  # the k-th of one seeded sequence per prompt


def ScriptedBackend() -> MockBackend:
    return MockBackend(_scripted_reply, name="scripted", content_hash="scripted-v1")


def _scripted_run(tmp_path, backend, subsets, ns=(1, 2, 3, 4), k=4):
    from harness.commands.compare import CompareConfig, compare, draw_samples, make_methods
    from harness.self_select import ModelContext
    from harness.core.store import GenerationCache
    from harness.core.task import get_task

    task = get_task("geoqa")
    items = task.load(BUNDLED, "test")[:10]
    config = CompareConfig(ns=ns, samples=k, subsets=subsets, bootstrap=300)
    cache = GenerationCache(tmp_path / "cache.sqlite")
    try:
        pool = draw_samples(backend, task, items, config, tmp_path / "run", cache, BUNDLED)
        ctx = ModelContext(backend, cache, tmp_path / "run", batch_size=4)
        df, results = compare(pool, make_methods(["majority-vote", "self-select"], config), config, ctx)
    finally:
        cache.close()
    return pool, df, results


def _letter(output):
    m = re.fullmatch(r"Answer: ([A-D])", output)
    return m.group(1) if m else None


def test_self_select_with_every_subset_matches_enumeration(tmp_path):
    backend = ScriptedBackend()
    pool, df, results = _scripted_run(tmp_path, backend, subsets=6)  # C(4, n) <= 6 for every n
    assert sum(len(rs) for rs in pool.samples.values()) == 40
    logged = [json.loads(line) for line in (tmp_path / "run" / "self_select" / "samples.jsonl").read_text().splitlines()]
    # One request per distinct prompt: subsets showing identical samples in the same order share it.
    assert len({r["id"] for r in logged}) == len(logged) <= 10 * sum(comb(4, n) for n in (1, 2, 3, 4))
    for n in (1, 2, 3, 4):
        expected, mv_expected = {}, {}
        for item_id, records in pool.samples.items():
            gold = pool.items[item_id].target
            letters = [_letter(r["output"]) for r in records]
            picks = [min([x for x in s if x] or ["-"]) for s in itertools.combinations(letters, n)]
            expected[item_id] = sum(p == gold for p in picks) / len(picks)
            mv_expected[item_id] = float(brute_majority(letters, {gold: 1.0}, n))
        assert results["self-select"][n].scores == pytest.approx(expected)
        assert results["majority-vote"][n].scores == pytest.approx(mv_expected)
        row = df[(df.n == n) & (df.method == "self-select")].iloc[0]
        assert row["score"] == pytest.approx(100 * sum(expected.values()) / 10)
        assert row["mc_se"] == 0  # exact: every subset asked
    assert (df[df.method == "pass@n"].score.values >= df[df.method == "majority-vote"].score.values - 1e-9).all()

    calls = backend.calls
    _, again, _ = _scripted_run(tmp_path, backend, subsets=6)
    assert backend.calls == calls  # samples and selections all come back from the log and cache
    assert again.equals(df)


def test_self_select_with_sampled_subsets_reports_mc_error(tmp_path):
    _, df, results = _scripted_run(tmp_path, ScriptedBackend(), subsets=2, ns=(2,))
    logged = (tmp_path / "run" / "self_select" / "samples.jsonl").read_text().splitlines()
    assert len(logged) <= 10 * 2  # C(4,2) = 6 > 2: two subsets per item
    scores = results["self-select"][2].scores
    assert set(scores.values()) <= {0.0, 0.5, 1.0}  # the mean of two 0/1 picks
    # Two of six subsets without replacement: var = s^2 / 2 * (1 - 2/6), s^2 = (x1 - x2)^2 / 2,
    # and (x1 - x2)^2 is 1 exactly when the two picks disagree (mean 0.5).
    var = {i: (m == 0.5) / 2 / 2 * (1 - 2 / 6) for i, m in scores.items()}
    assert results["self-select"][2].mc_var == pytest.approx(var)
    row = df[df.method == "self-select"].iloc[0]
    assert row["mc_se"] == pytest.approx(100 * sum(var.values()) ** 0.5 / 10)


def test_self_select_likelihood_picks_among_the_candidates_answers(tmp_path):
    """The reply is the subset's candidate answer the model finds likeliest (here: the largest
    letter), never a value outside the candidates; a subset with one distinct answer asks nothing."""
    from harness.commands.compare import CompareConfig, compare, draw_samples, make_methods
    from harness.core.store import GenerationCache
    from harness.core.task import get_task
    from harness.self_select import ModelContext

    seen_prompts = []

    def losses(prompt, choices):
        seen_prompts.append(prompt.text)
        return [-float(ord(_letter(c))) for c in choices]

    backend = MockBackend(_scripted_reply, name="scripted", content_hash="scripted-v1", losses=losses)
    task = get_task("geoqa")
    config = CompareConfig(ns=(1, 2, 3, 4), samples=4, subsets=6, bootstrap=300)
    cache = GenerationCache(tmp_path / "cache.sqlite")
    try:
        pool = draw_samples(backend, task, task.load(BUNDLED, "test")[:10], config, tmp_path / "run", cache, BUNDLED)
        ctx = ModelContext(backend, cache, tmp_path / "run", batch_size=4)
        _, results = compare(pool, make_methods(["self-select-likelihood"], config), config, ctx)
    finally:
        cache.close()
    logged = [json.loads(line) for line in (tmp_path / "run" / "self_select_likelihood" / "samples.jsonl").read_text().splitlines()]
    asked = 0
    for n in (1, 2, 3, 4):
        expected = {}
        for item_id, records in pool.samples.items():
            letters = [_letter(r["output"]) for r in records]
            subsets = list(itertools.combinations(letters, n))
            asked += sum(len({x for x in s if x}) >= 2 for s in subsets)
            picks = [max([x for x in s if x] or ["-"]) for s in subsets]
            expected[item_id] = sum(p == pool.items[item_id].target for p in picks) / len(picks)
        assert results["self-select-likelihood"][n].scores == pytest.approx(expected)
    assert 0 < len(logged) <= asked  # only subsets with two answers or more went to the model
    assert all(r["output"] in {f"Answer: {x}" for x in "ABCD"} for r in logged)
    assert seen_prompts and all("Model's Prediction 1:" in t for t in seen_prompts)

    # max-likelihood: the same choice asked with the question alone (here the script prefers "A",
    # then the largest letter).
    seen_prompts.clear()

    def prefer_a(prompt, choices):
        seen_prompts.append(prompt.text)
        return [0.0 if c == "Answer: A" else 100.0 - ord(_letter(c)) for c in choices]

    backend.losses = prefer_a
    cache = GenerationCache(tmp_path / "cache.sqlite")
    try:
        _, control = compare(pool, make_methods(["max-likelihood"], config), config,
                             ModelContext(backend, cache, tmp_path / "run", batch_size=4))
    finally:
        cache.close()
    assert seen_prompts and not any("Model's Prediction" in t for t in seen_prompts)
    for item_id, records in pool.samples.items():
        letters = [_letter(r["output"]) for r in records]
        picks = []
        for subset in itertools.combinations(letters, 2):
            shown = [x for x in subset if x]
            picks.append("A" if "A" in shown else max(shown or ["-"]))
        assert control["max-likelihood"][2].scores[item_id] == pytest.approx(
            sum(p == pool.items[item_id].target for p in picks) / len(picks))


# --- the command line ------------------------------------------------------------------------------
def _write_predictions(path: Path, k: int = 5, n_items: int = 12) -> tuple[Path, dict[str, list[str | None]], dict[str, str]]:
    answers = [json.loads(line) for line in (BUNDLED / "geoqa" / "test_answers.jsonl").read_text().splitlines()][:n_items]
    rng = random.Random(11)
    votes, gold, rows = {}, {}, []
    for a in answers:
        qid = str(a["question_id"])
        gold[qid] = a["text"]
        votes[qid] = [rng.choice(["A", "B", "C", "D", None]) for _ in range(k)]
        for s, v in enumerate(votes[qid]):
            rows.append({"id": a["question_id"], "sample": s, "output": f"It is so. Answer: ({v})" if v else "no clue"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, votes, gold


def test_predictions_curve_without_a_model(tmp_path):
    preds, votes, gold = _write_predictions(tmp_path / "preds.jsonl")
    out = tmp_path / "out"
    res = run_cli("compare", "majority-vote", "--task", "geoqa", "--predictions", str(preds), "--n", "1..5",
                  "--out", str(out), "--bootstrap", "500")
    assert res.returncode == 0, res.stderr
    with (out / "curve.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[:5] == ["n", "method", "score", "ci_low", "ci_high"]
        rows = list(reader)
    assert [(int(r["n"]), r["method"]) for r in rows] == [(n, m) for n in range(1, 6) for m in ("majority-vote", "pass@n")]
    for r in rows:
        n = int(r["n"])
        if r["method"] == "majority-vote":
            expected = sum(float(brute_majority(votes[i], {gold[i]: 1.0}, n)) for i in votes) / len(votes)
        else:
            expected = sum(brute_best([float(v == gold[i]) for v in votes[i]], n) for i in votes) / len(votes)
        assert float(r["score"]) == pytest.approx(100 * expected, abs=1e-3)
        assert float(r["ci_low"]) <= float(r["score"]) <= float(r["ci_high"])
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 5 | pass@n |" in (out / "curve.md").read_text()
    per_item = list(csv.DictReader((out / "per_item.csv").open()))
    assert len(per_item) == 5 * 2 * len(votes)
    meta = json.loads((out / "compare.json").read_text())
    assert meta["k"] == 5 and meta["items"] == len(votes) and meta["missing"] == 300 - len(votes)


@pytest.mark.parametrize("args, message", [
    (["majority-vote", "--n", "1..6"], "n=6 is larger than K=5"),
    (["self-select", "--n", "1..3"], "needs a model"),
    (["majority-vote", "--n", "4..2"], "runs backwards"),
    (["best-guess", "--n", "2"], "unknown method 'best-guess'; choose from majority-vote, self-select, self-select-likelihood, max-likelihood, pass@n"),
])
def test_compare_bad_inputs_exit_2(tmp_path, args, message):
    preds, _, _ = _write_predictions(tmp_path / "preds.jsonl")
    res = run_cli("compare", *args, "--task", "geoqa", "--predictions", str(preds), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_samples_smaller_than_n_is_refused():
    from harness.commands.compare import CompareConfig
    from harness.core.runner import EvalSettings
    from harness.core.types import GenConfig

    with pytest.raises(HarnessError, match="n=10 is larger than --samples K=4"):
        CompareConfig(ns=tuple(range(1, 11)), samples=4)
    with pytest.raises(HarnessError, match="temperature"):
        CompareConfig(ns=(1, 2), settings=EvalSettings(gen=GenConfig(temperature=0.0)))


def _checkpoint(random_tiny) -> Path:
    tiny = REPO / "checkpoints" / "tiny"
    return tiny if (tiny / "manifest.json").is_file() else random_tiny  # the trained one once it exists


def test_end_to_end_with_a_tiny_vlm(random_tiny, tmp_path, capsys):
    from harness.cli import main

    ckpt = _checkpoint(random_tiny)
    argv = ["compare", "majority-vote", "self-select", "--ckpt", "tiny" if ckpt.name == "tiny" else str(ckpt),
            "--task", "geoqa", "--n", "1,2,4", "--limit", "6", "--subsets", "3", "--batch-size", "8",
            "--output-dir", str(tmp_path), "--bootstrap", "500"]
    assert main(argv) == 0
    run = tmp_path / "compare" / ckpt.name / "geoqa"
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 * 4 and {r["sample"] for r in samples} == {0, 1, 2, 3}
    selections = (run / "self_select" / "samples.jsonl").read_text().splitlines()
    # min(C(4, n), 3) subsets per item for n = 1, 2, 4; identical prompts are asked once.
    assert 6 <= len(selections) <= 6 * (3 + 3 + 1)
    rows = list(csv.DictReader((run / "curve.csv").open()))
    assert [(r["n"], r["method"]) for r in rows] == [
        (str(n), m) for n in (1, 2, 4) for m in ("majority-vote", "self-select", "pass@n")]
    by_id = defaultdict(list)
    for r in sorted(samples, key=lambda r: r["sample"]):
        by_id[r["id"]].append(r)

    def majority(rs, n):
        value = {x["extracted"]: x["score"] for x in rs if x["extracted"] is not None}
        return float(brute_majority([x["extracted"] for x in rs], value, n))

    for r in rows:  # the exact curves, recomputed here from the logged samples
        n = int(r["n"])
        if r["method"] == "majority-vote":
            expected = sum(majority(rs, n) for rs in by_id.values())
        elif r["method"] == "pass@n":
            expected = sum(brute_best([x["score"] for x in rs], n) for rs in by_id.values())
        else:
            assert 0 <= float(r["score"]) <= 100 and float(r["mc_se"]) >= 0
            continue
        assert float(r["score"]) == pytest.approx(100 * expected / 6, abs=1e-3)
    assert (run / "curve.png").is_file() and (run / "curve.md").is_file()
    assert "self-select" in capsys.readouterr().out


@pytest.mark.slow
def test_self_select_with_a_shared_question_prefix_gives_the_same_replies(tmp_path):
    """The tiny model's self-select replies with each question's prefix prefilled once (batched by
    question) equal those of whole prompts batched by length, prompt by prompt (temperature 0)."""
    from harness.commands.compare import CompareConfig, draw_samples
    from harness.core.store import GenerationCache
    from harness.core.task import get_task
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.self_select import ModelContext, SelfSelect

    task = get_task("geoqa")
    items = task.load(BUNDLED, "test")[:3]
    backend = HFBackend(resolve_checkpoint("tiny"), device="cpu")
    config = CompareConfig(ns=(1, 2, 4), samples=4, subsets=3)
    replies = {}
    for share in (True, False):
        run = tmp_path / str(share)
        cache = GenerationCache(run / "cache.sqlite")  # each its own: nothing read back
        try:
            pool = draw_samples(backend, task, items, config, run, cache, BUNDLED)
            ctx = ModelContext(backend, cache, run, batch_size=4)
            SelfSelect(subsets=3, share_prefix=share).curve(pool, config.ns, ctx)
        finally:
            cache.close()
        replies[share] = {json.loads(line)["id"]: json.loads(line)["output"]
                          for line in (run / "self_select" / "samples.jsonl").read_text().splitlines()}
    assert len(replies[True]) >= 9 and len(set(replies[True].values())) > 1
    assert replies[True] == replies[False]
