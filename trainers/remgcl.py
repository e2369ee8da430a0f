"""`remgcl`: SFT (LoRA, or every weight) plus an image-text alignment loss (global + local, REMGCL-style).

    harness train remgcl --base tiny --task ocrbench --out ckpts/remgcl [negatives=in_batch ...]
    harness train remgcl --base tiny --task ocrbench,aokvqa_mc --out ckpts/remgcl-mix limit=200
    harness train remgcl --base tiny --data my/llava.json --out ckpts/remgcl-mine   (global term: the last reply)

loss = SFT (reply tokens, as trainers/sft.py) + global_weight * L_global + local_weight * L_local.
Both terms compare image features *as they enter the language model* (the projector's output,
read off the decoder's `inputs_embeds` by a forward pre-hook, so LLaVA and Qwen2-VL need no
special case) with the LM's own input embeddings of text:
- global: per example, the mean of all its visual tokens vs the mean input embedding of the
  reply's content tokens (tokens of stop words and punctuation dropped);
- local: for items whose metadata carries `text_regions` ([{text, box: [x0, y0, x1, y1]}] in
  pixels of the item's first image; the bundled OCR set records where it drew each word), the
  mean of the visual tokens whose patches overlap the box (mapped through the image processor's
  pad / resize / centre crop onto the vision token grid) vs the region text's mean embedding.
  Items without regions get the global term only.
Each term is a cosine similarity with a temperature tau:
- negatives=none (default): mean over pairs of (1 - cos(v, t)) / tau, a pull-only loss. This is
  the original's (it has no negatives), so it is the default: the treatment reproduces the method
  before varying it. With the small batches used here in-batch negatives are few, and many share
  their text (28 OCR words, four GeoQA answers), so they would push apart pairs that should match.
- negatives=in_batch: symmetric InfoNCE over the batch's pairs, logits cos / tau, the matching
  pair the positive; other pairs with identical text are masked out (they are not negatives).
  A batch with a single pair contributes 0.
The text side uses the input embeddings without their gradient (LoRA never adapts them; with
full_finetune=true they train by the SFT loss only), so visual tokens are pulled toward the words,
not the words toward the image.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from harness.errors import HarnessError
from trainers.common import require
from trainers.data import SFTCollator
from trainers.sft import SFTConfig

if TYPE_CHECKING:
    import torch

    from trainers.formats import Source

NEGATIVES = ("none", "in_batch")
# Function words whose embeddings say nothing about the image (a short fixed list: no NLTK download),
# plus "answer", the marker every chain-of-thought reply ends with.
STOP_WORDS = frozenset(
    "a an the is are was were be been being am of to in on at by for with from as and or but if then "
    "so than that this these those it its there here what which who whom whose how why when where "
    "do does did not no yes can could should would will shall may might must i you he she we they "
    "me him her us them my your his our their answer".split()
)


@dataclass
class REMGCLConfig(SFTConfig):
    """SFT settings (TrainConfig + target) plus the alignment loss."""

    global_weight: float = field(default=0.01, metadata={"help": "weight of the global term (mean visual token vs reply content embedding)"})
    local_weight: float = field(default=0.01, metadata={"help": "weight of the local term (visual tokens under a text region vs its text embedding)"})
    temperature: float = field(default=0.07, metadata={"help": "tau: cosine similarities are divided by it"})
    negatives: str = field(
        default="none",
        metadata={"help": "'none' (default, the original's pull-only loss: (1 - cos) / tau) or 'in_batch' "
                          "(symmetric InfoNCE with the batch's other pairs as negatives)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.micro_batches == 1, "micro_batches must be 1: the alignment loss contrasts each batch's images "
                                         "against each other, and micro-batches would change its negatives")
        require(self.global_weight >= 0 and self.local_weight >= 0, "global_weight and local_weight must be >= 0")
        require(self.temperature > 0, "temperature must be > 0")
        require(self.negatives in NEGATIVES, f"negatives must be one of {', '.join(NEGATIVES)}")


# --- the loss --------------------------------------------------------------------------------------
def alignment_loss(visual: "torch.Tensor", text: "torch.Tensor", temperature: float, negatives: str = "none",
                   keys: Sequence[Any] | None = None) -> "torch.Tensor":
    """Loss between N visual vectors and their N text vectors ([N, H] each); 0 when N == 0.

    none: mean((1 - cos(v_i, t_i)) / tau). in_batch: (CE(S) + CE(S^T)) / 2 with S_ij = cos(v_i, t_j) / tau,
    targets on the diagonal; pairs whose `keys` are equal (same text) are not negatives of each other.
    """
    import torch
    import torch.nn.functional as F

    if visual.shape[0] == 0:
        return visual.new_zeros(())
    v, t = F.normalize(visual.float(), dim=-1), F.normalize(text.float(), dim=-1)
    if negatives == "none":
        return ((1 - (v * t).sum(-1)) / temperature).mean()
    if negatives != "in_batch":
        raise HarnessError(f"negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
    logits = v @ t.T / temperature
    n = logits.shape[0]
    if keys is not None:
        same = torch.tensor([[keys[i] == keys[j] and i != j for j in range(n)] for i in range(n)], device=logits.device)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(n, device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def alignment_pairs(embeds: "torch.Tensor", input_ids: "torch.Tensor", image_token_id: int,
                    infos: Sequence[dict[str, Any]], embed: Callable[["torch.Tensor"], "torch.Tensor"]):
    """The (visual, text, key) pairs of a batch: one global pair per example with image tokens and
    content tokens, one local pair per usable text region. Returns (global, local), each a tuple of
    ([N, H] visual, [N, H] text, keys) or None when there is no pair."""
    import torch

    out: dict[str, list] = {"global": [], "local": []}
    for row, info in enumerate(infos):
        vis = embeds[row][input_ids[row] == image_token_id]
        if vis.shape[0] == 0:
            continue
        ids = info["answer_ids"]
        if ids:
            text = embed(torch.tensor(ids, device=embeds.device)).detach().mean(0)
            out["global"].append((vis.mean(0), text, tuple(ids)))
        for patches, region_ids in info["regions"]:
            index = [info["offset"] + p for p in patches]
            if not region_ids or not index or max(index) >= vis.shape[0]:
                continue
            text = embed(torch.tensor(region_ids, device=embeds.device)).detach().mean(0)
            out["local"].append((vis[index].mean(0), text, tuple(region_ids)))

    def stack(pairs):
        if not pairs:
            return None
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), [p[2] for p in pairs]

    return stack(out["global"]), stack(out["local"])


# --- text regions -> vision tokens -----------------------------------------------------------------
@dataclass(frozen=True)
class PatchGrid:
    """Where original image pixels land on the vision tokens: x' = x * scale_x + shift_x (resize,
    then pad / crop offsets), in a cols x rows grid of `cell`-pixel tokens numbered row by row."""

    scale_x: float
    scale_y: float
    shift_x: float
    shift_y: float
    cell: int
    cols: int
    rows: int


def box_to_patches(box: Sequence[float], grid: PatchGrid) -> list[int]:
    """Indices of the tokens whose cells overlap the box [x0, y0, x1, y1] (original pixels)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    xs = sorted((x0 * grid.scale_x + grid.shift_x, x1 * grid.scale_x + grid.shift_x))
    ys = sorted((y0 * grid.scale_y + grid.shift_y, y1 * grid.scale_y + grid.shift_y))
    eps = 1e-6  # 50 px * 0.56 is 28.000000000000004: an edge on a cell border must not spill over
    c0, c1 = max(0, math.floor(xs[0] / grid.cell + eps)), min(grid.cols - 1, math.ceil(xs[1] / grid.cell - eps) - 1)
    r0, r1 = max(0, math.floor(ys[0] / grid.cell + eps)), min(grid.rows - 1, math.ceil(ys[1] / grid.cell - eps) - 1)
    return [r * grid.cols + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]


