"""Models behind an OpenAI-compatible server: `--ckpt openai:MODEL --api-base URL`.

    harness eval --ckpt openai:Qwen/Qwen2-VL-7B-Instruct --api-base http://127.0.0.1:8000/v1 --tasks geoqa

Any server speaking the chat completions API works: vLLM, SGLang, TGI, `transformers serve`, a
hosted API. Each prompt is one chat request (images as PNG data URLs, the server's own chat
template); replies are stripped like HFBackend's. The API key comes from $OPENAI_API_KEY and is
never written anywhere (run folders, manifests, logs, the cache).

- Requests run on a bounded thread pool (`--api-concurrency`), each with a timeout
  (`--api-timeout`); 429s, 5xx replies, timeouts and dropped connections are retried with
  exponential backoff (`--api-retries`, the openai client's policy, Retry-After honoured).
- Every reply is written to the generation cache as soon as it arrives, under a key of the
  server, the model and the whole request body: a killed run resumes without repeating a paid
  request (the runner's own per-batch cache keys come on top).
- N samples of a prompt: one request with the API's `n` where the server honours it (vLLM,
  hosted APIs); a server that returns fewer choices (transformers serve ignores `n`) gets one
  request per missing sample, each with that sample's own seed.
- Usage (requests, retries, prompt and completion tokens, wall time) goes to summary.json.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from harness.core.images import image_digest, open_image
from harness.core.types import GenConfig, ImageRef, Prompt
from harness.errors import ContextOverflow, HarnessError

PREFIX = "openai:"  # --ckpt openai:MODEL
KEY_ENV = "OPENAI_API_KEY"
BASE_ENV = "OPENAI_BASE_URL"
INSTALL = "pip install 'vlm-harness[api]' (the openai client)"
# Words servers use when a prompt does not fit (vLLM, OpenAI, TGI, llama.cpp, transformers).
_CONTEXT_WORDS = ("context length", "context window", "maximum context", "too long", "max_model_len",
                  "maximum model length", "exceeds the model", "input_ids", "prompt is too long")


@dataclass(frozen=True)
class ServedSettings:
    """How `openai:` checkpoints are reached. Only `api_base` can change a reply; the rest is transport."""

    api_base: str | None = field(default=None, metadata={
        "help": "openai:MODEL checkpoints (and --judge openai:MODEL): the server's OpenAI-compatible base URL, "
                f"e.g. http://127.0.0.1:8000/v1 (default: ${BASE_ENV}); the key comes from ${KEY_ENV}"})
    api_concurrency: int = field(default=8, metadata={"help": "requests in flight at once", "kind": "positive"})
    api_timeout: float = field(default=120.0, metadata={"help": "seconds one request may take before it is retried",
                                                         "kind": "non_negative"})
    api_retries: int = field(default=5, metadata={"help": "retries of a request after a 429, 5xx, timeout or "
                                                          "dropped connection (exponential backoff)", "kind": "count"})

    def __post_init__(self) -> None:
        if self.api_concurrency < 1:
            raise HarnessError("--api-concurrency must be >= 1")
        if not self.api_timeout > 0:
            raise HarnessError("--api-timeout must be > 0 seconds")
        if self.api_retries < 0:
            raise HarnessError("--api-retries must be >= 0")


def clean_base_url(url: str) -> str:
    """`url` checked, without credentials, query or trailing slash: what is hashed and recorded."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HarnessError(f"--api-base {url!r} is not an http(s) URL; give e.g. http://127.0.0.1:8000/v1")
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def api_identity(model: str, base_url: str) -> tuple[str, str]:
    """(run folder name, content hash) of a served model: `MODEL@host-port`, hashed over base URL + model."""
    import re

    host = urlsplit(base_url)
    short = model.rstrip("/").rsplit("/", 1)[-1] or "model"
    name = re.sub(r"[^A-Za-z0-9._+-]", "-", short).lstrip("+-") or "model"
    where = re.sub(r"[^A-Za-z0-9._-]", "-", host.hostname + (f"-{host.port}" if host.port else ""))
    digest = hashlib.sha256(json.dumps(["openai-chat", base_url, model]).encode()).hexdigest()[:16]
    return f"{name}@{where}", digest


