"""What differs between VLM families, in one place: processor loading, batch building, reply mask,
extra inputs, visual-token layout and the lmms-eval wrapper name.

    family = family_of(config.model_type)
    processor = load_processor(model_dir, family, config)
    batch = build_batch(processor, family, tokenizer, texts, images, targets, reply=(prefix, suffix), ...)

Inputs always come from the family's own processor class (its chat template rendered by the
tokenizer, then `processor(text=..., images=...)`), so image-token expansion, tiling and pixel
layout are the family's. Processors whose `__init__` also takes a video processor are built from a
subclass without it: transformers' video processors need torchvision, which CPU machines here lack,
and a benchmark never passes videos. The same subclass runs where torchvision is installed, so the
inputs do not depend on the machine. The image processor is always the PIL variant (`backend="pil"`)
for the same reason.

Nothing outside this module names a model family: harness/backend.py, trainers (remgcl's patch
grid, mpo's continuation) and harness/bridges/lmms.py ask the `Family` record.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.errors import HarnessError

if TYPE_CHECKING:
    from PIL.Image import Image

IGNORE_INDEX = -100  # label value the loss skips (prompt, image and padding tokens)
# Processor outputs laid out per token ([batch, seq, ...]): padded and extended with input_ids.
TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids", "cross_attention_mask")


@dataclass(frozen=True)
class Family:
    """One model family (a config `model_type`) and how the harness drives it."""

    name: str
    # lmms-eval `--model` name of a Hugging Face-format checkpoint; None: the bridge refuses the family
    lmms_wrapper: str | None = None
    packages: tuple[str, ...] = ()  # pure-Python modules its processor imports (checked up front)
    needs_torchvision: bool = False  # no PIL path at all: a one-line error where torchvision is absent
    grid: str | None = None  # remgcl patch grid: "clip" (one resized/cropped image), "qwen" (merged patches)
    reply_token_type: int | None = None  # token_type_ids of reply tokens (PaliGemma: 1 = causal suffix)
    visual_tokens: bool = True  # image features sit in the sequence at the image-token positions (remgcl reads them)
    mrope: bool = False  # Qwen-style M-RoPE: mm_token_type_ids input, rope_deltas kept across the prefill
    prefix_split: bool = True  # sampling may prefill prompt[:-1] once and continue (else num_return_sequences)
    remote_code: bool = False  # the architecture exists only as code shipped with the checkpoint
    # processor class transformers only offers with torchvision; the stand-in below is used without it
    lite: str | None = None
    tested: str = "tiny random checkpoint: eval, likelihood, sampling, blind, adapter"
    limits: str = ""

    @property
    def known(self) -> bool:
        return self.name in FAMILIES


_TESTED = ("tiny random checkpoint: eval (mixed image sizes), reply labels (multi-turn too), likelihood, sampling, "
           "blind")
_TESTED_PROC = _TESTED + "; batch = processor's own output"
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("llava", "llava_hf", grid="clip", tested=_TESTED_PROC + "; shipped tiny (same inputs as before); adapters, "
           "sft, mpo, remgcl"),
    Family("llava_next", "llava_hf", tested=_TESTED_PROC + "; adapter", limits="anyres tiles: remgcl local alignment off"),
    Family("llava_onevision", tested=_TESTED_PROC,
           limits="video input unused; remgcl local alignment off"),
    Family("qwen2_vl", "qwen2_vl", grid="qwen", mrope=True, tested=_TESTED_PROC + "; remgcl; same inputs as before"),
    Family("qwen2_5_vl", "qwen2_5_vl", grid="qwen", mrope=True, tested=_TESTED_PROC,
           limits="remgcl text regions untested"),
    Family("qwen3_vl", grid="qwen", mrope=True, tested=_TESTED_PROC + "; adapter; sft then eval; remgcl (regions)",
           limits="no lmms-eval wrapper mapped"),
    Family("internvl", tested=_TESTED_PROC + "; adapter, mpo; remgcl global term",
           limits="tiles (crop_to_patches): remgcl text regions refused (local_weight=0)"),
    Family("internvl_chat", remote_code=True, tested="refused without --trust-remote-code; clear error when its code is absent",
           limits="remote code: needs the checkpoint's .py files and --trust-remote-code; not run in tests"),
    Family("idefics3", tested=_TESTED_PROC, limits="image splitting tiles: remgcl local alignment off"),
    Family("smolvlm", None, packages=("num2words",), tested=_TESTED,
           limits="needs num2words; its processor's apply_chat_template reads the video processor (the harness "
                  "renders with the tokenizer); remgcl local alignment off"),
    Family("gemma3", tested=_TESTED_PROC + "; adapter", limits="sliding-window layers: sampling copies the prompt cache"),
    Family("paligemma", None, reply_token_type=1, tested=_TESTED_PROC,
           limits="prefix-LM: reply tokens causal (token_type_ids=1); no lmms-eval wrapper mapped"),
    Family("mllama", "llama_vision", prefix_split=False, visual_tokens=False, tested=_TESTED_PROC,
           limits="cross-attention images: no visual tokens in the sequence (remgcl refused); "
                  "sampling encodes the prompt per sample (num_return_sequences)"),
    Family("mistral3", None, lite="PixtralProcessor", tested=_TESTED_PROC,
           limits="without torchvision the harness's own PixtralProcessor stand-in expands [IMG] tokens; "
                  "remgcl local alignment off"),
    Family("aya_vision", None, tested=_TESTED_PROC, limits="remgcl local alignment off"),
    Family("glm4v", None, mrope=True, tested=_TESTED_PROC, limits="remgcl local alignment off"),
    Family("lfm2_vl", None, needs_torchvision=True, tested="one-line error without torchvision",
           limits="its image processor exists only as a torchvision one"),
)}


def lmms_wrappers() -> dict[str, str]:
    """model_type -> lmms-eval model name, for the families the lmms-eval bridge can run."""
    return {f.name: f.lmms_wrapper for f in FAMILIES.values() if f.lmms_wrapper}


def family_of(model_type: str) -> Family:
    """The family record of a config's model_type; unknown families get the generic processor path."""
    return FAMILIES.get(model_type) or Family(
        model_type, tested="generic processor path (no entry)", limits="not tested; generic processor path")


