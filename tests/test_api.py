"""harness.evaluate on a path and on an in-memory (plain or PEFT) model; the training callback."""
from __future__ import annotations

import pytest

import harness
from harness.errors import HarnessError


def test_public_api_is_declared():
    for name in harness.__all__:
        assert getattr(harness, name) is not None, name


def test_evaluate_a_path_matches_the_same_model_in_memory(random_tiny, tmp_path):
    from transformers import AutoModelForImageTextToText

    by_path = harness.evaluate(str(random_tiny), tasks=["geoqa"], output_dir=tmp_path / "a", limit=4, batch_size=2)
    model = AutoModelForImageTextToText.from_pretrained(random_tiny)
    model.train()
    in_memory = harness.evaluate(model, tasks=["geoqa"], output_dir=tmp_path / "b", limit=4, batch_size=2)
    a, b = by_path["geoqa"], in_memory["geoqa"]
    assert [r["output"] for r in a.records] == [r["output"] for r in b.records]
    assert a.summary["score"] == b.summary["score"] and a.unit_scores == b.unit_scores
    assert len(a.units) == a.summary["n"] == 4
    assert (tmp_path / "b" / b.summary["checkpoint"]["name"] / "geoqa" / "summary.json").is_file()
    assert b.summary["checkpoint"]["hash"] != a.summary["checkpoint"]["hash"]  # keyed by the weights in memory
    assert model.training  # handed back in train mode


def test_evaluate_a_peft_model_in_memory(random_tiny, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = get_peft_model(AutoModelForImageTextToText.from_pretrained(random_tiny),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    out = harness.evaluate(model, tasks=["geoqa"], output_dir=tmp_path, limit=2, name="lora")
    assert out["geoqa"].summary["n"] == 2 and (tmp_path / "lora" / "geoqa" / "samples.jsonl").is_file()


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(HarnessError, match="unknown setting"):
        harness.evaluate("tiny", tasks=["geoqa"], output_dir=tmp_path, temprature=0.5)
    with pytest.raises(HarnessError, match="unknown task"):
        harness.evaluate("tiny", tasks=["nope"], output_dir=tmp_path)
    assert not (tmp_path / ".cache").exists()  # nothing written before the inputs were checked


def test_callback_scores_the_model_every_n_steps(random_tiny, tmp_path):
    from transformers import AutoModelForImageTextToText, TrainerControl, TrainerState

    model = AutoModelForImageTextToText.from_pretrained(random_tiny)
    cb = harness.EvalCallback(tasks=["geoqa"], every=2, output_dir=tmp_path, limit=3)
    state, control = TrainerState(), TrainerControl()
    for step in (1, 2, 3):
        state.global_step = step
        cb.on_step_end(None, state, control, model=model)
    cb.on_train_end(None, state, control, model=model)
    assert [h["step"] for h in cb.history] == [2, 3]
    logged = [h for h in state.log_history if "harness/geoqa/score" in h]
    assert len(logged) == 2
    assert logged[0]["harness/geoqa/ci_low"] <= logged[0]["harness/geoqa/score"] <= logged[0]["harness/geoqa/ci_high"]
    assert (tmp_path / "train-step2" / "geoqa" / "summary.json").is_file()
    with pytest.raises(HarnessError, match="unknown setting"):
        harness.EvalCallback(tasks=["geoqa"], every=2, temprature=1.0)