@dataclass
class Usage:
    """What the server was asked for and billed, summed over requests (thread-safe)."""

    requests: int = 0
    retries: int = 0
    cached: int = 0  # replies found in the write-through cache (not asked again)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # wall time spent waiting for the server (requests overlap)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "retries": self.retries, "cached_replies": self.cached,
                    "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                    "wall_seconds": round(self.seconds, 3)}

    def since(self, mark: dict[str, Any]) -> dict[str, Any]:
        now = self.as_dict()
        return {k: round(v - mark.get(k, 0), 3) if isinstance(v, float) else v - mark.get(k, 0) for k, v in now.items()}


class OpenAIBackend:
    """The Backend protocol of harness.core.runner over an OpenAI-compatible chat completions server."""

    def __init__(self, ref: Any, settings: ServedSettings = ServedSettings(), cache: Any = None) -> None:
        self.ref, self.settings, self.cache = ref, settings, cache
        self.name, self.content_hash = ref.name, ref.content_hash
        self.model, self.base_url = ref.api_model, ref.api_base
        self.usage = Usage()
        self.server_n: bool | None = None  # whether the server honours `n` (found on the first sampled prompt)
        self._client = None
        self._pool: ThreadPoolExecutor | None = None
        self._images: dict[tuple[str, bool], str] = {}
        self._checked = False

    # ---- the connection ------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            try:
                import openai
            except ImportError:
                raise HarnessError(f"{PREFIX}{self.model} needs the openai client, which is not installed: {INSTALL}") from None
            # Servers without auth (vLLM, transformers serve) accept any key; the client requires one.
            self._client = openai.OpenAI(base_url=self.base_url, api_key=os.environ.get(KEY_ENV) or "none",
                                         timeout=self.settings.api_timeout, max_retries=self.settings.api_retries)
        return self._client

    def load(self) -> None:
        """Check, before a run writes anything, that the server answers and serves the model."""
        if self._checked:
            return
        try:
            served = [m.id for m in self.client.models.list()]
        except Exception as e:
            status = getattr(e, "status_code", None)
            if status in (404, 405):  # no model list here: the first request will say what is wrong
                served = []
            else:
                raise self._error(e, "listing the models") from None
        if served and self.model not in served:
            shown = ", ".join(served[:8]) + (", ..." if len(served) > 8 else "")
            raise HarnessError(f"model {self.model!r} is not served at {self.base_url} (it serves: {shown}); "
                               f"fix the name after {PREFIX}")
        self._checked = True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def record(self) -> dict[str, Any]:
        """What summary.json says about the server (never the key)."""
        return {"base_url": self.base_url, "model": self.model, "chat_template": "server",
                "samples_via": {None: "unknown", True: "server n", False: "one seeded request per sample"}[self.server_n]}

    # ---- requests ------------------------------------------------------------------------
    def _image_url(self, ref: ImageRef, blind: bool) -> str:
        key = (image_digest(ref), blind)
        if key not in self._images:
            buf = io.BytesIO()
            open_image(ref, blank=blind).save(buf, format="PNG")  # lossless: the pixels HFBackend sees
            self._images[key] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        return self._images[key]

    def _body(self, prompt: Prompt, gen: GenConfig, blind: bool, n: int, seed: int | None) -> dict[str, Any]:
        content = [{"type": "image_url", "image_url": {"url": self._image_url(ref, blind)}} for ref in prompt.images]
        content.append({"type": "text", "text": prompt.text})
        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": content}],
                                "max_tokens": gen.budget}
        if gen.greedy:
            body["temperature"] = 0.0
        else:
            body.update(temperature=gen.temperature, top_p=gen.top_p)
            if gen.top_k > 0:
                body["top_k"] = gen.top_k  # not in OpenAI's schema: vLLM, SGLang and TGI read it
            if seed is not None:
                body["seed"] = seed % 2**31
            if n > 1:
                body["n"] = n
        return body

    def _key(self, body: dict[str, Any]) -> str:
        text = json.dumps([self.content_hash, body], sort_keys=True)
        return "api-" + hashlib.sha256(text.encode()).hexdigest()[:24]

    def _ask(self, body: dict[str, Any]) -> list[str]:
        """One chat completion (retried by the client); the texts of its choices."""
        extra = {k: body[k] for k in ("top_k",) if k in body}
        params = {k: v for k, v in body.items() if k not in extra}
        try:
            raw = self.client.chat.completions.with_raw_response.create(**params, extra_body=extra or None)
            reply = raw.parse()
        except Exception as e:
            raise self._error(e, _what(body)) from None
        usage = getattr(reply, "usage", None)
        self.usage.add(requests=1, retries=raw.retries_taken,
                       prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                       completion_tokens=getattr(usage, "completion_tokens", 0) or 0)
        choices = getattr(reply, "choices", None) or []
        texts = [getattr(getattr(c, "message", None), "content", None) for c in choices]
        if not texts or any(t is None for t in texts):
            reason = choices[0].finish_reason if choices else "no choices"
            raise HarnessError(f"{self.base_url} returned a reply without content ({reason}) to {_what(body)}; "
                               "check the server's log (a model that cannot see images, a refusal filter)")
        return [t.strip() for t in texts]

    def _error(self, e: Exception, what: str) -> HarnessError:
        import openai

        base, tries = self.base_url, self.settings.api_retries
        message = _server_message(e)
        if isinstance(e, openai.APITimeoutError):
            return HarnessError(f"{base} did not answer {what} within {self.settings.api_timeout:g} s ({tries} retries); "
                                "raise --api-timeout or check the server")
        if isinstance(e, openai.APIConnectionError):
            cause = e.__cause__ or e.__context__
            why = f"{type(cause).__name__}: {cause}".splitlines()[0] if cause else str(e)
            return HarnessError(f"cannot reach {base} ({why}; {tries} retries); start the server or fix --api-base")
        if isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return HarnessError(f"{base} refused the API key (HTTP {e.status_code}: {message}); "
                                f"set ${KEY_ENV} to a valid key")
        if isinstance(e, openai.NotFoundError):
            return HarnessError(f"{base} answered 404 to {what} ({message}); check the model name after {PREFIX} "
                                "and that --api-base ends with the API root (usually /v1)")
        if isinstance(e, openai.RateLimitError):
            return HarnessError(f"{base} kept answering 429 (rate limit) to {what} after {tries} retries ({message}); "
                                "lower --api-concurrency, raise --api-retries or wait")
        if isinstance(e, openai.APIStatusError):
            if e.status_code in (400, 413, 422) and any(w in message.lower() for w in _CONTEXT_WORDS):
                return ContextOverflow(f"{what} does not fit the served model's context ({message}); "
                                    "shorten the question or lower --max-new-tokens")
            if e.status_code == 400 and "pinned" in message.lower():  # transformers serve with one model
                return HarnessError(f"model {self.model!r} is not served at {base} ({message}); fix the name after {PREFIX}")
            retried = f" after {tries} retries" if e.status_code >= 500 else ""
            return HarnessError(f"{base} answered HTTP {e.status_code} to {what}{retried}: {message}")
        return HarnessError(f"request to {base} failed ({type(e).__name__}: {message})")

    # ---- the Backend protocol ------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], gen: GenConfig, n: int = 1, blind: bool = False,
                 seeds: Sequence[int] | None = None) -> list[list[str]]:
        """`n` replies per prompt. Greedy: one request per prompt (copied n times). Sampled: see the
        module docstring; sample j of prompt i is seeded with seeds[i * n + j] when seeds are given."""
        if seeds is not None and len(seeds) != len(prompts) * n:
            raise HarnessError(f"internal: {len(seeds)} seeds for {len(prompts)} prompts x {n} samples")
        self.load()
        start = time.perf_counter()
        try:
            return self._generate(prompts, gen, n, blind, seeds)
        finally:
            self.usage.add(seconds=time.perf_counter() - start)

    def _generate(self, prompts, gen, n, blind, seeds) -> list[list[str]]:
        per_prompt = 1 if gen.greedy else n
        out: list[list[str | None]] = [[None] * per_prompt for _ in prompts]

        def seed_of(i: int, j: int) -> int:
            return seeds[i * n + j] if seeds is not None else gen.seed * 1_000_003 + j

        # jobs: (prompt index, first sample index, how many samples the request asks for)
        jobs = [(i, 0, per_prompt) for i in range(len(prompts))]
        if per_prompt > 1 and self.server_n is False:
            jobs = [(i, j, 1) for i in range(len(prompts)) for j in range(per_prompt)]
        if per_prompt > 1 and self.server_n is None and jobs:
            self._run(prompts, gen, blind, jobs[:1], out, seed_of)  # learn whether `n` is honoured
            jobs = jobs[1:] if self.server_n is not False else [(i, j, 1) for i in range(len(prompts)) for j in range(per_prompt)]
        self._run(prompts, gen, blind, jobs, out, seed_of)
        return [row * n if gen.greedy else row for row in out]  # type: ignore[misc]

    def _run(self, prompts, gen, blind, jobs, out, seed_of) -> None:
        """Send `jobs` (those not cached) on the pool; fill `out`; cache each reply as it lands."""
        todo = []
        for i, j, count in jobs:
            if out[i][j] is not None:
                continue
            body = self._body(prompts[i], gen, blind, count, None if gen.greedy else seed_of(i, j))
            todo.append((i, j, count, body, self._key(body)))
        hits = self.cache.get_many([t[4] for t in todo]) if self.cache is not None and todo else {}
        self.usage.add(cached=len(hits))
        futures: dict[Future, tuple] = {}
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.settings.api_concurrency, thread_name_prefix="openai")
        for job in todo:
            if job[4] in hits:
                self._fill(out, job, json.loads(hits[job[4]][0]))
            else:
                futures[self._pool.submit(self._ask, job[3])] = job
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                for other in pending:
                    other.cancel()
                done |= wait(pending).done  # requests already running finish, and are cached, first
            for fut in done:
                if not fut.cancelled() and fut.exception() is None:
                    self._store(futures[fut], fut.result(), out)
            if failed:
                raise failed[0].exception()  # type: ignore[misc]
        missing = [(i, j + d, 1) for i, j, count in jobs for d in range(count) if out[i][j + d] is None]
        if missing:  # the server returned fewer choices than `n` asked for: one seeded request per sample
            self.server_n = False
            self._run(prompts, gen, blind, missing, out, seed_of)

    def _store(self, job: tuple, texts: list[str], out) -> None:
        i, j, count, body, key = job
        if count > 1 and self.server_n is None:
            self.server_n = len(texts) >= count
        if self.cache is not None:  # from the calling thread: the cache's connection belongs to it
            self.cache.put_many([(key, json.dumps(texts), {})])
        self._fill(out, job, texts)

    @staticmethod
    def _fill(out, job: tuple, texts: list[str]) -> None:
        i, j, count = job[:3]
        for offset, text in enumerate(texts[:count]):
            out[i][j + offset] = text

    def choice_losses(self, prompts, choices, blind: bool = False):
        raise HarnessError(f"{PREFIX}{self.model}: a chat server gives no likelihoods of given replies; use "
                           "--mc-mode generate, or the local checkpoint (or --backend vllm) for --mc-mode likelihood")


def _what(body: dict[str, Any]) -> str:
    text = body["messages"][0]["content"][-1]["text"]
    return f"the prompt {text[:40]!r}" + ("..." if len(text) > 40 else "")


def _server_message(e: Exception) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") or inner.get("detail") if isinstance(inner, dict) else inner
        if text:
            return str(text).splitlines()[0][:300]
    return (str(e).splitlines() or [type(e).__name__])[0][:300]