def table() -> list[dict[str, str]]:
    """The README / `harness models` table: family, lmms-eval wrapper, tested how, known limits."""
    return [{"family": f.name, "lmms-eval": f.lmms_wrapper or "-", "tested": f.tested, "limits": f.limits or "-"}
            for f in FAMILIES.values()]


# ---- processor ---------------------------------------------------------------------------------
@functools.cache
def _without_video(cls: type) -> type:
    """`cls` whose __init__ takes no video processor (the rest of its arguments kept): transformers
    finds a processor's parts from its __init__ signature, so the video processor is never loaded."""
    sig = inspect.signature(cls.__init__)
    if "video_processor" not in sig.parameters:
        return cls
    # transformers reads the argument names from __init__.__code__, so the method is compiled with
    # the family's own parameters (defaults included), minus the video processor.
    params = [p for n, p in sig.parameters.items() if n != "video_processor"]
    parts, calls, defaults, star = [], [], {}, False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            calls.append(f"**{p.name}")
            continue
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star = True
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.default is p.empty:
            parts.append(p.name)
        else:
            defaults[p.name] = p.default
            parts.append(f"{p.name}=_defaults[{p.name!r}]")
        if p.name != "self":
            calls.append(f"{p.name}={p.name}")
    if sig.parameters["video_processor"].default is inspect.Parameter.empty:
        calls.insert(0, "video_processor=None")  # required by the family's __init__: pass it as absent
    source = f"def __init__({', '.join(parts)}):\n    _cls.__init__(self, {', '.join(calls)})\n"
    namespace: dict[str, Any] = {"_defaults": defaults, "_cls": cls}
    exec(compile(source, f"<{cls.__name__} without video>", "exec"), namespace)  # noqa: S102 (our own text)
    return type(cls.__name__, (cls,), {"__init__": namespace["__init__"], "__module__": cls.__module__})


