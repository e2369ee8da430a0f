"""The embedded tiny VLMs: real transformers architectures built from configs, with no download.

    from trainers.tiny_model import build_tokenizer, build_tiny
    tok = build_tokenizer(texts, vocab_size=2000)
    build_tiny("llava", tok, Path("checkpoints/tiny"))      # or "qwen2vl"

The result is an ordinary Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer
files with a chat template, preprocessor_config.json) that `AutoModelForImageTextToText`,
`AutoTokenizer` and `AutoImageProcessor` load exactly like a downloaded one.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from harness.errors import HarnessError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

ARCHS = ("llava", "qwen2vl")

# Special tokens of both families live in every tiny tokenizer, so one tokenizer serves either
# architecture; `for_arch` picks the family's chat template and end-of-turn token.
LLAVA_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "image": "<image>"}
QWEN_TOKENS = {
    "pad": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "vision_start": "<|vision_start|>",
    "vision_end": "<|vision_end|>",
    "image": "<|image_pad|>",
    "video": "<|video_pad|>",
}
SPECIAL_TOKENS = [*LLAVA_TOKENS.values(), *QWEN_TOKENS.values()]

# Renders message content given as a plain string or as a list of {"type": "image"|"text"} parts.
_TEXT_OF = (
    "{% macro text_of(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for part in content %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% macro images_of(content, image_token) %}"
    "{% if content is not string %}{% for part in content %}{% if part['type'] == 'image' %}"
    "{{ image_token }}{% endif %}{% endfor %}{% endif %}"
    "{% endmacro %}"
)

# LLaVA-1.5 style, "<s>USER: {text}\n<image> ASSISTANT: {reply}</s>", except that the image comes
# after the text, right before the reply. Measured on the tiny model trained from scratch on a CPU:
# with the image first (LLaVA-1.5's order) single-object colour accuracy stayed near chance after
# 400 steps; with the image last it reached 68%, because the reply attends to the nearest tokens
# long before it learns to look far back. Real checkpoints keep their own templates.
LLAVA_CHAT_TEMPLATE = _TEXT_OF + (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ text_of(m['content']) }} "
    "{% elif m['role'] == 'user' %}USER: {{ text_of(m['content']) }}\n"
    "{{ images_of(m['content'], '<image>') }} "
    "{% elif m['role'] == 'assistant' %}ASSISTANT: {{ text_of(m['content']) }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# Qwen2-VL style (without the default system prompt, to keep tiny sequences short).
QWEN_CHAT_TEMPLATE = _TEXT_OF + (
    "{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{{ images_of(m['content'], '<|vision_start|><|image_pad|><|vision_end|>') }}"
    "{{ text_of(m['content']) }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise HarnessError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(ARCHS)}")


def build_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: Path | None = None,
    arch: str = "llava",
    split_digits: bool = True,
) -> "PreTrainedTokenizerFast":
    """Train a byte-level BPE tokenizer on `texts` (the bundled prompts and targets).

    Byte-level means any text (model outputs, unseen benchmarks) encodes without unknown tokens.
    With `split_digits` every digit is its own token (as Llama 3 and Qwen do), so a number the
    model never saw whole (an angle of 165) is written from digits it knows.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    _check_arch(arch)
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    fast = for_arch(_wrap(tok), arch)
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def _wrap(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left")


def for_arch(tokenizer: "PreTrainedTokenizerFast", arch: str) -> "PreTrainedTokenizerFast":
    """Set the family's special-token roles and chat template (in place; returned for chaining)."""
    _check_arch(arch)
    missing = [t for t in SPECIAL_TOKENS if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        raise HarnessError(
            f"tokenizer lacks special tokens {missing}; build it with trainers.tiny_model.build_tokenizer"
        )
    if arch == "llava":
        tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token = (
            LLAVA_TOKENS["pad"], LLAVA_TOKENS["bos"], LLAVA_TOKENS["eos"]
        )
        tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    else:
        # Qwen2-VL has no BOS; a turn ends with <|im_end|>, which generation stops on.
        tokenizer.pad_token, tokenizer.eos_token = QWEN_TOKENS["pad"], QWEN_TOKENS["im_end"]
        tokenizer.bos_token = None
        tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def build_tiny(
    arch: str,
    tokenizer: "PreTrainedTokenizerFast",
    out_dir: Path,
    image_size: int = 64,
    patch_size: int = 8,
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    intermediate: int | None = None,
    vision_hidden: int = 96,
    vision_layers: int = 2,
    vision_heads: int = 4,
    max_positions: int = 1024,
    seed: int = 0,
) -> Path:
    """Build a random-init tiny VLM of `arch` and save it (with tokenizer and image processor).

    Defaults give about 2M parameters. LLaVA sees (image_size / patch_size)^2 image tokens;
    Qwen2-VL merges 2x2 patches, so a quarter of that.
    """
    import copy

    import torch
    from transformers import GenerationConfig

    from harness.models.checkpoints import save_for_engines

    _check_arch(arch)
    if image_size % patch_size:
        raise HarnessError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    out_dir = Path(out_dir)
    tokenizer = for_arch(copy.deepcopy(tokenizer), arch)
    intermediate = intermediate or 4 * hidden
    torch.manual_seed(seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = len(tokenizer)
    if arch == "llava":
        model, processor = _llava(ids, vocab, image_size, patch_size, hidden, layers, heads,
                                  intermediate, vision_hidden, vision_layers, vision_heads, max_positions)
    else:
        if image_size % (2 * patch_size):
            raise HarnessError(f"qwen2vl needs image_size {image_size} to be a multiple of 2*patch_size")
        model, processor = _qwen2vl(ids, vocab, image_size, patch_size, hidden, layers, heads,
                                    intermediate, vision_hidden, vision_layers, vision_heads, max_positions)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a shard progress bar for a 10 MB file is noise
    tokenizer.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    save_for_engines(model, processor, out_dir)  # weights and processor_config.json as vLLM / transformers serve read them
    return out_dir


def _llava(ids, vocab, image_size, patch_size, hidden, layers, heads, intermediate,
           vision_hidden, vision_layers, vision_heads, max_positions):
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=4 * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=ids[LLAVA_TOKENS["bos"]],
        eos_token_id=ids[LLAVA_TOKENS["eos"]],
        pad_token_id=ids[LLAVA_TOKENS["pad"]],
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids[LLAVA_TOKENS["image"]],
        # "default" drops CLS as LLaVA-1.5 does; -1 because a 2-layer tower has no spare layer.
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        pad_token_id=ids[LLAVA_TOKENS["pad"]],
    )
    model = LlavaForConditionalGeneration(config)
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    return model, processor


def _qwen2vl(ids, vocab, image_size, patch_size, hidden, layers, heads, intermediate,
             vision_hidden, vision_layers, vision_heads, max_positions):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    head_dim = hidden // heads
    # M-RoPE splits each head's rotary half into (temporal, height, width) sections.
    quarter = head_dim // 2 // 4
    mrope_section = [head_dim // 2 - 2 * quarter, quarter, quarter]
    config = Qwen2VLConfig(
        vision_config=dict(
            depth=vision_layers,
            embed_dim=vision_hidden,
            hidden_size=hidden,  # the merger's output width = the text model's width
            num_heads=vision_heads,
            mlp_ratio=4,
            patch_size=patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        text_config=dict(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=max_positions,
            max_window_layers=layers,
            bos_token_id=None,
            eos_token_id=ids[QWEN_TOKENS["im_end"]],
            pad_token_id=ids[QWEN_TOKENS["pad"]],
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
            tie_word_embeddings=False,
        ),
        image_token_id=ids[QWEN_TOKENS["image"]],
        video_token_id=ids[QWEN_TOKENS["video"]],
        vision_start_token_id=ids[QWEN_TOKENS["vision_start"]],
        vision_end_token_id=ids[QWEN_TOKENS["vision_end"]],
        tie_word_embeddings=False,
    )
    model = Qwen2VLForConditionalGeneration(config)
    # min = max pixels: every image becomes about image_size^2 pixels, aspect ratio kept.
    processor = Qwen2VLImageProcessorPil(
        min_pixels=image_size * image_size,
        max_pixels=image_size * image_size,
        patch_size=patch_size,
        merge_size=2,
        temporal_patch_size=2,
    )
    return model, processor
