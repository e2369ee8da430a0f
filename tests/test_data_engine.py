"""MLLM-DataEngine (issue 8): the sampling proportions are exact and pure, generated items are
deterministic per (seed, round, type), and short runs write weight.json, per-type errors before and
after, and an adapter that `harness eval` loads."""
from __future__ import annotations

import json
import random

import pytest

from conftest import BUNDLED, run_cli
from harness.errors import HarnessError

pytest.importorskip("torch")
pytest.importorskip("trl")

RATES = {"vertical": 0.75, "supplementary": 0.4, "complementary": 0.12, "central": 0.07}


# --- proportions -----------------------------------------------------------------------------------
def test_allocate_is_proportional_with_largest_remainders():
    from trainers.data_engine import allocate, sampling_weights

    # quotas 100 * r / 1.34 = 55.97, 29.85, 8.96, 5.22: floors 55+29+8+5 = 97, the three largest
    # remainders (.97, .96, .85) get one more each.
    assert allocate(100, RATES) == {"vertical": 56, "supplementary": 30, "complementary": 9, "central": 5}
    assert sampling_weights(RATES)["vertical"] == pytest.approx(0.75 / 1.34)
    # smoothing 0.1: (0.85, 0.5, 0.22, 0.17) / 1.74 * 10 = 4.89, 2.87, 1.26, 0.98 -> 4, 2, 1, 0 + 3 by remainder
    assert allocate(10, RATES, smoothing=0.1) == {"vertical": 5, "supplementary": 3, "complementary": 1, "central": 1}
    # Nothing wrong: uniform; equal remainders go to the types listed first.
    assert allocate(10, dict.fromkeys("abcd", 0.0)) == {"a": 3, "b": 3, "c": 2, "d": 2}
    assert allocate(7, {"a": 0.5, "b": 0.0}) == {"a": 7, "b": 0}  # a type with no errors gets no items
    assert allocate(0, RATES) == dict.fromkeys(RATES, 0)
    for n in range(0, 50):
        assert sum(allocate(n, RATES, 0.05).values()) == n
    assert RATES == {"vertical": 0.75, "supplementary": 0.4, "complementary": 0.12, "central": 0.07}  # untouched


def test_proportions_reject_bad_inputs():
    from trainers.data_engine import allocate, sampling_weights

    with pytest.raises(HarnessError, match="error rate of 'a' is 1.5, not in"):
        sampling_weights({"a": 1.5})
    with pytest.raises(HarnessError, match="no question types"):
        sampling_weights({})
    with pytest.raises(HarnessError, match="cannot allocate -1"):
        allocate(-1, RATES)
    with pytest.raises(HarnessError, match="smoothing must be >= 0"):
        sampling_weights(RATES, -0.1)


def test_draw_without_replacement_and_hold_out():
    from harness.core.types import Item
    from trainers.data import Example
    from trainers.data_engine import draw, hold_out

    pool = {"a": list(range(5)), "b": list(range(10, 13))}
    taken, short = draw(pool, {"a": 3, "b": 5}, random.Random(0))
    assert sorted(x for x in taken if x < 10) == sorted(set(range(5)) - set(pool["a"])) and len(pool["a"]) == 2
    assert pool["b"] == [] and short == {"b": 2} and len(taken) == 6
    again, _ = draw({"a": list(range(5)), "b": list(range(10, 13))}, {"a": 3, "b": 5}, random.Random(0))
    assert again == taken  # seeded

    examples = [Example(Item(str(i), "q", "A", category="xy"[i % 2]), "q", [], "A", None) for i in range(10)]
    held, rest = hold_out(examples, 2, seed=0)
    assert sorted(e.item.category for e in held) == ["x", "x", "y", "y"]
    assert {k: len(v) for k, v in rest.items()} == {"x": 3, "y": 3}
    assert not {e.item.id for e in held} & {e.item.id for v in rest.values() for e in v}
    with pytest.raises(HarnessError, match="type 'x' has 5 train questions, too few"):
        hold_out(examples, 5, seed=0)
    # circular copies (one group) land on one side together
    copies = [Example(Item(f"{g}-{k}", "q", "A", category="x", group=str(g)), "q", [], "A", None)
              for g in range(4) for k in range(3)]
    held, rest = hold_out(copies, 1, seed=1)
    assert len(held) == 3 and len({e.item.group for e in held}) == 1
    assert not {e.item.group for e in held} & {e.item.group for e in rest["x"]}


