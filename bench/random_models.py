"""Random-weight checkpoints of real VLM sizes for throughput benchmarks (on a GPU; on a CPU only
with --layers, as a smoke test that they build and run).

    qwen2-vl-2b   Qwen2-VL-2B's shape: 28 x 1536 text layers (12 heads / 2 KV heads), 151,936-token
                  vocabulary, tied embeddings; 32 x 1280 vision blocks; 448 px images = 256 vision tokens
    llava-1.5-7b  LLaVA-1.5-7B's shape: Llama-2-7B text (32 x 4096, 32 heads, 11,008 MLP, 32,064
                  vocabulary) and CLIP ViT-L/14 at 336 px (24 x 1024): 576 vision tokens, the image
                  before the question as in LLaVA-1.5's prompt

Both use the tiny tokenizer (its special tokens in the family's roles) and save bf16 weights.
Random weights rarely emit the end token; the bench also sets min_new_tokens so every row
decodes the full --max-new-tokens.
"""
from __future__ import annotations

from pathlib import Path

CONFIGS = ("qwen2-vl-2b", "llava-1.5-7b")

# LLaVA-1.5's conversation layout ("USER: <image>\n{question} ASSISTANT:"), so the image tokens
# come first as in the real model (the tiny template puts them after the text).
LLAVA15_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for part in m['content'] %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for part in m['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %} {% elif m['role'] == 'assistant' %}ASSISTANT: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for part in m['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def qwen2vl_2b_config(tok, layers: int | None = None):
    """Qwen2-VL-2B's published shape, special tokens from `tok`; `layers` cuts both towers' depth."""
    from transformers import Qwen2VLConfig

    from trainers.tiny_model import QWEN_TOKENS

    ids = {k: tok.convert_tokens_to_ids(v) for k, v in QWEN_TOKENS.items()}
    return Qwen2VLConfig(
        vision_config=dict(depth=layers or 32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        text_config=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=layers or 28,
                         num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                         max_window_layers=layers or 28, bos_token_id=None, eos_token_id=ids["im_end"],
                         pad_token_id=ids["pad"],
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                         tie_word_embeddings=True),
        image_token_id=ids["image"], video_token_id=ids["video"], vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"], tie_word_embeddings=True,
    )


def llava15_7b_config(tok, layers: int | None = None):
    """LLaVA-1.5-7B's published shape (Llama-2-7B + CLIP ViT-L/14-336, 2-layer GELU projector,
    features of the second-to-last vision layer), special tokens from `tok`."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    from trainers.tiny_model import LLAVA_TOKENS

    ids = {k: tok.convert_tokens_to_ids(v) for k, v in LLAVA_TOKENS.items()}
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=layers or 24,
                              num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers or 32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                       tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=ids["image"],
                       projector_hidden_act="gelu", vision_feature_layer=-2, vision_feature_select_strategy="default",
                       image_seq_length=576, pad_token_id=ids["pad"], tie_word_embeddings=False)


def build(name: str, out: Path, device: str, layers: int | None = None) -> Path:
    """Build checkpoint `name` (random bf16 weights, the tiny tokenizer) into `out`, unless it is there."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig
    from transformers.utils import logging as hf_logging

    from harness.models.checkpoints import tiny_path
    from trainers.tiny_model import for_arch

    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    if (out / "config.json").is_file():
        return out
    hf_logging.disable_progress_bar()
    if name == "qwen2-vl-2b":
        from transformers import Qwen2VLForConditionalGeneration as model_class
        from transformers import Qwen2VLImageProcessorPil

        tok = for_arch(AutoTokenizer.from_pretrained(tiny_path()), "qwen2vl")
        config = qwen2vl_2b_config(tok, layers)
        side = 448  # 32 x 32 patches of 14 px, merged 2 x 2: 256 vision tokens per image
        processor = Qwen2VLImageProcessorPil(min_pixels=side * side, max_pixels=side * side, patch_size=14,
                                             merge_size=2, temporal_patch_size=2)
    else:
        from transformers import CLIPImageProcessorPil
        from transformers import LlavaForConditionalGeneration as model_class

        tok = for_arch(AutoTokenizer.from_pretrained(tiny_path()), "llava")
        tok.chat_template = LLAVA15_TEMPLATE
        config = llava15_7b_config(tok, layers)
        processor = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    torch.manual_seed(0)
    with torch.device(device):  # initialising billions of parameters on a GPU takes seconds, on a CPU minutes
        model = model_class._from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               bos_token_id=tok.bos_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    return out
