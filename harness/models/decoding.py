"""How a backend decodes n sampled continuations of each prompt: one strategy, picked at load.

    Copies        the prompt copied n times before the first forward pass (num_return_sequences):
                  every copy prefills the whole prompt. For families whose prefill cannot be split
                  (Family.prefix_split False: cross-attention masks, bidirectional image attention),
                  and for any batch whose prompts end in an image (no split point).
    PrefillOnce   the prompt minus its last token prefilled once (a 1-token `generate`, which builds
                  each family's positions and image features), its cache repeated n times, and
                  `generate` continues from it: only the last prompt token and the sampled tokens
                  run on the n rows. For models whose attention cannot be routed (sliding windows).
    SharedPrefix  as PrefillOnce, but the n rows attend to ONE copy of the prompt's keys and values
                  (harness/models/shared_prefix.py) and tokens are drawn by inverse CDF.

Each returns prompt + new token ids for B * n rows, grouped by prompt like num_return_sequences,
and each produces the tokens the others would (tested token for token). Family quirks come from
the Family record (M-RoPE's offsets follow the copies: Family.mrope); nothing here keeps state
between calls.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.core.types import GenConfig

if TYPE_CHECKING:
    import torch


class Decoding:
    """n continuations per row of a backend's batch inputs."""

    name = ""
    shares_prefix = False  # the rows of a prompt read one copy of its keys and values

    def expand(self, backend: Any, inputs: dict[str, Any], gen: GenConfig, n: int, sampler: list) -> "torch.Tensor":
        raise NotImplementedError


class Copies(Decoding):
    name = "copies"

    def expand(self, backend, inputs, gen, n, sampler):
        import torch

        torch.manual_seed(gen.seed)
        with torch.inference_mode():
            if sampler:  # n copies at temperature 1 choose exactly the token the row sampler drew
                copies = backend.generation_config(GenConfig(max_new_tokens=gen.budget, temperature=1.0), n)
                return backend.model.generate(**inputs, generation_config=copies, logits_processor=sampler)
            out = backend.model.generate(**inputs, generation_config=backend.generation_config(gen, n))
        return out.repeat_interleave(n, dim=0) if gen.greedy else out  # greedy configs return one row each


class PrefillOnce(Decoding):
    name = "prefill once"

    def expand(self, backend, inputs, gen, n, sampler):
        import torch

        ids = inputs["input_ids"]
        if backend.image_token_id is not None and bool((ids[:, -1] == backend.image_token_id).any()):
            return COPIES.expand(backend, inputs, gen, n, sampler)  # a prompt ending in an image has no split point
        with torch.inference_mode():
            cache = _prefill(backend, inputs, n)
            rows = {"input_ids": ids.repeat_interleave(n, dim=0),
                    "attention_mask": inputs["attention_mask"].repeat_interleave(n, dim=0)}
            torch.manual_seed(gen.seed)
            return self.continue_rows(backend, rows, cache, inputs["attention_mask"][:, :-1], gen, sampler)

    def continue_rows(self, backend, rows, cache, prefix_mask, gen, sampler):
        """Decode the n rows of each prompt from the prompt's prefilled cache (n copies of it)."""
        from harness.models.shared_prefix import cache_arg

        cache.batch_repeat_interleave(rows["input_ids"].shape[0] // prefix_mask.shape[0])
        if sampler:
            return backend.model.generate(**rows, **cache_arg(cache), generation_config=_greedy(backend, gen),
                                          logits_processor=sampler)
        return backend.model.generate(**rows, **cache_arg(cache), generation_config=backend.generation_config(gen, 1))


class SharedPrefix(PrefillOnce):
    name = "shared prefix"
    shares_prefix = True

    def continue_rows(self, backend, rows, cache, prefix_mask, gen, sampler):
        from harness.models.shared_prefix import cache_arg, decoding_with, sampling_processors, shared_prefix_cache

        # +1: the last prompt token is written to each row's own part too.
        shared = shared_prefix_cache(cache, prefix_mask, capacity=gen.budget + 1)
        sampler = sampler or ([] if gen.greedy else sampling_processors(gen.temperature, gen.top_k, gen.top_p))
        with decoding_with(backend.model, shared):
            return backend.model.generate(**rows, **cache_arg(shared), generation_config=_greedy(backend, gen),
                                          logits_processor=sampler)


COPIES = Copies()


def pick_decoding(model: Any, family: Any) -> Decoding:
    """The strategy a loaded model decodes samples with (see the module docstring)."""
    from harness.models.shared_prefix import supports_shared_prefix

    if not family.prefix_split:
        return COPIES
    return SharedPrefix() if supports_shared_prefix(model) else PrefillOnce()


def _greedy(backend: Any, gen: GenConfig):
    """`generate`'s greedy mode: the logits processors (if any) decide the token."""
    return backend.generation_config(GenConfig(max_new_tokens=gen.budget), 1)


def _prefill(backend: Any, inputs: dict[str, Any], n: int):
    """The cache of every prompt minus its last token, filled once (a 1-token generate)."""
    from harness.models import families
    from harness.models.shared_prefix import follow_copies

    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    prefix = {k: v for k, v in families.trim_right(inputs, 1).items() if k not in ("input_ids", "attention_mask")}
    once = backend.generation_config(GenConfig(max_new_tokens=1), 1)
    once.return_dict_in_generate = True
    first = backend.model.generate(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], **prefix, generation_config=once)
    follow_copies(backend, lambda deltas: deltas.repeat_interleave(n, dim=0))
    return first.past_key_values  # holds exactly the prompt tokens but the last