@functools.cache
def _lite_processors() -> dict[str, type]:
    """Processors transformers gates behind torchvision although their logic needs only PIL."""
    from transformers import ProcessorMixin

    class PixtralProcessor(ProcessorMixin):  # the real class's name: saved configs stay loadable by it
        """Mistral 3 / Pixtral: each image becomes rows of [IMG] (one per merged patch column), each row
        ended by [IMG_BREAK], the last by [IMG_END]."""

        def __init__(self, image_processor=None, tokenizer=None, patch_size: int = 16, spatial_merge_size: int = 1,
                     chat_template=None, image_token="[IMG]", image_break_token="[IMG_BREAK]",
                     image_end_token="[IMG_END]", **kwargs):
            super().__init__(image_processor, tokenizer, chat_template=chat_template)
            self.patch_size, self.spatial_merge_size = patch_size, spatial_merge_size
            self.image_token, self.image_break_token, self.image_end_token = (
                image_token, image_break_token, image_end_token)
            self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)

        def _process_images(self, images, **images_kwargs):
            images_kwargs["patch_size"] = self.patch_size * self.spatial_merge_size
            return super()._process_images(images, **images_kwargs)

        def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
            step = self.patch_size * self.spatial_merge_size
            height, width = (int(v) for v in image_inputs["image_sizes"][image_idx])
            row = self.image_token * (width // step)
            return (row + self.image_break_token) * (height // step - 1) + row + self.image_end_token

    return {"PixtralProcessor": PixtralProcessor}


def _needs_missing_backend(cls: type) -> bool:
    """True for transformers' placeholder of a class whose backend (torchvision) is not installed."""
    try:
        cls.from_pretrained  # noqa: B018  (the placeholder raises ImportError on any attribute)
    except ImportError:
        return True
    return False


def _processor_class(model_dir: Path, family: Family) -> type | None:
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = None
    for fname in ("processor_config.json", "preprocessor_config.json"):
        path = model_dir / fname
        if path.is_file():
            name = name or json.loads(path.read_text(encoding="utf-8")).get("processor_class")
    name = name or PROCESSOR_MAPPING_NAMES.get(family.name)
    return getattr(transformers, name, None) if name else None


def takes_video_processor(model_type: str) -> bool:
    """Whether the family's transformers processor also loads a video processor (torchvision)."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    cls = getattr(transformers, PROCESSOR_MAPPING_NAMES.get(model_type) or "", None)
    return cls is not None and not _needs_missing_backend(cls) and \
        "video_processor" in inspect.signature(cls.__init__).parameters


def processor_defaults(config: Any, family: Family) -> dict[str, Any]:
    """Processor settings a checkpoint folder may lack (the embedded tiny saves no processor_config):
    read from the model config, as llava-hf checkpoints ship them."""
    vision = getattr(config, "vision_config", None)
    if family.name in ("llava", "llava_next") and vision is not None:
        return {
            "patch_size": vision.patch_size,
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
            # A CLIP tower adds a CLS token that the "default" strategy then drops.
            "num_additional_image_tokens": 1 if vision.model_type == "clip_vision_model" else 0,
        }
    return {}


def load_processor(model_dir: Path, family: Family, config: Any, trust_remote_code: bool = False) -> Any:
    """The family's processor (tokenizer + PIL image processor), or a one-line HarnessError."""
    if family.needs_torchvision and importlib.util.find_spec("torchvision") is None:
        raise HarnessError(f"{model_dir}: the {family.name} processor needs the package torchvision, which is not "
                           "installed; pip install torchvision (matching your torch)")
    for package in family.packages:
        if importlib.util.find_spec(package) is None:
            raise HarnessError(f"{model_dir}: the {family.name} processor needs the package {package}; "
                               f"pip install {package}")
    cls = _processor_class(model_dir, family)
    if family.lite and (cls is None or _needs_missing_backend(cls)):
        cls = _lite_processors()[family.lite]
    saved_path = model_dir / "processor_config.json"
    saved = json.loads(saved_path.read_text(encoding="utf-8")) if saved_path.is_file() else {}
    # the checkpoint's own processor settings win; the model config only fills what it lacks
    defaults = {k: v for k, v in processor_defaults(config, family).items() if k not in saved}
    kwargs = {"backend": "pil", "trust_remote_code": trust_remote_code, **defaults}
    try:
        if cls is None:
            from transformers import AutoProcessor

            return AutoProcessor.from_pretrained(model_dir, **kwargs)
        return _without_video(cls).from_pretrained(model_dir, **kwargs)
    except ImportError as e:
        missing = getattr(e, "name", None) or _missing_package(str(e))
        raise HarnessError(f"{model_dir}: the {family.name} processor needs the package {missing}, which is not "
                           f"installed; pip install {missing}") from None
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise HarnessError(f"cannot load the {family.name} processor of {model_dir}: {type(e).__name__}: {first}") from None


def _missing_package(message: str) -> str:
    for name in ("torchvision", "num2words", "timm", "einops"):
        if name in message:
            return name
    return message.split("`")[1] if message.count("`") >= 2 else "(see the error of the import)"


def missing_remote_code(model_dir: Path) -> list[str]:
    """The .py files a remote-code checkpoint's config.json names (auto_map) that its folder lacks."""
    path = Path(model_dir) / "config.json"
    auto_map = json.loads(path.read_text(encoding="utf-8")).get("auto_map") if path.is_file() else None
    files = {f"{ref.split('--')[-1].rsplit('.', 1)[0]}.py" for ref in (auto_map or {}).values() if isinstance(ref, str)}
    return sorted(f for f in files if not (Path(model_dir) / f).is_file())


def image_token_id(processor: Any, config: Any) -> int | None:
    for owner, attr in ((config, "image_token_id"), (config, "image_token_index"), (processor, "image_token_id")):
        value = getattr(owner, attr, None)
        if isinstance(value, int):
            return value
    token = getattr(processor, "image_token", None)
    return processor.tokenizer.convert_tokens_to_ids(token) if isinstance(token, str) else None


# ---- batches -----------------------------------------------------------------------------------
def render_prompts(tokenizer: Any, chat_template: str | None, texts: Sequence[str],
                   n_images: Sequence[int]) -> list[str]:
    """Each user turn (its images first, then the text) through the chat template, generation prompt on."""
    out = []
    for text, n in zip(texts, n_images):
        content = [{"type": "image"}] * n + [{"type": "text", "text": text}]
        out.append(tokenizer.apply_chat_template([{"role": "user", "content": content}], chat_template=chat_template,
                                                 tokenize=False, add_generation_prompt=True))
    return out


def build_batch(processor: Any, family: Family, texts: Sequence[str], images: Sequence[Sequence["Image"]],
                targets: Sequence[str] | None, *, reply: tuple[str, str], chat_template: str | None,
                pad_token_id: int, image_token: int | None, dtype: Any) -> dict[str, Any]:
    """Left-padded model inputs from the family's processor; with `targets`, each reply (reply
    prefix + target + end-of-turn text) appended after the prompt's processed tokens, and `labels`
    holding the reply's ids (-100 elsewhere): the reply mask is the prompt's processed length."""
    rendered = render_prompts(processor.tokenizer, chat_template, texts, [len(i) for i in images])
    enc, _ = _process(processor, family, rendered, images, image_token)
    if targets is not None:
        enc = _append_replies(enc, processor.tokenizer, [reply[0] + t + reply[1] for t in targets], family,
                              pad_token_id)
    return _tensors(enc, dtype)


def build_labelled(processor: Any, family: Family, pieces: Sequence[Sequence[tuple[str, bool]]],
                   images: Sequence[Sequence["Image"]], *, image_token: int | None, dtype: Any) -> dict[str, Any]:
    """Left-padded inputs of whole rendered conversations, each given as (text, learn) pieces in order
    (learn: an assistant reply that carries labels). The processor runs on each full text; the label
    positions are found by aligning the pieces' own token ids with the processed ids (which differ
    only where image placeholders were expanded)."""
    import difflib

    import torch

    tokenizer = processor.tokenizer
    enc, add_special = _process(processor, family, ["".join(t for t, _ in p) for p in pieces], images, image_token)
    ids, mask = enc["input_ids"], enc["attention_mask"].bool()
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row, parts in enumerate(pieces):
        text_ids: list[int] = []
        learn: list[bool] = []
        for n, (text, is_reply) in enumerate(parts):
            part = tokenizer(text, add_special_tokens=add_special and n == 0)["input_ids"]
            text_ids += part
            learn += [is_reply] * len(part)
        got = ids[row][mask[row]].tolist()
        pad = ids.shape[1] - len(got)
        for a, b, size in difflib.SequenceMatcher(None, text_ids, got, autojunk=False).get_matching_blocks():
            for k in range(size):
                if learn[a + k]:
                    labels[row, pad + b + k] = got[b + k]
    if family.reply_token_type is not None and "token_type_ids" in enc:
        enc["token_type_ids"][labels != IGNORE_INDEX] = family.reply_token_type
    enc["labels"] = labels
    return _tensors(enc, dtype)


def _process(processor: Any, family: Family, rendered: Sequence[str], images: Sequence[Sequence["Image"]],
             image_token: int | None) -> tuple[dict[str, Any], bool]:
    """The processor's left-padded output for rendered texts and their images (+ M-RoPE's token types)."""
    # Templates that omit BOS rely on the tokenizer adding it (as the family's processor does).
    bos = processor.tokenizer.bos_token
    add_special = bool(bos) and not all(r.startswith(bos) for r in rendered)
    kwargs: dict[str, Any] = {"text": list(rendered), "padding": True, "padding_side": "left", "return_tensors": "pt",
                              "add_special_tokens": add_special}
    if any(images):
        kwargs["images"] = [list(i) for i in images]
    enc = dict(processor(**kwargs))
    enc.pop("labels", None)  # PaliGemma's processor labels its prompt; replies are labelled by the caller
    if family.mrope and "mm_token_type_ids" not in enc and image_token is not None:
        enc["mm_token_type_ids"] = (enc["input_ids"] == image_token).long()  # M-RoPE: which positions are image tokens
    return enc, add_special


def _tensors(enc: dict[str, Any], dtype: Any) -> dict[str, Any]:
    import torch

    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in enc.items() if torch.is_tensor(v)}


def _append_replies(enc: dict[str, Any], tokenizer: Any, replies: Sequence[str], family: Family,
                    pad_token_id: int) -> dict[str, Any]:
    """Append each row's reply ids after its (left-padded) prompt and re-pad on the left; per-token
    inputs are extended with their last prompt value (the reply is text after the images)."""
    import torch

    mask = enc["attention_mask"].bool()
    reply_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]
    lengths = [int(m.sum()) + len(r) for m, r in zip(mask, reply_ids)]
    width = max(lengths)
    token_keys = [k for k in TOKEN_KEYS if k in enc]
    out = {k: v for k, v in enc.items() if k not in token_keys}
    for key in token_keys:
        old = enc[key]
        fill = pad_token_id if key == "input_ids" else 0
        new = torch.full((old.shape[0], width, *old.shape[2:]), fill, dtype=old.dtype)
        for row, (m, r) in enumerate(zip(mask, reply_ids)):
            prompt = old[row][m]
            if key == "input_ids":
                tail = torch.tensor(r, dtype=old.dtype)
            elif key == "attention_mask":
                tail = torch.ones(len(r), dtype=old.dtype)
            elif key == "token_type_ids" and family.reply_token_type is not None:
                tail = torch.full((len(r),), family.reply_token_type, dtype=old.dtype)
            else:
                tail = prompt[-1:].expand(len(r), *prompt.shape[1:])
            new[row, width - lengths[row]:] = torch.cat([prompt, tail])
        out[key] = new
    labels = torch.full((len(replies), width), IGNORE_INDEX, dtype=torch.long)
    for row, r in enumerate(reply_ids):
        if r:
            labels[row, width - len(r):] = torch.tensor(r)
    out["labels"] = labels
    return out


def trim_right(inputs: dict[str, Any], k: int) -> dict[str, Any]:
    """`inputs` without each row's last `k` tokens (every per-token input cut alike)."""
    return {key: (v[:, :-k] if key in TOKEN_KEYS or key == "labels" else v) for key, v in inputs.items()}
