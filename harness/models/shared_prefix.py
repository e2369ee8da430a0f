"""N sampled continuations of one prompt that share the prompt's keys and values (cascade attention).

Sampling N outputs per prompt with `num_return_sequences`, or by repeating a prefilled KV cache,
gives every one of the N rows its own copy of the prompt's keys and values. Each decode step then
reads the prompt N times, and a growing cache is re-copied by `torch.cat` at every step: on a
CPU those copies, not the model's weights, are most of the cost of sampling.

Here the prompt's keys and values are kept ONCE per prompt (`SharedPrefixLayer.prefix_*`), and
only the tokens each row generates are stored per row, in a buffer allocated once. Attention
(`shared_prefix_attention`, registered with transformers' AttentionInterface) splits each row's
softmax into the prompt part, computed for the N rows of a prompt as N more queries against one
copy of its keys (one matrix product instead of N matrix-vector products), and the row's own
part; the two are merged exactly by their log-sum-exp. This is the shared-prefix ("cascade")
attention of vLLM and FlashInfer, written for transformers' eager decode loop.

`sampling_processors` draw each row's token from its distribution with one uniform number
(inverse CDF) and hand `generate` scores whose argmax is that token, so `generate` runs in its
greedy mode and skips `torch.multinomial`, which on a CPU costs as much as the model's decode step.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

ATTENTION_NAME = "harness_shared_prefix"
_active: list[list[Any]] = []  # the SharedPrefixLayers of the cache `generate` is decoding with


@functools.cache
def _layer_class():
    from transformers.cache_utils import CacheLayerMixin

    class SharedPrefixLayer(CacheLayerMixin):
        """One attention layer's cache: the prompt's keys/values once per prompt, generated ones per row."""

        def __init__(self, prefix_keys: "torch.Tensor", prefix_values: "torch.Tensor",
                     prefix_valid: "torch.Tensor", capacity: int) -> None:
            super().__init__()
            self.prefix_keys, self.prefix_values = prefix_keys, prefix_values  # [B, kv_heads, P, d]
            self.prefix_valid = prefix_valid  # [B, P] bool: False at left padding
            self.capacity, self.length = capacity, 0
            self.is_initialized = True

        def lazy_initialization(self, key_states, value_states) -> None:
            import torch

            # The first tokens written fix the row count: B prompts x N samples.
            rows, heads, _, dim = key_states.shape
            shape = (rows, heads, self.capacity, dim)
            self.keys = torch.empty(shape, dtype=key_states.dtype, device=key_states.device)
            self.values = torch.empty(shape, dtype=value_states.dtype, device=value_states.device)

        def update(self, key_states, value_states, *args, **kwargs):
            if self.keys is None:
                self.lazy_initialization(key_states, value_states)
            start, end = self.length, self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"shared-prefix cache holds {self.capacity} new tokens; {end} were written")
            self.keys[:, :, start:end] = key_states
            self.values[:, :, start:end] = value_states
            self.length = end
            return self.keys[:, :, :end], self.values[:, :, :end]

        def get_seq_length(self) -> int:
            return self.prefix_keys.shape[-2] + self.length

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.get_seq_length() + query_length, 0

        def get_max_length(self) -> int:
            return self.prefix_keys.shape[-2] + self.capacity

    return SharedPrefixLayer


def shared_prefix_cache(prefix_cache: Any, prefix_valid: "torch.Tensor", capacity: int):
    """A cache for N rows per prompt continuing `prefix_cache` (a filled DynamicCache of the B
    prompts; N follows from the rows first written); `capacity` bounds the tokens each row may add."""
    from transformers.cache_utils import Cache

    layer_class = _layer_class()
    layers = [layer_class(layer.keys, layer.values, prefix_valid.bool(), capacity)
              for layer in prefix_cache.layers]
    return Cache(layers=layers)


def shared_prefix_attention(module: Any, query: "torch.Tensor", key: "torch.Tensor", value: "torch.Tensor",
                            attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                            **kwargs: Any) -> tuple["torch.Tensor", None]:
    """Attention of rows = B * N queries over their prompt (shared) and their own generated tokens.

    query: [rows, heads, q, d]; key/value: the rows' own tokens [rows, kv_heads, t, d] (the q new
    ones last). Returns [rows, q, heads, d], as transformers' attention functions do.
    """
    import torch

    layer = _active[-1][module.layer_idx]
    prefix_keys, prefix_values = layer.prefix_keys, layer.prefix_values
    rows, heads, q_len, dim = query.shape
    prompts, kv_heads, prompt_len, _ = prefix_keys.shape
    n, groups, own_len = rows // prompts, heads // kv_heads, key.shape[-2]
    scale = scaling if scaling is not None else dim ** -0.5
    # Query head h reads key head h // groups (transformers' repeat_kv), so heads split as (kv_heads, groups).
    width = groups * q_len

    # The prompt part, for the n rows of each prompt at once: [B, kv_heads, n * width, P].
    q_prompt = query.view(prompts, n, kv_heads, groups, q_len, dim).transpose(1, 2)
    prompt_scores = torch.matmul(q_prompt.reshape(prompts, kv_heads, n * width, dim),
                                 prefix_keys.transpose(-1, -2)).float().mul_(scale)
    prompt_scores.masked_fill_(~layer.prefix_valid[:, None, None, :], float("-inf"))
    prompt_max = prompt_scores.amax(-1, keepdim=True)
    prompt_weights = prompt_scores.sub_(prompt_max).exp_()
    prompt_sum = prompt_weights.sum(-1, keepdim=True)
    prompt_out = torch.matmul(prompt_weights.to(prefix_values.dtype), prefix_values).float()

    def per_row(x: "torch.Tensor") -> "torch.Tensor":  # [B, kv_heads, n * width, k] -> [rows, kv_heads, width, k]
        return x.view(prompts, kv_heads, n, width, x.shape[-1]).transpose(1, 2).reshape(rows, kv_heads, width, -1)

    # The row's own part: [rows, kv_heads, width, t].
    own_scores = torch.matmul(query.reshape(rows, kv_heads, width, dim), key.transpose(-1, -2)).float().mul_(scale)
    if q_len > 1:  # new token i sees own tokens up to own_len - q_len + i
        visible = torch.ones(q_len, own_len, dtype=torch.bool, device=query.device).tril(own_len - q_len)
        own_scores.masked_fill_(~visible.repeat(groups, 1), float("-inf"))
    own_max = own_scores.amax(-1, keepdim=True)
    own_weights = own_scores.sub_(own_max).exp_()
    own_sum = own_weights.sum(-1, keepdim=True)
    own_out = torch.matmul(own_weights.to(value.dtype), value).float()

    # Exact merge of the two softmax parts.
    prompt_max, prompt_sum, prompt_out = per_row(prompt_max), per_row(prompt_sum), per_row(prompt_out)
    top = torch.maximum(prompt_max, own_max)
    prompt_scale, own_scale = (prompt_max - top).exp_(), (own_max - top).exp_()
    out = (prompt_out * prompt_scale + own_out * own_scale) / (prompt_sum * prompt_scale + own_sum * own_scale)
    out = out.view(rows, kv_heads, groups, q_len, dim).permute(0, 3, 1, 2, 4).reshape(rows, q_len, heads, dim)
    return out.to(query.dtype), None


def supports_shared_prefix(model: Any) -> bool:
    """Full causal attention in the language model (no sliding window), via AttentionInterface."""
    text = model.config.get_text_config()
    # A sliding window is on when one is set, unless the config switches it off (Qwen2's
    # use_sliding_window=False); per-layer types may also name sliding layers.
    sliding = getattr(text, "sliding_window", None) is not None and getattr(text, "use_sliding_window", True)
    sliding = sliding or "sliding_attention" in (getattr(text, "layer_types", None) or ())
    return not sliding and model._can_set_attn_implementation()


@contextmanager
def decoding_with(model: Any, cache: Any) -> Iterator[None]:
    """Route the language model's attention through `shared_prefix_attention` for `cache`."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
    text = model.config.get_text_config()
    before = text._attn_implementation
    _active.append(cache.layers)
    text._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        text._attn_implementation = before
        _active.pop()


