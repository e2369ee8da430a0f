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

The same cache serves prompts that share a prefix but not their ends (`common_prefix_generate`:
self-select's prompts of one question, image and question then different candidate lists): the
common prefix is prefilled once per question, each prompt's suffix (left padded) is prefilled in
one fused attention call against that copy, and its reply decodes with the split attention above.

`sampling_processors` draw each row's token from its distribution with one uniform number
(inverse CDF) and hand `generate` scores whose argmax is that token, so `generate` runs in its
greedy mode and skips `torch.multinomial`, which on a CPU costs as much as the model's decode step.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    import torch

ATTENTION_NAME = "harness_shared_prefix"
LAYER_ATTR = "harness_prefix_layer"  # set on each text attention module while `decoding_with` runs


@functools.cache
def _layer_class():
    from transformers.cache_utils import CacheLayerMixin

    class SharedPrefixLayer(CacheLayerMixin):
        """One attention layer's cache: the prompt's keys/values once per prompt, generated ones per row."""

        def __init__(self, prefix_keys: "torch.Tensor", prefix_values: "torch.Tensor",
                     prefix_valid: "torch.Tensor", capacity: int, row_counts: tuple[int, ...] | None = None,
                     own_valid: "torch.Tensor | None" = None) -> None:
            super().__init__()
            self.prefix_keys, self.prefix_values = prefix_keys, prefix_values  # [B, kv_heads, P, d]
            self.prefix_valid = prefix_valid  # [B, P] bool: False at left padding
            self.capacity, self.length = capacity, 0
            # Rows per prompt when they differ (prompts sharing a prefix, rows in prompt order);
            # None: N rows per prompt. own_valid [rows, capacity]: False at padding of the rows' own
            # tokens (suffixes of different lengths); None: every own token is real.
            self.row_counts, self.own_valid = row_counts, own_valid
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


def shared_prefix_cache(prefix_cache: Any, prefix_valid: "torch.Tensor", capacity: int,
                        row_counts: Sequence[int] | None = None, own_valid: "torch.Tensor | None" = None):
    """A cache for N rows per prompt continuing `prefix_cache` (a filled DynamicCache of the B
    prompts; N follows from the rows first written); `capacity` bounds the tokens each row may add.

    With `row_counts`, prompt b has row_counts[b] rows (in prompt order) instead of N each, and
    `own_valid` [rows, t] marks the real tokens among the first t each row writes (left-padded
    suffixes); later tokens count as real."""
    import torch
    from transformers.cache_utils import Cache

    valid = None
    if own_valid is not None:
        valid = torch.ones(own_valid.shape[0], capacity, dtype=torch.bool, device=own_valid.device)
        valid[:, :own_valid.shape[1]] = own_valid.bool()
    counts = tuple(int(c) for c in row_counts) if row_counts is not None else None
    layer_class = _layer_class()
    layers = [layer_class(layer.keys, layer.values, prefix_valid.bool(), capacity, counts, valid)
              for layer in prefix_cache.layers]
    return Cache(layers=layers)


def _prompt_part(query: "torch.Tensor", keys: "torch.Tensor", values: "torch.Tensor", valid: "torch.Tensor",
                 kv_heads: int, scale: float) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Softmax parts (max, sum, weighted values) of query rows [B * n, heads, q, d] over their
    prompt's keys [B, kv_heads, P, d], the n rows of a prompt as n more queries against one copy;
    returned per row as [B * n, kv_heads, groups * q, 1 / 1 / d] (float32)."""
    import torch

    rows, heads, q_len, dim = query.shape
    prompts = keys.shape[0]
    n, groups = rows // prompts, heads // kv_heads
    width = groups * q_len
    q_prompt = query.reshape(prompts, n, kv_heads, groups, q_len, dim).transpose(1, 2)
    scores = torch.matmul(q_prompt.reshape(prompts, kv_heads, n * width, dim), keys.transpose(-1, -2)).float().mul_(scale)
    scores.masked_fill_(~valid[:, None, None, :], float("-inf"))
    top = scores.amax(-1, keepdim=True)
    weights = scores.sub_(top).exp_()
    total = weights.sum(-1, keepdim=True)
    out = torch.matmul(weights.to(values.dtype), values).float()

    def per_row(x: "torch.Tensor") -> "torch.Tensor":  # [B, kv_heads, n * width, k] -> [rows, kv_heads, width, k]
        return x.view(prompts, kv_heads, n, width, x.shape[-1]).transpose(1, 2).reshape(rows, kv_heads, width, -1)

    return per_row(top), per_row(total), per_row(out)


def _many_queries_attention(layer: Any, query: "torch.Tensor", key: "torch.Tensor", value: "torch.Tensor",
                            scaling: float | None) -> "torch.Tensor":
    """Several new tokens per row at once (a suffix after a shared prefix): the prompt is copied
    to each row for this one step and the fused attention kernel runs, which beats the split
    softmax when there are many queries; single-token decode steps take the split path."""
    import torch

    rows, heads, q_len, dim = query.shape
    prompts, kv_heads, prompt_len, _ = layer.prefix_keys.shape
    counts = getattr(layer, "row_counts", None) or [rows // prompts] * prompts
    of_row = torch.repeat_interleave(torch.arange(prompts, device=query.device),
                                     torch.tensor(counts, device=query.device))
    own_len = key.shape[-2]
    visible = torch.ones(q_len, own_len, dtype=torch.bool, device=query.device).tril(own_len - q_len)
    visible = visible.expand(rows, q_len, own_len)
    own_valid = getattr(layer, "own_valid", None)
    if own_valid is not None:
        visible = visible & own_valid[:, None, :own_len]
    mask = torch.cat([layer.prefix_valid[of_row][:, None, :].expand(rows, q_len, prompt_len), visible], -1)
    groups = heads // kv_heads
    keys = torch.cat([layer.prefix_keys[of_row], key], 2).repeat_interleave(groups, 1)
    values = torch.cat([layer.prefix_values[of_row], value], 2).repeat_interleave(groups, 1)
    out = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask[:, None], scale=scaling)
    return out.transpose(1, 2).contiguous()


def shared_prefix_attention(module: Any, query: "torch.Tensor", key: "torch.Tensor", value: "torch.Tensor",
                            attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                            **kwargs: Any) -> tuple["torch.Tensor", None]:
    """Attention of rows = B * N queries over their prompt (shared) and their own generated tokens.

    query: [rows, heads, q, d]; key/value: the rows' own tokens [rows, kv_heads, t, d] (the q new
    ones last). Returns [rows, q, heads, d], as transformers' attention functions do. A decode
    step (q = 1) splits the softmax; several new tokens at once go to `_many_queries_attention`.
    """
    import torch

    layer = getattr(module, LAYER_ATTR)  # this module's SharedPrefixLayer (decoding_with)
    if query.shape[2] > 1:
        return _many_queries_attention(layer, query, key, value, scaling), None
    prefix_keys, prefix_values = layer.prefix_keys, layer.prefix_values
    rows, heads, q_len, dim = query.shape
    kv_heads = prefix_keys.shape[1]
    groups, own_len = heads // kv_heads, key.shape[-2]
    scale = scaling if scaling is not None else dim ** -0.5
    # Query head h reads key head h // groups (transformers' repeat_kv), so heads split as (kv_heads, groups).
    width = groups * q_len
    counts = getattr(layer, "row_counts", None)
    if counts is None:  # n rows per prompt: every prompt's rows in one batched product
        prompt_max, prompt_sum, prompt_out = _prompt_part(query, prefix_keys, prefix_values, layer.prefix_valid,
                                                          kv_heads, scale)
    else:  # prompts with different row counts: one product per prompt
        parts, start = [], 0
        for b, count in enumerate(counts):
            parts.append(_prompt_part(query[start:start + count], prefix_keys[b:b + 1], prefix_values[b:b + 1],
                                      layer.prefix_valid[b:b + 1], kv_heads, scale))
            start += count
        prompt_max, prompt_sum, prompt_out = (torch.cat(x) for x in zip(*parts))

    # The row's own part: [rows, kv_heads, width, t].
    own_scores = torch.matmul(query.reshape(rows, kv_heads, width, dim), key.transpose(-1, -2)).float().mul_(scale)
    own_valid = getattr(layer, "own_valid", None)
    if own_valid is not None:  # padding between a row's prefix and its suffix
        own_scores.masked_fill_(~own_valid[:, None, None, :own_len], float("-inf"))
    own_max = own_scores.amax(-1, keepdim=True)  # finite: the new token always sees itself
    own_weights = own_scores.sub_(own_max).exp_()
    own_sum = own_weights.sum(-1, keepdim=True)
    own_out = torch.matmul(own_weights.to(value.dtype), value).float()

    # Exact merge of the two softmax parts.
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
    """Route the language model's attention through `shared_prefix_attention` for `cache`: each
    text attention module holds its layer of the cache for the duration (state on the model being
    decoded, none in this module; a nested decode restores the outer one's layers)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
    text = model.config.get_text_config()
    attention = [m for m in model.modules() if getattr(m, "config", None) is text and isinstance(getattr(m, "layer_idx", None), int)]
    saved = [getattr(m, LAYER_ATTR, None) for m in attention]
    before = text._attn_implementation
    for m in attention:
        setattr(m, LAYER_ATTR, cache.layers[m.layer_idx])
    text._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        text._attn_implementation = before
        for m, old in zip(attention, saved):
            if old is None:
                delattr(m, LAYER_ATTR)
            else:
                setattr(m, LAYER_ATTR, old)


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


def follow_copies(backend: Any, expand) -> None:
    """M-RoPE families (Family.mrope) keep each prompt's position offset from the prefill; the rows
    decoding from a prompt's cache continue from it (`expand` maps prompts to rows)."""
    inner = getattr(backend.model, "model", None)
    if backend.family.mrope and getattr(inner, "rope_deltas", None) is not None:
        inner.rope_deltas = expand(inner.rope_deltas)


@functools.cache
def _cache_kwarg() -> str:
    """What `generate` calls a prefilled cache: `cache` in transformers that renamed it (5.2x; the old
    `past_key_values` warns there and goes in 6.0), `past_key_values` before (the vLLM lock's 5.19)."""
    import inspect

    from transformers.generation.utils import GenerationMixin

    return "cache" if "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters \
        else "past_key_values"


def cache_arg(cache: Any) -> dict[str, Any]:
    """`generate`'s keyword for a prefilled cache, under this transformers' name for it."""
    return {_cache_kwarg(): cache}


def common_prefix_generate(backend: Any, texts: Sequence[str], images: Sequence[Sequence[Any]],
                           keys: Sequence[Any], gen: Any) -> list[str] | None:
    """Greedy replies to prompts where the prompts of one key share a token prefix, e.g. the
    self-select prompts of one question (image and question, then different candidate lists).

    Each key's common prefix is prefilled ONCE (with its images when the chat template puts them
    before the text, as LLaVA-1.5's and Qwen's do); its prompts' suffixes (left padded) and
    replies attend to that one copy (`shared_prefix_attention`). Every row still sees exactly
    its own prompt's tokens at their own positions, so the replies are those of
    `backend.generate` up to float rounding. Returns None where this path does not apply
    (sampling; inputs other than ids, mask, pixels and Qwen2-VL's grids and token types; Qwen2-VL
    images after the split point); the caller then generates as usual.
    """
    import torch

    if not gen.greedy or not backend.shared_prefix or not texts:
        return None
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    image_token = backend.image_token_id
    prefixes, suffixes, prefix_pixels, prefix_grids, suffix_pixels = [], [], [], [], []
    for members in groups.values():
        inputs = backend.batch_inputs([texts[i] for i in members], [images[i] for i in members])
        if set(inputs) - {"input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"}:
            return None
        rows = [row[mask.bool()].tolist() for row, mask in zip(inputs["input_ids"].cpu(), inputs["attention_mask"].cpu())]
        length = min(len(r) for r in rows) - 1  # every row keeps >= 1 token of its own (it writes the first step)
        for r in rows[1:]:
            length = next((j for j in range(length) if r[j] != rows[0][j]), length)
        # Images go wholly to the prefix (encoded once) or wholly to the suffixes (per row).
        if any(image_token in r[length:] for r in rows) and image_token in rows[0][:length]:
            length = rows[0].index(image_token)
        if length < 1:
            return None
        pixels, grids = inputs.get("pixel_values"), inputs.get("image_grid_thw")
        if pixels is not None and image_token in rows[0][:length]:  # the rows' images are the same: the first row's
            prefix_pixels.append(pixels[: len(pixels) // len(members)])
            if grids is not None:  # Qwen2-VL: one (t, h, w) grid per image
                prefix_grids.append(grids[: len(grids) // len(members)])
        elif pixels is not None:
            if grids is not None:  # M-RoPE positions of images after a split point: not handled here
                return None
            suffix_pixels.append(pixels)
        prefixes.append(rows[0][:length])
        suffixes += [r[length:] for r in rows]
    order = [i for members in groups.values() for i in members]
    counts = [len(members) for members in groups.values()]
    device = backend.model.device

    def left_padded(seqs: list[list[int]]) -> tuple["torch.Tensor", "torch.Tensor"]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), backend.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s):] = torch.tensor(s)
            mask[row, width - len(s):] = 1
        return ids.to(device), mask.to(device)

    prefix_ids, prefix_mask = left_padded(prefixes)
    suffix_ids, suffix_mask = left_padded(suffixes)
    of_row = torch.repeat_interleave(torch.arange(len(counts), device=device), torch.tensor(counts, device=device))
    # Positions come from the mask's running count, so the padding between a row's prefix and
    # its suffix shifts nothing: the suffix continues right after the prefix.
    row_ids = torch.cat([prefix_ids[of_row], suffix_ids], 1)
    row_mask = torch.cat([prefix_mask[of_row], suffix_mask], 1)
    once = backend.generation_config(type(gen)(max_new_tokens=1), 1)
    once.return_dict_in_generate = True
    greedy = backend.generation_config(gen, 1)
    vision: dict[str, Any] = {"pixel_values": torch.cat(prefix_pixels)} if prefix_pixels else {}
    if prefix_grids:  # Qwen2-VL's M-RoPE also needs which positions hold image tokens
        vision.update(image_grid_thw=torch.cat(prefix_grids), mm_token_type_ids=(prefix_ids == image_token).long())
    with torch.inference_mode():
        first = backend.model.generate(input_ids=prefix_ids, attention_mask=prefix_mask, generation_config=once,
                                       **vision)
        follow_copies(backend, lambda deltas: deltas[of_row])  # M-RoPE: each prefix's rows continue its offset
        shared = shared_prefix_cache(first.past_key_values, prefix_mask, capacity=suffix_ids.shape[1] + gen.budget,
                                     row_counts=counts, own_valid=suffix_mask)
        torch.manual_seed(gen.seed)
        with decoding_with(backend.model, shared):
            out = backend.model.generate(input_ids=row_ids, attention_mask=row_mask, **cache_arg(shared),
                                         generation_config=greedy,
                                         **({"pixel_values": torch.cat(suffix_pixels)} if suffix_pixels else {}))
    decoded = backend.tokenizer.batch_decode(out[:, row_ids.shape[1]:], skip_special_tokens=True)
    replies: list[str] = [""] * len(texts)
    for i, text in zip(order, decoded):
        replies[i] = text.strip()
    return replies