def _get(size: Any, key: str) -> Any:
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def clip_grid(processor: Any, patch: int, width: int, height: int) -> PatchGrid:
    """The grid of a LLaVA-style (CLIP) image processor: optional pad to square, resize (shortest
    edge or fixed size), optional centre crop, then `patch`-pixel patches."""
    w, h, pad_x, pad_y = width, height, 0, 0
    if getattr(processor, "do_pad", False):  # LLaVA pads to a square first, centred
        side = max(w, h)
        pad_x, pad_y, w, h = (side - w) // 2, (side - h) // 2, side, side
    size = processor.size
    if not getattr(processor, "do_resize", True):
        new_w, new_h = w, h
    elif _get(size, "shortest_edge") and not _get(size, "longest_edge"):
        short = int(_get(size, "shortest_edge"))
        long = int(short * max(w, h) / min(w, h))  # transformers' get_resize_output_image_size
        new_w, new_h = (short, long) if w <= h else (long, short)
    elif _get(size, "height") and _get(size, "width"):
        new_w, new_h = int(_get(size, "width")), int(_get(size, "height"))
    else:
        raise HarnessError(f"remgcl: image processor resize {size} is not supported (shortest_edge or height/width); "
                           "train without text regions (local_weight=0)")
    sx, sy = new_w / w, new_h / h
    left = top = 0
    if getattr(processor, "do_center_crop", False):
        crop_h, crop_w = int(_get(processor.crop_size, "height")), int(_get(processor.crop_size, "width"))
        top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
        if top < 0 or left < 0:
            raise HarnessError(f"remgcl: a {width}x{height} image is smaller than the processor's crop; use larger images")
        new_w, new_h = crop_w, crop_h
    return PatchGrid(sx, sy, pad_x * sx - left, pad_y * sy - top, patch, new_w // patch, new_h // patch)


def qwen_grid(grid_thw: Sequence[int], patch: int, merge: int, width: int, height: int) -> PatchGrid:
    """Qwen2-VL: the image is resized to grid_h x grid_w patches (no crop) and 2x2 patches merge
    into one token, tokens numbered row by row over the merged grid."""
    _, gh, gw = (int(v) for v in grid_thw)
    return PatchGrid(gw * patch / width, gh * patch / height, 0.0, 0.0, patch * merge, gw // merge, gh // merge)


def content_token_ids(tokenizer: Any, prefix: str, text: str, drop_stop_words: bool = True) -> list[int]:
    """Token ids of `text` as it is tokenized after `prefix` (the reply prefix), keeping only tokens
    that overlap a word (stop words dropped when asked); punctuation-only tokens go."""
    if not getattr(tokenizer, "is_fast", False):
        raise HarnessError("remgcl needs a fast tokenizer (token offsets); save the checkpoint's tokenizer.json")
    enc = tokenizer(prefix + text, add_special_tokens=False, return_offsets_mapping=True)
    start = len(prefix)
    spans = [(m.start() + start, m.end() + start) for m in re.finditer(r"\w+", text)
             if not (drop_stop_words and m.group().lower() in STOP_WORDS)]
    if not drop_stop_words and not spans and text.strip():  # a symbol region ("+", "="): keep its tokens
        spans = [(start, start + len(text))]
    return [tid for tid, (s, e) in zip(enc["input_ids"], enc["offset_mapping"])
            if e > s and any(s < we and e > ws for ws, we in spans)]


class REMGCLCollator(SFTCollator):
    """SFT batches plus `remgcl`: per example its reply content ids, and for each text region the
    token indices under its box and the region text's ids."""

    def __init__(self, backend: Any, examples: Any, local: bool = True) -> None:
        super().__init__(backend, examples)
        self.local = local  # map text regions to visual tokens (the local term is on)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(rows)
        b = self.backend
        grids = batch.get("image_grid_thw")
        image_cursor = 0
        infos = []
        for r in rows:
            ex = self.examples[r["idx"]]
            info = {"answer_ids": content_token_ids(b.tokenizer, b.reply_prefix, ex.target), "regions": [], "offset": 0}
            regions = (ex.item.metadata.get("text_regions") or []) if self.local else []
            if regions and ex.images:
                width, height = ex.images[0].size
                if b.family.grid == "qwen":
                    grid = qwen_grid(grids[image_cursor].tolist(), b.image_processor.patch_size,
                                     b.image_processor.merge_size, width, height)
                elif b.family.grid == "clip":
                    vision = b.model.config.vision_config
                    grid = clip_grid(b.image_processor, vision.patch_size, width, height)
                    # a CLIP tower keeps its CLS token in front of the patches unless "default" drops it
                    info["offset"] = int(vision.model_type == "clip_vision_model"
                                         and b.model.config.vision_feature_select_strategy == "full")
                else:
                    raise HarnessError(f"remgcl: text regions need the visual-token grid of the model family, and "
                                       f"{b.model_family!r} has none in harness/models/families.py; train with local_weight=0")
                for region in regions:
                    if not (isinstance(region, dict) and isinstance(region.get("text"), str)
                            and isinstance(region.get("box"), (list, tuple)) and len(region["box"]) == 4):
                        raise HarnessError(f"item {ex.item.id}: text_regions entries must be {{text, box: [x0, y0, x1, y1]}}")
                    info["regions"].append((box_to_patches(region["box"], grid),
                                            content_token_ids(b.tokenizer, b.reply_prefix, region["text"], False)))
            image_cursor += len(ex.images)
            infos.append(info)
        batch["remgcl"] = infos
        return batch


def _decoder(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(getattr(base, "model", None), "language_model", None)
    if decoder is None:
        raise HarnessError(f"remgcl: cannot find the language model inside {type(base).__name__} "
                           "(expected <model>.model.language_model, as LLaVA and Qwen2-VL have)")
    return decoder


def _make_trainer(sft_trainer_cls: type):
    """The trainer class, built on demand: importing TRL at module level would make every
    `harness train` (which imports the config class) pay for it."""

    class REMGCLTrainer(sft_trainer_cls):
        """TRL's SFTTrainer whose loss adds the weighted alignment terms (logged as align/global, align/local)."""

        def __init__(self, *args: Any, align: tuple[float, float, float, str], image_token_id: int, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.align = align  # (global_weight, local_weight, temperature, negatives)
            self.image_token_id = image_token_id
            self.align_history: dict[str, list[float]] = {"global": [], "local": []}
            self.align_pairs = {"global": 0, "local": 0}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            infos = inputs.pop("remgcl")
            captured: dict[str, Any] = {}

            def grab(module, args, kwargs):
                captured["embeds"] = kwargs.get("inputs_embeds")

            hook = _decoder(model).register_forward_pre_hook(grab, with_kwargs=True)
            try:
                # return_outputs=True would make TRL run a second forward for the logits; only ask when asked
                result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                              num_items_in_batch=num_items_in_batch)
            finally:
                hook.remove()
            if captured.get("embeds") is None:
                raise HarnessError("remgcl: the language model received no inputs_embeds; cannot read the visual tokens")
            loss, outputs = result if return_outputs else (result, None)
            g_w, l_w, tau, negatives = self.align
            pairs = alignment_pairs(captured["embeds"], inputs["input_ids"], self.image_token_id, infos,
                                    model.get_input_embeddings())
            mode = "train" if self.model.training else "eval"
            for name, weight, found in (("global", g_w, pairs[0]), ("local", l_w, pairs[1])):
                if found is None:
                    continue
                term = alignment_loss(found[0], found[1], tau, negatives, found[2])
                loss = loss + weight * term.to(loss.dtype)
                self._metrics[mode][f"align/{name}"].append(float(term.detach()))
                if mode == "train":
                    self.align_history[name].append(float(term.detach()))
                    self.align_pairs[name] += found[0].shape[0]
            return (loss, outputs) if return_outputs else loss

    return REMGCLTrainer


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"steps": 0, "first": None, "last": None, "mean": None}
    return {"steps": len(values), "first": round(values[0], 4), "last": round(values[-1], 4),
            "mean": round(sum(values) / len(values), 4)}


# --- the treatment ---------------------------------------------------------------------------------
def run(cfg: REMGCLConfig, base: str, tasks: str, out: Path, data_dir: str | Path | None = None,
        overwrite: bool = False, progress: bool = True, device: str | None = None,
        sources: Sequence[Source] = ()) -> dict[str, Any]:
    """SFT with the alignment loss on the train split of `tasks`; writes `out` (an adapter, or with
    full_finetune a full checkpoint, + manifest)."""
    from trl import SFTTrainer

    from trainers.common import load_base, quiet_libraries, save_trained, staged_output, train_metrics, write_manifest
    from trainers.data import load_train_data
    from trainers.sft import fit_lora_sft

    quiet_libraries()
    from trainers.replay import with_replay

    examples, data = load_train_data(tasks, data_dir, cfg.limit, cfg.target, sources)
    examples = with_replay(examples, data, cfg, data_dir)  # replay rows carry no regions: SFT loss only
    data["with_regions"] = sum(bool(e.item.metadata.get("text_regions")) for e in examples)
    t0 = time.time()
    with staged_output(Path(out), overwrite) as stage:
        backend, base_name = load_base(base, cfg.qlora, device, start_from_adapter="remgcl",
                                       dtype="float32" if cfg.full_finetune else None)
        _decoder(backend.model)  # an unsupported architecture fails before training starts
        if cfg.local_weight > 0 and data["with_regions"] and backend.family.grid is None:
            raise HarnessError(f"remgcl: text regions need the visual-token grid of the model family, and "
                               f"{backend.model_family!r} has none in harness/models/families.py; train with local_weight=0")
        if not backend.family.visual_tokens:
            raise HarnessError(f"remgcl: {backend.model_family} models read images by cross-attention; there are no "
                               "visual tokens in the sequence to align; use sft")
        trainer = fit_lora_sft(
            backend, backend.model, examples, cfg, progress, f"remgcl {data['task']}",
            collator=REMGCLCollator(backend, examples, local=cfg.local_weight > 0), trainer_cls=_make_trainer(SFTTrainer),
            image_token_id=backend.image_token_id,
            align=(cfg.global_weight, cfg.local_weight, cfg.temperature, cfg.negatives),
        )
        metrics = train_metrics(trainer)
        metrics["wall_seconds"] = round(time.time() - t0, 1)
        metrics["alignment"] = {
            "negatives": cfg.negatives, "temperature": cfg.temperature,
            "global": {**_summary(trainer.align_history["global"]), "pairs": trainer.align_pairs["global"]},
            "local": {**_summary(trainer.align_history["local"]), "pairs": trainer.align_pairs["local"]},
        }
        save_trained(trainer.model, stage, base_name, backend)
        return write_manifest(stage, "remgcl", cfg, base=base_name, base_hash=backend.content_hash, data=data,
                              metrics=metrics, start_adapter=getattr(backend, "start_adapter", None))