_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(c: int) -> int:  # a 64-bit constant as the int64 torch multiplies with (wrapping)
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(x: "torch.Tensor", bits: int) -> "torch.Tensor":  # logical right shift of int64
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def counter_uniforms(seeds: "torch.Tensor", step: int) -> "torch.Tensor":
    """One uniform number in [0, 1) per row: splitmix64 of (row seed, step), float64.

    A counter-based draw: the number row r uses at step t depends only on its seed and t, never
    on the other rows of the batch or on a shared generator's position, so a sample's output
    does not depend on batch size, batch composition or what was cached before.
    """
    z = seeds + _signed((_GOLDEN * (step + 1)) % (1 << 64))
    z = (z ^ _shr(z, 30)) * _signed(_MIX1)
    z = (z ^ _shr(z, 27)) * _signed(_MIX2)
    z = z ^ _shr(z, 31)
    return _shr(z, 11).double() / float(1 << 53)


def sampling_processors(temperature: float, top_k: int, top_p: float, seeds: "list[int] | None" = None) -> list:
    """Logits processors that make greedy decoding draw from softmax(logits / T) after top-k/top-p.

    With `seeds` (one per row), row r's token at step t is drawn with counter_uniforms(seed_r, t);
    without, from torch's global generator (seeded by the caller).
    """
    import torch
    from transformers import LogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    class InverseCdfSampler(LogitsProcessor):
        """Draws one token per row by inverting the cumulative distribution with one uniform number,
        and returns scores whose argmax is that token. One random number per row, where
        `torch.multinomial` or Gumbel noise cost a full vocabulary of them (slow on a CPU)."""

        def __init__(self) -> None:
            self.start: int | None = None  # input length at the first draw: step = tokens drawn so far

        def __call__(self, input_ids, scores):
            cdf = torch.softmax(scores.float(), dim=-1).cumsum_(-1)
            if seeds is None:
                u = torch.rand(cdf.shape[0], 1, device=cdf.device)
            else:
                if len(seeds) != cdf.shape[0]:
                    raise ValueError(f"{len(seeds)} row seeds for {cdf.shape[0]} rows")
                self.start = input_ids.shape[1] if self.start is None else self.start
                rows = torch.tensor(seeds, dtype=torch.long)
                u = counter_uniforms(rows, input_ids.shape[1] - self.start).to(cdf.device, cdf.dtype)[:, None]
            u = u * cdf[:, -1:]
            # The first index whose cumulative probability exceeds u: zero-probability tokens never win.
            # A u that rounds up to the total falls past the end: take the last token with mass instead.
            token = torch.minimum(torch.searchsorted(cdf, u, right=True), torch.searchsorted(cdf, cdf[:, -1:].contiguous()))
            return torch.full_like(scores, float("-inf")).scatter_(1, token, 0.0)

    processors: list = [TemperatureLogitsWarper(temperature)]
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    return processors + [InverseCdfSampler()]
