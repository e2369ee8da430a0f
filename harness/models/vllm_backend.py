"""Optional vLLM backend: `harness eval --backend vllm ...` on a CUDA machine with `pip install vllm`.

Written against vLLM's documented offline API and tested against a logging stand-in of it
(tests/test_performance.py), never against vLLM itself (it needs a CUDA GPU):
`LLM(model=...)` and `LLM.generate([{"prompt": text, "multi_modal_data": {"image": ...}}],
SamplingParams(n=..., ...))`. vLLM schedules all prompts at once (continuous batching) and the n
samples of a request share its prompt's KV cache, which is where it beats HF generate for
N-sample decoding. Prompts are rendered with the checkpoint's own chat template, as HFBackend
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
        # `seeds` (per-row streams) are the HF backend's batch invariance; vLLM draws from gen.seed.
        from vllm import SamplingParams

        params = SamplingParams(
            n=1 if gen.greedy else n, temperature=0.0 if gen.greedy else gen.temperature, top_p=gen.top_p,
            top_k=gen.top_k if gen.top_k > 0 else -1, max_tokens=gen.budget, seed=gen.seed,
        )
        requests = []
        for p in prompts:
            images = [open_image(ref, blank=blind) for ref in p.images]
            request: dict = {"prompt": self._prompt(p.text, len(images))}
            if images:
                request["multi_modal_data"] = {"image": images[0] if len(images) == 1 else images}
            requests.append(request)
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        texts = [[c.text.strip() for c in out.outputs] for out in outputs]
        return [t * n if gen.greedy else t for t in texts]

    def choice_losses(self, prompts, choices, blind: bool = False):
        raise HarnessError("--backend vllm does not score choice likelihoods; use the default backend for "
                           "--mc-mode likelihood")
