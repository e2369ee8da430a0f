"""Optional vLLM backend: `harness eval --backend vllm ...` on a CUDA machine with `pip install vllm`.

Written against vLLM's documented offline API and tested against a logging stand-in of it
(tests/test_performance.py), never against vLLM itself (it needs a CUDA GPU):
`LLM(model=...)` and `LLM.generate([{"prompt": text, "multi_modal_data": {"image": ...}}],
SamplingParams(...))` (one, or a list with one per request). vLLM schedules all prompts at once
(continuous batching); a sampled item's N requests (one per sample, each with its own seed, so
outputs are batch-invariant) share the prompt's KV through prefix caching, which is where it beats
HF generate for N-sample decoding. Prompts are rendered with the checkpoint's own chat template, as HFBackend
does, and vLLM's processor expands the image placeholder. Likelihood scoring (aokvqa_mc
--mc-mode likelihood) and PEFT adapters stay on the default backend.
"""
from __future__ import annotations

from typing import Sequence

from harness.models.checkpoints import CheckpointRef
from harness.errors import HarnessError
from harness.core.images import open_image
from harness.core.types import GenConfig, Prompt

INSTALL = "pip install vllm (Linux with a CUDA GPU)"


def require_vllm() -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise HarnessError(f"--backend vllm needs vLLM, which is not installed: {INSTALL}; or drop --backend vllm")


class VLLMBackend:
    """The Backend protocol of harness.core.runner over a vLLM engine."""

    def __init__(self, ref: CheckpointRef, dtype: str | None = None, trust_remote_code: bool = False,
                 max_images: int = 1) -> None:
        require_vllm()
        if ref.kind == "adapter":
            raise HarnessError(f"--backend vllm loads full checkpoints; merge the adapter {ref.path} into its base "
                               "(PeftModel.merge_and_unload + save_pretrained) or use the default backend")
        from transformers import AutoTokenizer
        from vllm import LLM

        self.ref, self.name, self.content_hash = ref, ref.name, ref.content_hash
        self.tokenizer = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=trust_remote_code)
        if self.tokenizer.chat_template is None:
            raise HarnessError(f"{ref.path} has no chat template; save the tokenizer with one")
        self.llm = LLM(model=str(ref.path), dtype=dtype or "auto", trust_remote_code=trust_remote_code,
                       limit_mm_per_prompt={"image": max(1, max_images)})

    def _prompt(self, text: str, n_images: int) -> str:
        content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
        rendered = self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                      add_generation_prompt=True)
        # vLLM tokenizes with special tokens: a template that writes BOS itself would get two.
        bos = self.tokenizer.bos_token
        if bos and rendered.startswith(bos) and self.tokenizer("x")["input_ids"][:1] == [self.tokenizer.bos_token_id]:
            rendered = rendered[len(bos):]
        return rendered

    def generate(self, prompts: Sequence[Prompt], gen: GenConfig, n: int = 1, blind: bool = False,
                 seeds: Sequence[int] | None = None) -> list[list[str]]:
        from vllm import SamplingParams

        def params(count: int, seed: int | None) -> "SamplingParams":
            return SamplingParams(
                n=count, temperature=0.0 if gen.greedy else gen.temperature, top_p=gen.top_p,
                top_k=gen.top_k if gen.top_k > 0 else -1, max_tokens=gen.budget, seed=seed,
            )

        requests = []
        for p in prompts:
            images = [open_image(ref, blank=blind) for ref in p.images]
            request: dict = {"prompt": self._prompt(p.text, len(images))}
            if images:
                request["multi_modal_data"] = {"image": images[0] if len(images) == 1 else images}
            requests.append(request)
        if gen.greedy:
            outputs = self.llm.generate(requests, params(1, gen.seed), use_tqdm=False)
            return [[out.outputs[0].text.strip()] * n for out in outputs]
        if seeds is None:
            outputs = self.llm.generate(requests, params(n, gen.seed), use_tqdm=False)
            return [[c.text.strip() for c in out.outputs] for out in outputs]
        # Batch invariance: one request per sample with that sample's own seed (from its cache key),
        # so an output does not depend on what else is scheduled; vLLM's prefix caching still
        # computes each prompt's KV once for its n requests.
        if len(seeds) != len(prompts) * n:
            raise HarnessError(f"internal: {len(seeds)} seeds for {len(prompts)} prompts x {n} samples")
        expanded = [r for r in requests for _ in range(n)]
        outputs = self.llm.generate(expanded, [params(1, seed) for seed in seeds], use_tqdm=False)
        texts = [out.outputs[0].text.strip() for out in outputs]
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

    def choice_losses(self, prompts, choices, blind: bool = False):
        raise HarnessError("--backend vllm does not score choice likelihoods; use the default backend for "
                           "--mc-mode likelihood")
