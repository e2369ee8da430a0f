"""Shared-prefix sampling: attention over one copy of the prompt equals attention over N copies,
and the inverse-CDF sampler draws from the warped distribution."""
from __future__ import annotations

import pytest

from conftest import geoqa_inputs
from harness.core.types import GenConfig

torch = pytest.importorskip("torch")


def _reference_attention(query, prompt_keys, prompt_values, valid, own_keys, own_values, repeats):
    """Plain softmax attention with the prompt copied to every row (what transformers' sdpa sees)."""
    groups = query.shape[1] // prompt_keys.shape[1]
    keys = torch.cat([prompt_keys.repeat_interleave(repeats, 0), own_keys], dim=2).repeat_interleave(groups, 1)
    values = torch.cat([prompt_values.repeat_interleave(repeats, 0), own_values], 2).repeat_interleave(groups, 1)
    q_len, own_len = query.shape[2], own_keys.shape[2]
    own_visible = torch.ones(q_len, own_len, dtype=torch.bool).tril(own_len - q_len)
    visible = torch.cat([valid.repeat_interleave(repeats, 0)[:, None, None, :].expand(-1, 1, q_len, -1),
                         own_visible.expand(query.shape[0], 1, q_len, own_len)], dim=-1)
    out = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=visible)
    return out.transpose(1, 2)


@pytest.mark.parametrize("q_len", [1, 3])
def test_attention_over_one_prompt_copy_equals_attention_over_n_copies(q_len):
    from types import SimpleNamespace

    from harness.models.shared_prefix import _active, shared_prefix_attention

    gen = torch.Generator().manual_seed(0)
    prompts, repeats, kv_heads, heads, prompt_len, own_len, dim = 3, 4, 2, 4, 7, 5, 8  # grouped-query heads
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    prompt_keys, prompt_values = rand(prompts, kv_heads, prompt_len, dim), rand(prompts, kv_heads, prompt_len, dim)
    valid = torch.ones(prompts, prompt_len, dtype=torch.bool)
    valid[1, :2] = valid[2, :5] = False  # left padding of different widths
    rows = prompts * repeats
    query = rand(rows, heads, q_len, dim)
    own_keys, own_values = rand(rows, kv_heads, own_len, dim), rand(rows, kv_heads, own_len, dim)
    layer = SimpleNamespace(prefix_keys=prompt_keys, prefix_values=prompt_values, prefix_valid=valid)
    _active.append([layer])
    try:
        out, _ = shared_prefix_attention(SimpleNamespace(layer_idx=0), query, own_keys, own_values, None,
                                         scaling=dim ** -0.5)
    finally:
        _active.pop()
    expected = _reference_attention(query, prompt_keys, prompt_values, valid, own_keys, own_values, repeats)
    assert out.shape == (rows, q_len, heads, dim)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llava", "qwen2vl"])
def test_shared_prefix_decoding_gives_the_logits_of_repeated_prompts(small_backends, arch):
    """Greedy decode steps through `generate`: shared-prefix cache vs the prompt cache copied n times."""
    import contextlib

    from harness.models.shared_prefix import decoding_with, shared_prefix_cache

    backend, n, steps = small_backends[arch], 3, 5
    model = backend.model
    inputs = geoqa_inputs(backend)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert bool((mask == 0).any())  # the batch really is left padded
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in extra:
        extra["mm_token_type_ids"] = extra["mm_token_type_ids"][:, :-1]
    greedy = backend.generation_config(GenConfig(max_new_tokens=steps), 1)
    greedy.return_dict_in_generate, greedy.output_logits = True, True
    greedy.eos_token_id = None  # every step runs for every row

    def decode(make_cache, context):
        once = backend.generation_config(GenConfig(max_new_tokens=1), 1)
        once.return_dict_in_generate = True
        with torch.inference_mode():
            first = model.generate(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], **extra, generation_config=once)
            if getattr(model.model, "rope_deltas", None) is not None:
                model.model.rope_deltas = model.model.rope_deltas.repeat_interleave(n, dim=0)
            cache = make_cache(first.past_key_values)
            with context(cache):
                out = model.generate(input_ids=ids.repeat_interleave(n, 0), attention_mask=mask.repeat_interleave(n, 0),
                                     past_key_values=cache, generation_config=greedy)
        return out.sequences, torch.stack(out.logits, 1)

    def repeated(cache):
        cache.batch_repeat_interleave(n)
        return cache

    plain_ids, plain = decode(repeated, lambda cache: contextlib.nullcontext())
    shared_ids, shared = decode(lambda cache: shared_prefix_cache(cache, mask[:, :-1], capacity=steps + 1),
                                lambda cache: decoding_with(model, cache))
    assert plain.shape[1] == steps
    torch.testing.assert_close(shared, plain, rtol=1e-4, atol=1e-4)
    assert torch.equal(shared_ids, plain_ids)


@pytest.mark.parametrize("arch", ["llava", "qwen2vl"])
def test_near_zero_temperature_sampling_reproduces_greedy_decoding(small_backends, arch):
    backend = small_backends[arch]
    assert backend.shared_prefix
    inputs = geoqa_inputs(backend)
    greedy = backend.generate_expanded(inputs, GenConfig(max_new_tokens=6), 1)
    cold = backend.generate_expanded(inputs, GenConfig(max_new_tokens=6, temperature=1e-4), 4)
    assert torch.equal(cold, greedy.repeat_interleave(4, dim=0))


def test_inverse_cdf_sampler_draws_from_the_warped_distribution():
    from scipy.stats import chisquare

    from harness.models.shared_prefix import sampling_processors

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -30.0])
    rows, temperature = 40_000, 0.7
    scores = logits.repeat(rows, 1)
    torch.manual_seed(0)
    for processor in sampling_processors(temperature, top_k=0, top_p=1.0):
        scores = processor(None, scores)
    drawn = scores.argmax(-1)
    assert bool((scores.isinf().sum(-1) == logits.numel() - 1).all())  # exactly one finite score per row
    counts = torch.bincount(drawn, minlength=logits.numel()).double()
    expected = torch.softmax(logits / temperature, -1).double() * rows
    kept = expected > 5  # chi-square needs expected counts above ~5; the -30 logit is never drawn
    assert counts[~kept].sum() == 0
    assert chisquare(counts[kept].numpy(), expected[kept].numpy() * counts[kept].sum().item()
                     / expected[kept].sum().item()).pvalue > 0.001

    scores = logits.repeat(rows, 1)
    for processor in sampling_processors(1.0, top_k=2, top_p=1.0):
        scores = processor(None, scores)
    assert set(scores.argmax(-1).tolist()) == {0, 1}  # top-k keeps the two largest only


@pytest.mark.parametrize("text, expected", [
    ({}, True),  # Llama: no sliding window
    ({"sliding_window": 4096, "use_sliding_window": False}, True),  # Qwen2: set but switched off
    ({"sliding_window": 4096}, False),  # Mistral: set, so on
    ({"layer_types": ["full_attention", "sliding_attention"]}, False),
])
def test_sliding_window_models_keep_the_copied_cache(text, expected):
    from types import SimpleNamespace

    from harness.models.shared_prefix import supports_shared_prefix

    config = SimpleNamespace(get_text_config=lambda: SimpleNamespace(**text))
    model = SimpleNamespace(config=config, _can_set_attn_implementation=lambda: True)
    assert supports_shared_prefix(model) is expected
