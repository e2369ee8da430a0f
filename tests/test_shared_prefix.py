"""Shared-prefix sampling: attention over one copy of the prompt equals attention over N copies,
and the inverse-CDF sampler draws from the warped distribution."""
from __future__ import annotations

import pytest

from conftest import geoqa_inputs
from harness.core.types import GenConfig
from harness.models.shared_prefix import cache_arg

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


def _attend(layer, query, own_keys, own_values):
    """shared_prefix_attention of one layer's cache (`layer`), as transformers would call it."""
    from types import SimpleNamespace

    from harness.models.shared_prefix import LAYER_ATTR, shared_prefix_attention

    module = SimpleNamespace(layer_idx=0, **{LAYER_ATTR: layer})  # what decoding_with sets on each attention module
    out, _ = shared_prefix_attention(module, query, own_keys, own_values, None, scaling=query.shape[-1] ** -0.5)
    return out


@pytest.mark.parametrize("q_len", [1, 3])
def test_attention_over_one_prompt_copy_equals_attention_over_n_copies(q_len):
    from types import SimpleNamespace

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
    out = _attend(layer, query, own_keys, own_values)
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
                                     **cache_arg(cache), generation_config=greedy)
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


# --- prompts of one question sharing their prefix (self-select) ---------------------------------------
@pytest.mark.parametrize("q_len", [1, 4])
def test_attention_with_uneven_rows_and_padded_suffixes_equals_copied_prompts(q_len):
    """Prompts with 3 / 1 / 2 rows, each row's own tokens left padded: the prompt part read once per
    prompt equals plain attention over [prompt copy | own tokens] with the padding masked."""
    from types import SimpleNamespace

    gen = torch.Generator().manual_seed(1)
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    counts, kv_heads, heads, prompt_len, own_len, dim = (3, 1, 2), 2, 4, 6, 7, 8
    rows = sum(counts)
    prompt_keys, prompt_values = rand(3, kv_heads, prompt_len, dim), rand(3, kv_heads, prompt_len, dim)
    valid = torch.ones(3, prompt_len, dtype=torch.bool)
    valid[1, :2] = False
    own_valid = torch.ones(rows, own_len, dtype=torch.bool)
    own_valid[0, :3] = own_valid[4, :1] = own_valid[5, :4] = False  # suffixes of different lengths
    query = rand(rows, heads, q_len, dim)
    own_keys, own_values = rand(rows, kv_heads, own_len, dim), rand(rows, kv_heads, own_len, dim)
    layer = SimpleNamespace(prefix_keys=prompt_keys, prefix_values=prompt_values, prefix_valid=valid,
                            row_counts=counts, own_valid=own_valid)
    out = _attend(layer, query, own_keys, own_values)
    of_row = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    keys = torch.cat([prompt_keys[of_row], own_keys], 2).repeat_interleave(heads // kv_heads, 1)
    values = torch.cat([prompt_values[of_row], own_values], 2).repeat_interleave(heads // kv_heads, 1)
    causal = torch.ones(q_len, own_len, dtype=torch.bool).tril(own_len - q_len)
    visible = torch.cat([valid[of_row][:, None, :].expand(rows, q_len, prompt_len),
                         causal[None] & own_valid[:, None, :]], -1)
    expected = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=visible[:, None])
    real = own_valid[:, own_len - q_len:]  # queries at padding positions have no defined output
    torch.testing.assert_close(out.transpose(1, 2)[real[:, None, :].expand(-1, heads, -1)],
                               expected[real[:, None, :].expand(-1, heads, -1)], rtol=1e-5, atol=1e-5)
    assert bool(out.isfinite().all())  # padding queries too: nothing NaN leaks into later layers


IMAGE_FIRST = (  # LLaVA-1.5's layout: the image before the question (tiny's template puts it after)
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for part in m['content'] %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for part in m['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %} "
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_backend():
    """The bundled trained tiny LLaVA: its replies differ from prompt to prompt (a random model's
    are all the same junk, which would let a wrong prefix pass)."""
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint

    return HFBackend(resolve_checkpoint("tiny"), device="cpu")


@pytest.mark.parametrize("layout", ["image_last", "image_first"])
def test_prompts_sharing_a_prefix_get_the_replies_of_plain_generate(tiny_backend, layout, monkeypatch):
    """Self-select prompts of three questions (different candidate lists), in one batch: one
    prefill per question, the same greedy replies as `generate` on the whole prompts."""
    from harness.core.task import get_task
    from harness.models.shared_prefix import common_prefix_generate
    from harness.core.types import Prompt
    from harness.stats.selection import selection_prompt

    from conftest import BUNDLED

    backend = tiny_backend
    if layout == "image_first":
        monkeypatch.setattr(backend.tokenizer, "chat_template", IMAGE_FIRST)
        if hasattr(backend, "chat_template"):
            monkeypatch.setattr(backend, "chat_template", IMAGE_FIRST)
    task = get_task("geoqa")
    items = task.load(BUNDLED, "test")[:3]
    candidates = [["Answer: A"], ["so 30. Answer: B", "Answer: A"], ["B", "angle 2 is 60", "Answer: (C)"]]
    prompts = [Prompt(selection_prompt(task.prompt(it), cands), it.images) for it in items for cands in candidates]
    gen = GenConfig(max_new_tokens=24)
    expected = [out[0] for out in backend.generate(prompts, gen)]
    from harness.core.images import open_image

    images = [[open_image(ref) for ref in p.images] for p in prompts]
    calls = []
    real_generate = backend.model.generate
    monkeypatch.setattr(backend.model, "generate", lambda **kw: calls.append(kw["input_ids"].shape) or real_generate(**kw))
    replies = common_prefix_generate(backend, [p.text for p in prompts], images, [p.images for p in prompts], gen)
    assert replies == expected and len(set(expected)) > 1  # real, differing replies
    prefix_shape = calls[0]
    assert prefix_shape[0] == 3  # one prefill row per question, not per prompt
    image_tokens = 16 if layout == "image_first" else 0  # 64 px / 16 px patches
    assert prefix_shape[1] >= image_tokens + 20  # the question's tokens (and image, when it comes first)


def test_qwen_prompts_sharing_a_prefix_get_the_token_ids_of_plain_generate(tmp_path):
    """Qwen2-VL (M-RoPE: each prefix's position offset carried to its rows), weights large enough
    that the greedy tokens depend on the prompt: the same token ids as whole prompts."""
    from conftest import BUNDLED
    from harness.core.images import open_image
    from harness.core.task import get_task
    from harness.core.types import Prompt
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.models.shared_prefix import common_prefix_generate
    from harness.stats.selection import selection_prompt
    from trainers.tiny_model import build_tiny, build_tokenizer

    task = get_task("geoqa")
    items = task.load(BUNDLED, "test")[:3]
    tok = build_tokenizer([task.prompt(it) for it in task.load(BUNDLED, "test")[:100]], vocab_size=400)
    ckpt = build_tiny("qwen2vl", tok, tmp_path / "qwen", image_size=32, patch_size=8, hidden=32, layers=2, heads=2,
                      vision_hidden=16, vision_layers=1, vision_heads=2)
    backend = HFBackend(resolve_checkpoint(str(ckpt)), device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():  # init-scale weights give every prompt the same tokens
        for weight in backend.model.parameters():
            if weight.dim() > 1:
                weight.normal_(0, 0.3)
    candidates = [["Answer: A"], ["so 30. Answer: B", "Answer: A"], ["B", "angle 2 is 60", "Answer: (C)"]]
    prompts = [Prompt(selection_prompt(task.prompt(it), cands), it.images) for it in items for cands in candidates]
    decoded = []
    real_decode = backend.tokenizer.batch_decode
    backend.tokenizer.batch_decode = lambda ids, **kw: decoded.append(ids.clone()) or real_decode(ids, **kw)
    gen = GenConfig(max_new_tokens=8)
    expected = [out[0] for out in backend.generate(prompts, gen)]
    images = [[open_image(ref) for ref in p.images] for p in prompts]
    assert common_prefix_generate(backend, [p.text for p in prompts], images, [p.images for p in prompts], gen) == expected
    plain, shared = decoded
    assert len({tuple(row.tolist()) for row in plain}) > 3  # replies that differ by prompt
    assert torch.equal(shared, plain)  # questions are contiguous in this batch: same row order
    # No reply budget named (max_new_tokens None): the bare default, as backend.generate takes it.
    bare = GenConfig()
    texts = [p.text for p in prompts]
    assert common_prefix_generate(backend, texts, images, [p.images for p in prompts], bare) == \
        [out[0] for out in backend.generate(prompts, bare)]


def test_prompt_sharing_leaves_sampling_to_plain_generate(small_backends):
    from harness.models.shared_prefix import common_prefix_generate

    texts, keys = ["Q? Model's Prediction 1: A", "Q? Model's Prediction 1: B"], ["q", "q"]
    sampled = GenConfig(max_new_tokens=4, temperature=0.7)
    assert common_prefix_generate(small_backends["llava"], texts, [[], []], keys, sampled) is None


def test_the_backend_picks_one_decoding_strategy_at_load(small_backends):
    from types import SimpleNamespace

    from harness.models.decoding import Copies, PrefillOnce, SharedPrefix, pick_decoding
    from harness.models.families import family_of

    assert all(isinstance(b.decoding, SharedPrefix) and b.shared_prefix for b in small_backends.values())

    def model(sliding):
        text = SimpleNamespace(sliding_window=4096 if sliding else None)
        return SimpleNamespace(config=SimpleNamespace(get_text_config=lambda: text), _can_set_attn_implementation=lambda: True)

    assert isinstance(pick_decoding(model(False), family_of("mllama")), Copies)  # its prefill cannot be split
    assert type(pick_decoding(model(True), family_of("gemma3"))) is PrefillOnce  # sliding windows: the cache is copied
    assert isinstance(pick_decoding(model(False), family_of("llava")), SharedPrefix)


def test_decoding_keeps_no_module_level_state():
    import ast
    from pathlib import Path

    import harness.models.decoding as decoding
    import harness.models.shared_prefix as shared_prefix

    for module in (decoding, shared_prefix):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        mutable = [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                   and isinstance(node.value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp))]
        assert not mutable, (module.__name__, mutable)