def test_generated_items_are_deterministic_and_of_the_asked_type(tmp_path):
    from harness.core.task import get_task
    from trainers.data_engine import generate_examples

    task = get_task("geoqa")
    counts = {"vertical": 3, "supplementary": 0, "complementary": 2, "central": 0}
    seeds = {t: 100 + k for k, t in enumerate(counts)}
    a = generate_examples(task, counts, tmp_path / "a", seeds, "cot")
    b = generate_examples(task, counts, tmp_path / "b", seeds, "cot")
    other = generate_examples(task, counts, tmp_path / "c", {t: s + 1 for t, s in seeds.items()}, "cot")
    assert [e.item.category for e in a] == ["vertical"] * 3 + ["complementary"] * 2
    assert [(e.text, e.target) for e in a] == [(e.text, e.target) for e in b]
    assert [e.images[0].tobytes() for e in a] == [e.images[0].tobytes() for e in b]
    assert [e.images[0].tobytes() for e in a] != [e.images[0].tobytes() for e in other]


# --- runs ----------------------------------------------------------------------------------------
def test_rounds_write_weights_errors_and_a_loadable_adapter(random_tiny, tmp_path):
    from trainers.cli import build_config, train
    from trainers.data_engine import allocate, sampling_weights

    out = tmp_path / "de"
    cfg = build_config("data_engine", None, ["rounds=2", "items_per_round=8", "eval_per_type=2", "batch_size=4",
                                             "max_new_tokens=4", "logging_steps=1"])
    train("data_engine", cfg, str(random_tiny), "geoqa", out, progress=False)  # what `harness train data_engine` runs
    weights = json.loads((out / "weight.json").read_text())
    types = ["vertical", "supplementary", "complementary", "central"]
    assert weights["task"] == "geoqa" and weights["types"] == types and len(weights["rounds"]) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    metrics = manifest["metrics"]
    for rd, table in zip(weights["rounds"], metrics["error_tables"]):
        # each round's weights come from the error measured just before it
        assert rd["error_rate"] == {t: table[t]["error"] for t in types}
        assert rd["weight"] == sampling_weights(rd["error_rate"]) and rd["counts"] == allocate(8, rd["error_rate"])
    assert set(metrics["per_type_error"]) == set(types) and all(len(v) == 3 for v in metrics["per_type_error"].values())
    assert all(t["n"] == 2 for table in metrics["error_tables"] for t in table.values())
    assert manifest["data"]["n"] == 16 and manifest["data"]["eval_items"] == 8 and metrics["steps"] == 4
    assert (out / "rounds" / "round1" / "adapter_model.safetensors").is_file()
    res = run_cli("eval", "--ckpt", str(out), "--tasks", "geoqa", "--limit", "2", "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr


def test_train_split_source_holds_out_the_error_pool(random_tiny, tmp_path):
    from trainers.data_engine import DataEngineConfig, run

    cfg = DataEngineConfig(source="train", limit=40, rounds=1, items_per_round=6, eval_per_type=1, batch_size=6,
                           max_new_tokens=4)
    manifest = run(cfg, str(random_tiny), "geoqa", tmp_path / "de", data_dir=BUNDLED, progress=False)
    assert manifest["data"]["eval_items"] == 4 and manifest["data"]["n"] == 6 and manifest["data"]["split"] == "train"
    assert manifest["metrics"]["rounds"][0]["seeds"] is None


def test_bad_config_and_tasks_are_clear_errors(random_tiny, tmp_path):
    from trainers.common import load_config
    from trainers.data_engine import DataEngineConfig, run

    for bad, message in (("rounds=0", "rounds must be >= 1"), ("source=web", "source must be one of generate, train"),
                         ("limit=10", "limit applies to source=train only"), ("eval_per_type=0", "eval_per_type must be >= 1"),
                         ("smoothing=-1", "smoothing must be >= 0")):
        with pytest.raises(HarnessError, match=message):
            load_config(DataEngineConfig, None, [bad])
    cfg = DataEngineConfig(rounds=1, items_per_round=4, eval_per_type=1)
    with pytest.raises(HarnessError, match="one task with question types"):
        run(cfg, str(random_tiny), "geoqa,ocrbench", tmp_path / "a", progress=False)
    with pytest.raises(HarnessError, match="no generator for 'mmbench'.*or source=train"):
        run(cfg, str(random_tiny), "mmbench", tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
