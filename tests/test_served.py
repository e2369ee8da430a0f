"""Served models: `openai:MODEL --api-base URL` against a real `transformers serve` of tiny (started
here on 127.0.0.1, stopped by its PID), item-by-item parity with the HF backend; the fault cases
(5xx/429 then recovery, a hang, a dropped connection, 401, a wrong model, an empty reply, a
context overflow, no server) against a small scripted fake server; checkpoints in the engines' layout.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.core.store import GenerationCache
from harness.core.types import GenConfig, Prompt
from harness.errors import HarnessError
from harness.models.checkpoints import resolve_checkpoint, tiny_path
from harness.models.openai_backend import OpenAIBackend, ServedSettings
from tests.conftest import BUNDLED, run_cli

SECRET = "sk-test-never-written-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def served_tiny():
    """`transformers serve` of the shipped tiny on 127.0.0.1 (float32, CPU): its base URL."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    cli = Path(sys.executable).with_name("transformers")
    proc = subprocess.Popen([str(cli), "serve", str(tiny_path()), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", "--dtype", "float32", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"transformers serve did not start: {proc.stderr.read()[-2000:] if proc.poll() is not None else 'timeout'}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()  # by its PID
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _served(url: str) -> tuple[str, ...]:
    return ("--ckpt", f"openai:{tiny_path()}", "--api-base", url)


def test_eval_through_transformers_serve_equals_hf_item_by_item(served_tiny, tmp_path):
    common = ("--tasks", "geoqa,aokvqa_mc", "--limit", "12", "--output-dir", str(tmp_path))
    hf = run_cli("eval", "--ckpt", "tiny", *common)
    assert hf.returncode == 0, hf.stderr
    env = {"OPENAI_API_KEY": SECRET}
    api = run_cli("eval", *_served(served_tiny), *common, env=env)
    assert api.returncode == 0, api.stderr
    name = resolve_checkpoint(f"openai:{tiny_path()}", api_base=served_tiny).name
    assert name != "tiny"
    for task in ("geoqa", "aokvqa_mc"):
        a, b = _jsonl(tmp_path / name / task / "samples.jsonl"), _jsonl(tmp_path / "tiny" / task / "samples.jsonl")
        assert [r["id"] for r in a] == [r["id"] for r in b] and len(a) == 12
        assert [r["output"] for r in a] == [r["output"] for r in b], task  # greedy: the same reply, item by item
        assert [r["score"] for r in a] == [r["score"] for r in b]
        summary = json.loads((tmp_path / name / task / "summary.json").read_text())
        served = summary["served"]
        assert served["chat_template"] == "server" and served["base_url"] == served_tiny
        assert served["usage"]["requests"] == 12 and served["usage"]["prompt_tokens"] > 0
        assert served["usage"]["completion_tokens"] > 0 and served["usage"]["retries"] == 0
    # A re-run asks the server nothing; the key was never written anywhere.
    again = run_cli("eval", *_served(served_tiny), *common, env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / name / "geoqa" / "summary.json").read_text())["served"]["usage"]["requests"] == 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in api.stdout + api.stderr


def test_judge_through_transformers_serve_equals_hf(served_tiny, tmp_path):
    base = ("eval", "--ckpt", "tiny", "--tasks", "critic", "--limit", "4")
    hf = run_cli(*base, "--judge", "tiny", "--output-dir", str(tmp_path / "hf"))
    assert hf.returncode == 0, hf.stderr
    api = run_cli(*base, "--judge", f"openai:{tiny_path()}", "--api-base", served_tiny, "--output-dir", str(tmp_path / "api"))
    assert api.returncode == 0, api.stderr
    a = _jsonl(tmp_path / "api" / "tiny" / "critic" / "judgements.jsonl")
    b = _jsonl(tmp_path / "hf" / "tiny" / "critic" / "judgements.jsonl")
    assert len(a) == 4 and [r["reply"] for r in a] == [r["reply"] for r in b]
    judged = json.loads((tmp_path / "api" / "tiny" / "critic" / "judged.json").read_text())
    assert judged["judge"]["name"].endswith("@127.0.0.1-" + served_tiny.split(":")[2].split("/")[0])
    # The served judge's usage for this pass (4 answers, 4 requests); a local judge has no such block.
    usage = judged["served"]["usage"]
    assert judged["served"]["base_url"] == served_tiny and usage["requests"] == 4 and usage["prompt_tokens"] > 0
    assert "served" not in json.loads((tmp_path / "hf" / "tiny" / "critic" / "judged.json").read_text())


def test_sampling_through_a_server_that_ignores_n(served_tiny, tmp_path):
    """transformers serve returns one choice whatever `n` says: each further sample is its own seeded request."""
    ref = resolve_checkpoint(f"openai:{tiny_path()}", api_base=served_tiny)
    backend = OpenAIBackend(ref, ServedSettings(api_base=served_tiny))
    from harness.core.task import get_task

    task = get_task("geoqa")
    item = task.load(BUNDLED)[0]
    prompt = Prompt(task.prompt(item), item.images)
    outs = backend.generate([prompt], GenConfig(temperature=1.0, max_new_tokens=8), n=3, seeds=[11, 12, 13])
    assert len(outs[0]) == 3 and backend.server_n is False
    assert backend.record()["samples_via"] == "one seeded request per sample"
    assert backend.usage.requests == 3
    again = OpenAIBackend(ref, ServedSettings(api_base=served_tiny))
    assert again.generate([prompt], GenConfig(temperature=1.0, max_new_tokens=8), n=3, seeds=[11, 12, 13]) == outs


def test_compare_through_a_server(served_tiny, tmp_path):
    res = run_cli("compare", "majority-vote", *_served(served_tiny), "--task", "geoqa", "--limit", "2", "--n", "1..2",
                  "--temperature", "0.8", "--out", str(tmp_path / "c"), "--output-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "c" / "curve.csv").is_file()


# --- faults, against a scripted fake server ----------------------------------------------------
class FakeServer:
    """An OpenAI-compatible stand-in on 127.0.0.1 that answers `script` in order (then the last entry):
    "ok", 500, 429, 401, "hang", "close", "empty", "context", "n" (honours n)."""

    def __init__(self, script: list, models: tuple[str, ...] = ("m",)):
        self.script, self.models, self.bodies = list(script), models, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in outer.models]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                step = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                reply = lambda texts: {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                       "choices": [{"index": i, "finish_reason": "stop",
                                                    "message": {"role": "assistant", "content": t}}
                                                   for i, t in enumerate(texts)],
                                       "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
                if step == "ok":
                    self._send(200, reply([f" answer {body.get('seed', '')}"]))
                elif step == "n":
                    self._send(200, reply([f"s{i}" for i in range(body.get("n", 1))]))
                elif step == "empty":
                    self._send(200, reply([None]))
                elif step == "context":
                    self._send(400, {"error": {"message": "This model's maximum context length is 1024 tokens."}})
                elif step == "hang":
                    time.sleep(3)
                    self._send(200, reply(["late"]))
                elif step == "close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self._send(step, {"error": {"message": f"scripted {step}"}}, {"Retry-After": "0"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def backend(self, cache=None, model: str = "m", **settings) -> OpenAIBackend:
        served = ServedSettings(api_base=self.url, **{"api_retries": 3, "api_timeout": 5.0, **settings})
        return OpenAIBackend(resolve_checkpoint(f"openai:{model}", api_base=self.url), served, cache=cache)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    servers = []

    def make(script, **kw):
        servers.append(FakeServer(script, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


PROMPT = [Prompt("What is shown?")]


def test_5xx_429_and_a_dropped_connection_are_retried_then_recover(fake):
    server = fake([500, 429, "close", "ok"])
    backend = server.backend()
    assert backend.generate(PROMPT, GenConfig()) == [["answer"]]
    assert backend.usage.requests == 1 and backend.usage.retries == 3
    assert server.bodies[0]["temperature"] == 0.0 and server.bodies[0]["max_tokens"] == 64


@pytest.mark.parametrize("script,settings,message", [
    (["hang"], {"api_timeout": 0.5, "api_retries": 1}, "did not answer the prompt 'What is shown?' within 0.5 s"),
    ([500], {"api_retries": 1}, "answered HTTP 500 to the prompt 'What is shown?' after 1 retries: scripted 500"),
    ([429], {"api_retries": 1}, "kept answering 429"),
    ([401], {}, "refused the API key (HTTP 401"),
    (["empty"], {}, "returned a reply without content (stop)"),
    (["context"], {}, "does not fit the served model's context (This model's maximum context length"),
    (["close"], {"api_retries": 1}, "cannot reach"),
])
def test_faults_are_one_line_errors(fake, script, settings, message):
    backend = fake(script).backend(**settings)
    with pytest.raises(HarnessError) as err:
        backend.generate(PROMPT, GenConfig())
    assert message in str(err.value) and "\n" not in str(err.value)


def test_wrong_model_and_no_server(fake):
    with pytest.raises(HarnessError, match=r"model 'nope' is not served at .* \(it serves: m\)"):
        fake(["ok"]).backend(model="nope").load()
    port = _free_port()
    ref = resolve_checkpoint("openai:m", api_base=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(HarnessError, match="cannot reach .*start the server or fix --api-base"):
        OpenAIBackend(ref, ServedSettings(api_retries=0)).load()


def test_cli_errors_leave_no_run(tmp_path):
    port = _free_port()
    res = run_cli("eval", "--ckpt", "openai:m", "--api-base", f"http://127.0.0.1:{port}/v1", "--api-retries", "0",
                  "--tasks", "geoqa", "--limit", "2", "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: cannot reach")
    assert not list((tmp_path / "runs").rglob("samples.jsonl"))
    res = run_cli("eval", "--ckpt", "openai:m", "--tasks", "geoqa", "--output-dir", str(tmp_path / "runs"),
                  env={"OPENAI_BASE_URL": ""})
    assert res.returncode == 2 and "pass --api-base URL" in res.stderr
    res = run_cli("eval", "--ckpt", "openai:m", "--api-base", "ftp://x", "--tasks", "geoqa")
    assert res.returncode == 2 and "is not an http(s) URL" in res.stderr


def test_server_n_and_the_write_through_cache(fake, tmp_path):
    server = fake(["n"])
    cache = GenerationCache(tmp_path / "cache.sqlite")
    outs = server.backend(cache=cache).generate(PROMPT * 2, GenConfig(temperature=1.0), n=3, seeds=list(range(6)))
    assert outs == [["s0", "s1", "s2"]] * 2 and len(server.bodies) == 2 and server.bodies[0]["n"] == 3
    again = server.backend(cache=cache)  # a new process after a kill: every reply is already cached
    assert again.generate(PROMPT * 2, GenConfig(temperature=1.0), n=3, seeds=list(range(6))) == outs
    assert len(server.bodies) == 2 and again.usage.requests == 0 and again.record()["samples_via"] == "unknown"


def test_a_served_model_is_named_and_hashed_by_server_and_model():
    a = resolve_checkpoint("openai:org/M-7B", api_base="http://user:pw@127.0.0.1:8000/v1/")
    b = resolve_checkpoint("openai:org/M-7B", api_base="http://127.0.0.1:8001/v1")
    assert a.name == "M-7B@127.0.0.1-8000" and a.api_base == "http://127.0.0.1:8000/v1"  # no credentials kept
    assert a.content_hash != b.content_hash and a.kind == "api"


# --- checkpoints the engines load --------------------------------------------------------------
def test_shipped_tiny_is_in_the_engine_layout_and_loads_identically(tmp_path):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    from harness.models.checkpoints import save_for_engines

    with safe_open(str(tiny_path() / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert any(k.startswith("vision_tower.vision_model.") for k in keys)
    assert not any(k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") for k in keys)
    processor = json.loads((tiny_path() / "processor_config.json").read_text())
    assert processor["patch_size"] == 16 and processor["processor_class"] == "LlavaProcessor"
    model = AutoModelForImageTextToText.from_pretrained(tiny_path())
    out = save_for_engines(model, None, tmp_path / "copy")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == keys
    for src in tiny_path().glob("*.json"):
        if not (out / src.name).exists():
            (out / src.name).write_bytes(src.read_bytes())
    again = AutoModelForImageTextToText.from_pretrained(out).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())


def test_built_checkpoints_carry_the_processor_settings(random_tiny):
    from harness.models.backend import HFBackend

    saved = json.loads((random_tiny / "processor_config.json").read_text())
    assert saved["patch_size"] == 8 and "image_processor" not in saved
    assert (random_tiny / "preprocessor_config.json").is_file()
    backend = HFBackend(resolve_checkpoint(str(random_tiny)), device="cpu")
    assert backend.processor.patch_size == 8


def test_spec_api_rows_are_read_and_checked(tmp_path):
    from harness.report.spec import load_spec

    def spec(row: str) -> Path:
        path = tmp_path / "lb.yaml"
        path.write_text(f"baseline: tiny\ncheckpoints: [tiny, {row}]\ntasks: [geoqa]\n")
        return path

    (_, row) = load_spec(spec("{name: gpt, api: {model: gpt-4o, base_url: 'https://api.example.com/v1/'}}")).checkpoints
    assert (row.name, row.ckpt, row.api_base) == ("gpt", "openai:gpt-4o", "https://api.example.com/v1")
    for bad, words in [("{name: gpt, api: {model: gpt-4o}}", "api: {model, base_url}"),
                       ("{name: gpt, api: gpt-4o}", "api: {model, base_url}"),
                       ("{name: gpt, path: x, api: {model: m, base_url: 'http://h/v1'}}", "nothing else"),
                       ("{name: gpt, api: {model: m, base_url: 'ftp://h'}}", "not an http(s) URL")]:
        with pytest.raises(HarnessError, match="lb.yaml") as e:
            load_spec(spec(bad))
        assert words in str(e.value) and "\n" not in str(e.value), bad


def test_leaderboard_row_served_by_transformers_serve(served_tiny, tmp_path):
    """A spec row `api: {model, base_url}`: scored beside the local tiny, with the same replies."""
    path = tmp_path / "lb.yaml"
    path.write_text(f"""
name: served
baseline: tiny
checkpoints:
  - tiny
  - {{name: tiny_served, api: {{model: '{tiny_path()}', base_url: '{served_tiny}'}}}}
tasks: [geoqa]
output_dir: {tmp_path / 'runs'}
limit: 6
bootstrap: 200
""")
    res = run_cli("leaderboard", "--spec", str(path), env={"OPENAI_API_KEY": SECRET})
    assert res.returncode == 0, res.stderr
    runs = tmp_path / "runs"
    local, served = _jsonl(runs / "tiny" / "geoqa" / "samples.jsonl"), _jsonl(runs / "tiny_served" / "geoqa" / "samples.jsonl")
    assert len(served) == 6 and [r["output"] for r in served] == [r["output"] for r in local]
    summary = json.loads((runs / "tiny_served" / "geoqa" / "summary.json").read_text())
    assert summary["served"]["base_url"] == served_tiny and summary["served"]["usage"]["requests"] == 6
    csv = (tmp_path / "served" / "leaderboard.csv").read_text()
    assert "tiny_served" in csv and SECRET not in csv
