"""Performance paths: N samples from one prompt encoding, one model load per checkpoint in a
leaderboard, cached leaderboard statistics, and the throughput benchmark's JSON."""
from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import BUNDLED, REPO, geoqa_inputs
from harness.core.types import GenConfig

torch = pytest.importorskip("torch")


def _encoded(backend, run) -> tuple[int, int]:
    """(pixel rows the vision tower sees, prompt tokens prefilled in multi-token LM passes) during `run`."""
    inner = backend.model.model
    tower = getattr(inner, "vision_tower", None) or inner.visual
    pixels, prefill = [], []

    def first_tensor(args, kwargs):
        names = ("inputs_embeds", "input_ids", "pixel_values", "hidden_states")
        return args[0] if args else next(v for k, v in kwargs.items() if k in names and v is not None)

    def on_lm(mod, args, kwargs):
        x = first_tensor(args, kwargs)
        if x.shape[1] > 1:  # one-token steps are decoding, not prompt encoding
            prefill.append(x.shape[0] * x.shape[1])

    hooks = [tower.register_forward_pre_hook(lambda m, a, k: pixels.append(first_tensor(a, k).shape[0]),
                                             with_kwargs=True),
             inner.language_model.register_forward_pre_hook(on_lm, with_kwargs=True)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return sum(pixels), sum(prefill)


@pytest.mark.parametrize("arch", ["llava", "qwen2vl"])
def test_n_samples_encode_prompt_and_image_once(small_backends, arch):
    backend = small_backends[arch]
    inputs = geoqa_inputs(backend)
    greedy = GenConfig(max_new_tokens=5)
    with torch.inference_mode():
        plain = backend.model.generate(**inputs, generation_config=backend.generation_config(greedy, 1))
    # Continuing from the copied prompt cache decodes exactly what one generate call does.
    assert torch.equal(backend.generate_expanded(inputs, greedy, 1), plain)
    assert torch.equal(backend.generate_expanded(inputs, greedy, 3), plain.repeat_interleave(3, dim=0))

    sampled = GenConfig(max_new_tokens=5, temperature=1.0, seed=3)
    pixels, prefill = _encoded(backend, lambda: backend.generate_expanded(inputs, sampled, 4))
    with torch.inference_mode():
        rs_pixels, rs_prefill = _encoded(backend, lambda: backend.model.generate(
            **inputs, generation_config=backend.generation_config(sampled, 4)))
    rows, width = inputs["input_ids"].shape
    assert prefill == rows * (width - 1)  # each prompt once (its last token then runs on the 4 copies)
    assert rs_prefill == 4 * rows * width  # num_return_sequences prefills every copy of the prompt
    assert pixels == rs_pixels == inputs["pixel_values"].shape[0]  # images encoded once either way
    out = backend.generate_expanded(inputs, sampled, 4)
    assert out.shape[0] == 12 and torch.equal(out, backend.generate_expanded(inputs, sampled, 4))  # seeded


def test_leaderboard_loads_a_checkpoint_once_and_caches_its_statistics(tmp_path, random_tiny, monkeypatch):
    import harness.models.backend as backend_module
    import harness.stats.board as stats_module
    from harness.report.leaderboard import load_spec, run_leaderboard

    loads = []
    original = backend_module.HFBackend

    def counting(*a, **k):
        loads.append(1)
        return original(*a, **k)

    monkeypatch.setattr(backend_module, "HFBackend", counting)
    spec = tmp_path / "lb.yaml"
    spec.write_text(f"baseline: a\ncheckpoints: [{{name: a, path: {random_tiny}}}]\nblind: [a]\ntasks: [geoqa]\n"
                    f"limit: 4\nbootstrap: 200\noutput_dir: {tmp_path / 'runs'}\ngeneration: {{max_new_tokens: 4}}\n")
    first = run_leaderboard(load_spec(spec))
    assert len(loads) == 1  # "a" and "a+blind" share one model load
    assert list(first.checkpoint) == ["a", "a+blind"]

    def refuse(*a, **k):
        raise AssertionError("statistics recomputed on an unchanged re-run")

    monkeypatch.setattr(stats_module, "leaderboard_frame", refuse)
    assert run_leaderboard(load_spec(spec)).equals(first)
    (spec.parent / "lb" / "forest.png").unlink()  # a missing render is rebuilt, not trusted to the cache
    with pytest.raises(AssertionError, match="recomputed"):
        run_leaderboard(load_spec(spec))


def test_bench_writes_its_json(tmp_path, random_tiny, monkeypatch):
    spec = importlib.util.spec_from_file_location("throughput", REPO / "bench" / "throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "lmms_available", lambda: False)
    out = tmp_path / "t.json"
    assert bench.main(["--ckpt", str(random_tiny), "--limit", "3", "--batch-size", "2", "--samples", "2",
                       "--max-new-tokens", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["items"] == 3 and result["max_new_tokens"] == 4 and result["samples"] == 2
    for path in ("ours", "bare", "naive", "sampled", "sampled_rs"):
        row = result["paths"][path]
        assert row["seconds"] > 0 and row["items_per_s"] == pytest.approx(3 / row["seconds"], rel=0.01)
        assert row["peak_memory_mb"] > 0 and row["memory_kind"] == "rss"
    assert result["paths"]["lmms"]["status"].startswith("not installed")
    # The bare batched generate sees the same batches as ours: the same greedy outputs, and the ratio.
    assert result["greedy_mismatches"] == {"bare": [], "naive": []}  # same greedy outputs, item by item
    ratios = result["ratios"]
    assert ratios["ours_vs_naive_items_per_s"] == pytest.approx(
        result["paths"]["ours"]["items_per_s"] / result["paths"]["naive"]["items_per_s"], rel=0.01)
    assert ratios["ours_vs_lmms_items_per_s"] is None
    assert ratios["ours_vs_bare_items_per_s"] == pytest.approx(
        result["paths"]["ours"]["items_per_s"] / result["paths"]["bare"]["items_per_s"], rel=0.01)


@pytest.mark.parametrize("name, parameters", [("qwen2-vl-2b", 2_208_985_600), ("llava-1.5-7b", 7_063_427_072)])
def test_random_bench_models_have_the_published_sizes(name, parameters):
    """The bench's random stand-ins count the parameters of Qwen2/Qwen2-VL-2B-Instruct and
    llava-hf/llava-1.5-7b-hf (built on the meta device: shapes only, no memory)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from harness.models.checkpoints import tiny_path
    from trainers.tiny_model import for_arch

    spec = importlib.util.spec_from_file_location("random_models", REPO / "bench" / "random_models.py")
    random_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(random_models)
    arch = "qwen2vl" if name.startswith("qwen") else "llava"
    tok = for_arch(AutoTokenizer.from_pretrained(tiny_path()), arch)
    make = random_models.qwen2vl_2b_config if arch == "qwen2vl" else random_models.llava15_7b_config
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(make(tok))
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_vllm_backend_names_its_install():
    import importlib.util

    from conftest import run_cli

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed")
    done = run_cli("eval", "--ckpt", "tiny", "--tasks", "geoqa", "--limit", "2", "--backend", "vllm")
    assert done.returncode == 2 and "pip install vllm" in done.stderr


FAKE_VLLM = '''"""A stand-in for vLLM's documented offline API (LLM, SamplingParams) that logs what it is given."""
import json
import os


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class _Completion:
    def __init__(self, text):
        self.text = text


class _RequestOutput:
    def __init__(self, outputs):
        self.outputs = outputs


def _log(row):
    with open(os.environ["FAKE_VLLM_LOG"], "a") as f:
        f.write(json.dumps(row) + "\\n")


class LLM:
    def __init__(self, **kwargs):
        _log({"init": {k: str(v) for k, v in kwargs.items()}})

    def generate(self, requests, params, use_tqdm=True):
        # vLLM takes one SamplingParams for all requests or a list with one per request.
        per_request = params if isinstance(params, list) else [params] * len(requests)
        _log({"params": [p.kwargs for p in per_request], "requests": [
            {"prompt": r["prompt"], "image": list(r["multi_modal_data"]["image"].size)} for r in requests]})
        letters = "ABCD"
        # The reply depends on the request's seed alone (as a real draw would), not its position.
        return [_RequestOutput([_Completion(f" Answer: {letters[((p.kwargs['seed'] or 0) + k) % 4]} ")
                                for k in range(p.kwargs["n"])]) for p in per_request]
'''


def test_vllm_backend_speaks_the_documented_api(tmp_path, random_tiny):
    """`harness eval --backend vllm` end to end against a logging stand-in for vLLM's offline API
    (vLLM itself needs a CUDA GPU): prompts from the checkpoint's chat template with one image
    placeholder and no doubled BOS, the item's image, sampling parameters, n outputs per item."""
    from conftest import run_cli
    from harness.core.task import get_task
    from transformers import AutoTokenizer

    (tmp_path / "fake" / "vllm").mkdir(parents=True)
    (tmp_path / "fake" / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    log = tmp_path / "vllm.jsonl"
    env = {"PYTHONPATH": str(tmp_path / "fake"), "FAKE_VLLM_LOG": str(log)}
    base = ("eval", "--ckpt", str(random_tiny), "--tasks", "geoqa", "--limit", "3", "--backend", "vllm")
    done = run_cli(*base, "--output-dir", str(tmp_path / "greedy"), env=env)
    assert done.returncode == 0, done.stderr
    done = run_cli(*base, "--output-dir", str(tmp_path / "sampled"), "--n-samples", "4", "--temperature", "0.7",
                   "--top-k", "20", env=env)
    assert done.returncode == 0, done.stderr

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0]["init"]["model"] == str(random_tiny) and calls[0]["init"]["trust_remote_code"] == "False"
    greedy, sampled = (c for c in calls if "params" in c)
    assert all(p["n"] == 1 and p["temperature"] == 0.0 for p in greedy["params"])
    # Sampling: one request per sample, each with its own seed (batch-invariant draws), same settings.
    assert len(sampled["params"]) == len(sampled["requests"]) == 12
    assert len({p["seed"] for p in sampled["params"]}) == 12
    assert all(p | {"seed": 0} == {"n": 1, "temperature": 0.7, "top_p": 1.0, "top_k": 20, "seed": 0,
                                   "max_tokens": greedy["params"][0]["max_tokens"]} for p in sampled["params"])
    tok = AutoTokenizer.from_pretrained(random_tiny)
    items = get_task("geoqa").load(BUNDLED, "test")[:3]
    for request in greedy["requests"]:
        assert request["prompt"].count("<image>") == 1 and not request["prompt"].startswith(tok.bos_token * 2)
    assert sorted(r["prompt"] for r in greedy["requests"] for _ in range(4)) == sorted(
        r["prompt"] for r in sampled["requests"])
    from harness.core.images import open_image

    assert sorted(r["image"] for r in greedy["requests"]) == sorted(
        list(open_image(it.images[0]).size) for it in items)
    rows = [json.loads(line) for line in (tmp_path / "sampled" / random_tiny.name / "geoqa" / "samples.jsonl")
            .read_text().splitlines()]
    assert len(rows) == 12 and {r["output"] for r in rows} <= {f"Answer: {c}" for c in "ABCD"}
    # The same samples one prompt per batch: each sample keeps its seed, so its output (batch invariance).
    done = run_cli(*base, "--output-dir", str(tmp_path / "one"), "--n-samples", "4", "--temperature", "0.7",
                   "--top-k", "20", "--batch-size", "1", env=env)
    assert done.returncode == 0, done.stderr
    ones = [json.loads(line) for line in (tmp_path / "one" / random_tiny.name / "geoqa" / "samples.jsonl")
            .read_text().splitlines()]
    assert sorted((r["id"], r["sample"], r["output"]) for r in ones) == sorted(
        (r["id"], r["sample"], r["output"]) for r in rows)
