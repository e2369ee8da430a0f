"""Tiny random checkpoints of every VLM family harness/models/families.py knows, built from their config
classes (1 text layer, hidden 32, 32-pixel images) with a small BPE tokenizer that carries the
family's special tokens, the family's image processor config and a chat template placing the
family's image placeholder. Each saves like a downloaded checkpoint (config, safetensors,
tokenizer, preprocessor and processor config) and loads through AutoModelForImageTextToText.

    build_family("gemma3", Path("/tmp/gemma3"))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from trainers.tiny_model import QWEN_TOKENS

TEXTS = ["Which angle is it? A. 30 B. 60 C. 90 D. 120", "Answer: B because the triangle is right",
         "The answer is A", "Find the length of the side."] * 10
S, P = 32, 8  # image size, patch size
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            head_dim=16, max_position_embeddings=512, tie_word_embeddings=False)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=S,
              patch_size=P)


def _template(image: str, bos: str = "") -> str:
    """A Qwen-style chat template whose image parts render as `image` (the family's placeholder)."""
    return (
        bos + "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
        "{% for part in m['content'] %}{% if part['type'] == 'image' %}" + image + "{% endif %}{% endfor %}"
        "{% for part in m['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
        "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def tokenizer(extra: dict[str, str], tokens: list[str], template: str, bos: str | None = None):
    """BPE tokenizer with the Qwen chat tokens plus the family's `tokens`; `extra` names special-token
    attributes the family's processor reads (tokenizer.boi_token, ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = list(dict.fromkeys([*QWEN_TOKENS.values(), *tokens, *extra.values(), *([bos] if bos else [])]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=320, special_tokens=special, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", pad_token=QWEN_TOKENS["pad"],
                                   eos_token=QWEN_TOKENS["im_end"], bos_token=bos, extra_special_tokens=extra)
    fast.chat_template = template
    return fast


def _ids(tok, **names: str) -> dict[str, int]:
    return {k: tok.convert_tokens_to_ids(v) for k, v in names.items()}


# ---- one builder per family: (tokenizer) -> (model, processor) --------------------------------------------
def _llava_next(tok):
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil,
                              LlavaNextProcessor)

    config = LlavaNextConfig(vision_config=dict(model_type="clip_vision_model", **VISION, projection_dim=32),
                             text_config=dict(model_type="llama", vocab_size=len(tok), **TEXT),
                             image_grid_pinpoints=[[S, 2 * S], [2 * S, S], [S, S]], vision_feature_layer=-1,
                             image_token_index=tok.convert_tokens_to_ids("<image>"))
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": S}, crop_size={"height": S, "width": S},
                                    image_grid_pinpoints=config.image_grid_pinpoints)
    return LlavaNextForConditionalGeneration(config), LlavaNextProcessor(
        ip, tok, patch_size=P, vision_feature_select_strategy="default", num_additional_image_tokens=1)


def _qwen(kind: str):
    def build(tok):
        import transformers

        ids = _ids(tok, image_token_id=QWEN_TOKENS["image"], video_token_id=QWEN_TOKENS["video"],
                   vision_start_token_id=QWEN_TOKENS["vision_start"], vision_end_token_id=QWEN_TOKENS["vision_end"])
        text = dict(TEXT, vocab_size=len(tok), num_key_value_heads=2,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                     **({"mrope_interleaved": True} if kind == "qwen3_vl" else {})})
        if kind == "qwen2_vl":
            vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, patch_size=P, spatial_merge_size=2)
            names = ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor")
        elif kind == "qwen2_5_vl":
            vision = dict(depth=1, hidden_size=32, intermediate_size=64, out_hidden_size=32, num_heads=2,
                          patch_size=P, spatial_merge_size=2, window_size=2 * P, fullatt_block_indexes=[0])
            names = ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor")
        else:
            vision = dict(depth=1, hidden_size=32, intermediate_size=64, out_hidden_size=32, num_heads=2,
                          patch_size=P, spatial_merge_size=2, num_position_embeddings=16, deepstack_visual_indexes=[0])
            names = ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor")
        config = getattr(transformers, names[0])(vision_config=vision, text_config=text, **ids, tie_word_embeddings=False)
        ip_cls = transformers.Qwen2VLImageProcessorPil
        ip = ip_cls(size={"shortest_edge": S * S, "longest_edge": S * S}, patch_size=P, merge_size=2,
                    temporal_patch_size=2)
        from harness.models.families import _without_video

        return getattr(transformers, names[1])(config), _without_video(getattr(transformers, names[2]))(ip, tok)
    return build


def _internvl(tok):
    from transformers import (GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLProcessor)

    from harness.models.families import _without_video

    config = InternVLConfig(
        vision_config=dict(VISION, image_size=[S, S], patch_size=[P, P], use_mask_token=False),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), **TEXT),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5, projector_hidden_act="gelu")
    ip = GotOcr2ImageProcessorPil(size={"height": S, "width": S}, crop_to_patches=True, min_patches=1, max_patches=2)
    # (S / P)^2 patches, pixel-shuffled by 0.5 in each direction
    return InternVLForConditionalGeneration(config), _without_video(InternVLProcessor)(ip, tok, image_seq_length=4)


def _llava(tok):
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    config = LlavaConfig(vision_config=dict(model_type="clip_vision_model", **VISION, projection_dim=32),
                         text_config=dict(model_type="llama", vocab_size=len(tok), **TEXT), vision_feature_layer=-1,
                         image_token_index=tok.convert_tokens_to_ids("<image>"))
    ip = CLIPImageProcessorPil(size={"shortest_edge": S}, crop_size={"height": S, "width": S})
    return LlavaForConditionalGeneration(config), LlavaProcessor(
        ip, tok, patch_size=P, vision_feature_select_strategy="default", num_additional_image_tokens=1)


def _llava_onevision(tok):
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor)

    from harness.models.families import _without_video

    config = LlavaOnevisionConfig(vision_config=dict(model_type="siglip_vision_model", **VISION),
                                  text_config=dict(model_type="qwen2", vocab_size=len(tok), **TEXT),
                                  image_grid_pinpoints=[[S, 2 * S], [2 * S, S], [S, S]], vision_feature_layer=-1,
                                  image_token_index=tok.convert_tokens_to_ids("<image>"),
                                  video_token_index=tok.convert_tokens_to_ids("<video>"))
    ip = LlavaOnevisionImageProcessorPil(size={"height": S, "width": S}, image_grid_pinpoints=config.image_grid_pinpoints)
    return LlavaOnevisionForConditionalGeneration(config), _without_video(LlavaOnevisionProcessor)(
        ip, tok, num_image_tokens=(S // P) ** 2, vision_feature_select_strategy="full")


def _idefics(kind: str):
    def build(tok):
        import transformers

        from harness.models.families import _without_video

        prefix = "Idefics3" if kind == "idefics3" else "SmolVLM"
        config = getattr(transformers, f"{prefix}Config")(
            vision_config=dict(VISION), text_config=dict(model_type="llama", vocab_size=len(tok), **TEXT),
            image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2)
        ip = getattr(transformers, f"{prefix}ImageProcessorPil")(
            size={"longest_edge": 2 * S}, max_image_size={"longest_edge": S}, do_image_splitting=True)
        # (S / P)^2 patches, pixel-shuffled by scale_factor 2 in each direction
        proc = _without_video(getattr(transformers, f"{prefix}Processor"))(ip, tok, image_seq_len=4)
        return getattr(transformers, f"{prefix}ForConditionalGeneration")(config), proc
    return build


def _gemma3(tok):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    config = Gemma3Config(
        vision_config=dict(model_type="siglip_vision_model", **VISION),
        text_config=dict(TEXT, vocab_size=len(tok), query_pre_attn_scalar=16, sliding_window=64,
                         layer_types=["full_attention"]),
        mm_tokens_per_image=4, boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"))
    ip = Gemma3ImageProcessorPil(size={"height": S, "width": S})
    return Gemma3ForConditionalGeneration(config), Gemma3Processor(ip, tok, image_seq_length=4)


def _paligemma(tok):
    from transformers import (PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor,
                              SiglipImageProcessorPil)

    config = PaliGemmaConfig(vision_config=dict(model_type="siglip_vision_model", **VISION, projection_dim=32),
                             text_config=dict(model_type="gemma", vocab_size=len(tok), **TEXT),
                             image_token_index=tok.convert_tokens_to_ids("<image>"), projection_dim=32, hidden_size=32)
    ip = SiglipImageProcessorPil(size={"height": S, "width": S})
    ip.image_seq_length = (S // P) ** 2
    return PaliGemmaForConditionalGeneration(config), PaliGemmaProcessor(ip, tok)


def _mllama(tok):
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessorPil, MllamaProcessor

    config = MllamaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                           attention_heads=2, image_size=S, patch_size=P, max_num_tiles=2, vision_output_dim=64,
                           intermediate_layers_indices=[0], supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]]),
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, cross_attention_layers=[1],
                         max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    ip = MllamaImageProcessorPil(size={"height": S, "width": S}, max_image_tiles=2)
    return MllamaForConditionalGeneration(config), MllamaProcessor(ip, tok)


def _aya(tok):
    from transformers import AyaVisionConfig, AyaVisionForConditionalGeneration, AyaVisionProcessor, GotOcr2ImageProcessorPil

    config = AyaVisionConfig(vision_config=dict(model_type="siglip_vision_model", **VISION),
                             text_config=dict(model_type="cohere2", vocab_size=len(tok), **TEXT,
                                              layer_types=["full_attention"], sliding_window=64),
                             downsample_factor=2, image_token_index=tok.convert_tokens_to_ids("<|IMG_PATCH|>"))
    ip = GotOcr2ImageProcessorPil(size={"height": S, "width": S}, crop_to_patches=True, min_patches=1, max_patches=2)
    return AyaVisionForConditionalGeneration(config), AyaVisionProcessor(ip, tok, patch_size=P, img_size=S,
                                                                         downsample_factor=2)


def _glm4v(tok):
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration, Glm4vImageProcessorPil, Glm4vProcessor

    from harness.models.families import _without_video

    config = Glm4vConfig(
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, image_size=S, patch_size=P,
                           out_hidden_size=32, spatial_merge_size=2, temporal_patch_size=2),
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                          "partial_rotary_factor": 0.5}),
        **_ids(tok, image_token_id="<|image|>", video_token_id="<|video|>", image_start_token_id="<|begin_of_image|>",
               image_end_token_id="<|end_of_image|>", video_start_token_id="<|begin_of_video|>",
               video_end_token_id="<|end_of_video|>"))
    ip = Glm4vImageProcessorPil(size={"shortest_edge": S * S, "longest_edge": S * S}, patch_size=P, merge_size=2,
                                temporal_patch_size=2)
    return Glm4vForConditionalGeneration(config), _without_video(Glm4vProcessor)(ip, tok)


def _mistral3(tok):
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessorPil

    from harness.models.families import _lite_processors

    config = Mistral3Config(
        vision_config=dict(model_type="pixtral", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, head_dim=16, image_size=2 * S, patch_size=P),
        text_config=dict(model_type="mistral", vocab_size=len(tok), **TEXT, sliding_window=None),
        spatial_merge_size=2, vision_feature_layer=-1, image_token_index=tok.convert_tokens_to_ids("[IMG]"))
    ip = PixtralImageProcessorPil(size={"longest_edge": S}, patch_size=P)
    return Mistral3ForConditionalGeneration(config), _lite_processors()["PixtralProcessor"](
        ip, tok, patch_size=P, spatial_merge_size=2)


FAMILIES: dict[str, tuple[Callable, dict[str, str], list[str], str]] = {
    # family: (builder, tokenizer attribute tokens, other special tokens, image placeholder in the template)
    "llava": (_llava, {}, ["<image>"], "<image>"),
    "llava_next": (_llava_next, {}, ["<image>"], "<image>"),
    "llava_onevision": (_llava_onevision, {}, ["<image>", "<video>"], "<image>"),
    "qwen2_vl": (_qwen("qwen2_vl"), {}, [], "<|vision_start|><|image_pad|><|vision_end|>"),
    "qwen2_5_vl": (_qwen("qwen2_5_vl"), {}, [], "<|vision_start|><|image_pad|><|vision_end|>"),
    "qwen3_vl": (_qwen("qwen3_vl"), {}, [], "<|vision_start|><|image_pad|><|vision_end|>"),
    "internvl": (_internvl, {"start_image_token": "<img>", "end_image_token": "</img>",
                             "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}, [], "<IMG_CONTEXT>"),
    "idefics3": (_idefics("idefics3"), {}, ["<image>", "<fake_token_around_image>", "<global-img>",
                                           "<end_of_utterance>"], "<image>"),
    "smolvlm": (_idefics("smolvlm"), {}, ["<image>", "<fake_token_around_image>", "<global-img>",
                                         "<end_of_utterance>"], "<image>"),
    "gemma3": (_gemma3, {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                         "image_token": "<image_soft_token>"}, [], "<start_of_image>"),
    "paligemma": (_paligemma, {"image_token": "<image>"}, ["<bos>"], ""),
    "mllama": (_mllama, {}, ["<|image|>", "<|begin_of_text|>"], "<|image|>"),
    "aya_vision": (_aya, {}, ["<image>", "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_LINE_BREAK|>", "<|IMG_PATCH|>"],
                   "<image>"),
    "glm4v": (_glm4v, {}, ["<|image|>", "<|video|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
                           "<|end_of_video|>"], "<|begin_of_image|><|image|><|end_of_image|>"),
}
FAMILIES["mistral3"] = (_mistral3, {}, ["[IMG]", "[IMG_BREAK]", "[IMG_END]"], "[IMG]")
BOS = {"paligemma": "<bos>", "mllama": "<|begin_of_text|>"}


def build_family(family: str, out: Path, seed: int = 0) -> Path:
    """Build and save the tiny random checkpoint of `family` in `out`."""
    import torch
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    builder, extra, tokens, image = FAMILIES[family]
    bos = BOS.get(family)
    tok = tokenizer(extra, tokens, _template(image, "{{ bos_token }}" if bos else ""), bos=bos)
    torch.manual_seed(seed)
    model, processor = builder(tok)
    with torch.no_grad():
        for name, param in model.named_parameters():
            # Some families start their image path closed (Gemma 3's zero projection, Mllama's zero
            # cross-attention gates) so a pretrained LM is unchanged; a random tiny must see its images.
            if not bool(param.any()):
                param.fill_(1.0) if "gate" in name else param.normal_(0, 0.02)
    for config in (model.config, getattr(model.config, "text_config", None)):
        if config is not None:  # the family's defaults name ids of its real vocabulary
            config.bos_token_id, config.eos_token_id, config.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tok.save_pretrained(out)
    return out
