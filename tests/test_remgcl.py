"""REMGCL (issue 8): the alignment loss matches hand computations (pull-only and InfoNCE, global and
local), text-region boxes land on the right vision tokens (checked against the image processor's
own output), and a short run writes an adapter that `harness eval` loads."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import BUNDLED, run_cli
from harness.errors import HarnessError

torch = pytest.importorskip("torch")
pytest.importorskip("trl")


@pytest.fixture(scope="module")
def backend(random_tiny):
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint

    return HFBackend(resolve_checkpoint(str(random_tiny)), device="cpu")


# --- the loss --------------------------------------------------------------------------------------
def test_pull_only_and_infonce_by_hand():
    from trainers.remgcl import alignment_loss

    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # cosines with their pairs: 1 and 1/sqrt(2)
    tau, c = 0.5, 1 / math.sqrt(2)
    assert alignment_loss(v, t, tau).item() == pytest.approx(((1 - 1) + (1 - c)) / tau / 2, abs=1e-6)
    # S = cos / tau = [[2, 2c], [0, 2c]]; symmetric cross-entropy with the diagonal as targets.
    rows = (-2 + math.log(math.exp(2) + math.exp(2 * c))) + (-2 * c + math.log(1 + math.exp(2 * c)))
    cols = (-2 + math.log(math.exp(2) + 1)) + math.log(2)
    assert alignment_loss(v, t, tau, "in_batch").item() == pytest.approx((rows / 2 + cols / 2) / 2, abs=1e-6)
    # Pairs with the same text are not each other's negatives: nothing left to contrast.
    assert alignment_loss(v, t, tau, "in_batch", keys=[("x",), ("x",)]).item() == pytest.approx(0.0, abs=1e-6)
    assert alignment_loss(3 * v, t, tau).item() == pytest.approx(alignment_loss(v, t, tau).item())  # cosine: scale-free
    assert alignment_loss(v[:0], t[:0], tau).item() == 0.0
    with pytest.raises(HarnessError, match="negatives must be one of"):
        alignment_loss(v, t, tau, "hard")


def test_global_and_local_pairs_by_hand():
    from trainers.remgcl import alignment_loss, alignment_pairs

    img = 3
    input_ids = torch.tensor([[5, img, img, img, img, 7, 8], [0, 0, 0, 0, 5, 7, 8]])  # row 1: no image
    embeds = torch.zeros(2, 7, 2)
    embeds[0, 1:5] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])  # the 4 visual tokens
    table = torch.nn.Embedding(10, 2)
    with torch.no_grad():
        table.weight.zero_()
        table.weight[7] = torch.tensor([1.0, 0.0])
        table.weight[8] = torch.tensor([0.0, 2.0])
    infos = [{"answer_ids": [7, 8], "offset": 0, "regions": [([0, 3], [8]), ([2], [7]), ([9], [7])]},
             {"answer_ids": [7], "offset": 0, "regions": []}]
    (gv, gt, gkeys), (lv, lt, lkeys) = alignment_pairs(embeds, input_ids, img, infos, table)
    # global: mean visual [1, 0.5] vs mean text [0.5, 1]: cos = 1 / 1.25 = 0.8; row 1 has no image.
    assert gv.tolist() == [[1.0, 0.5]] and gt.tolist() == [[0.5, 1.0]] and gkeys == [(7, 8)]
    assert alignment_loss(gv, gt, 0.1).item() == pytest.approx((1 - 0.8) / 0.1, abs=1e-5)
    # local: tokens 0 and 3 -> [1.5, 0] vs [0, 2] (cos 0); token 2 -> [1, 1] vs [1, 0] (cos 1/sqrt 2);
    # patch 9 is outside the 4-token image and is dropped.
    assert lv.tolist() == [[1.5, 0.0], [1.0, 1.0]] and lkeys == [(8,), (7,)]
    expected = ((1 - 0.0) / 0.1 + (1 - 1 / math.sqrt(2)) / 0.1) / 2
    assert alignment_loss(lv, lt, 0.1).item() == pytest.approx(expected, abs=1e-5)
    # A CLS token in front of the patches shifts the indices by one.
    infos[0].update(offset=1, regions=[([0, 2], [8]), ([3], [8])])
    _, (lv, _, _) = alignment_pairs(embeds, input_ids, img, infos, table)
    assert lv.tolist() == [[1.0, 0.5]]  # tokens 1 and 3 -> ([0, 1] + [2, 0]) / 2; token 4 does not exist


def test_trainer_loss_is_sft_plus_weighted_terms(random_tiny, tmp_path):
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.core.task import get_task
    from trainers.common import lora_config, trl_args
    from trainers.data import index_dataset, load_examples
    from trainers.remgcl import REMGCLCollator, REMGCLConfig, _make_trainer

    backend = HFBackend(resolve_checkpoint(str(random_tiny)), device="cpu")  # PEFT wraps it in place
    cfg = REMGCLConfig(max_steps=1, batch_size=4)
    examples = load_examples(get_task("ocrbench"), BUNDLED, limit=4)
    collator = REMGCLCollator(backend, examples)
    trainer = _make_trainer(SFTTrainer)(
        model=backend.model, args=trl_args(TRLSFTConfig, cfg, tmp_path, dataset_kwargs={"skip_prepare_dataset": True}),
        train_dataset=index_dataset(4), data_collator=collator, processing_class=backend.tokenizer,
        peft_config=lora_config(cfg), image_token_id=backend.image_token_id, align=(0.0, 0.0, 0.07, "none"),
    )
    rows = [{"idx": i} for i in range(4)]
    trainer.model.train()
    with torch.no_grad():
        sft_only = trainer.compute_loss(trainer.model, collator(rows)).item()
        trainer.align = (0.3, 0.5, 0.07, "none")
        total = trainer.compute_loss(trainer.model, collator(rows)).item()
    g, l = trainer._metrics["train"]["align/global"][-1], trainer._metrics["train"]["align/local"][-1]
    assert g > 0 and l > 0
    assert total == pytest.approx(sft_only + 0.3 * g + 0.5 * l, rel=1e-5)


# --- regions -> vision tokens ----------------------------------------------------------------------
def test_box_to_patch_arithmetic():
    from trainers.remgcl import PatchGrid, box_to_patches, clip_grid, qwen_grid

    half = PatchGrid(0.5, 0.5, 0.0, 0.0, 16, 4, 4)  # a 128 px image on tiny's 64 px, 4x4 grid
    assert box_to_patches([12, 45, 50, 99], half) == [4, 5, 8, 9, 12, 13]
    assert box_to_patches([0, 0, 32, 32], half) == [0]  # ends exactly on a cell border
    assert box_to_patches([-40, -40, -2, -2], half) == []  # outside the image (e.g. cropped away)
    tall = SimpleNamespace(do_resize=True, size={"shortest_edge": 32}, do_center_crop=True,
                           crop_size={"height": 32, "width": 32})
    # 64x128 -> resize 32x64 -> centre crop rows 16..48: y' = y / 2 - 16.
    assert clip_grid(tall, 8, 64, 128) == PatchGrid(0.5, 0.5, 0.0, -16.0, 8, 4, 4)
    assert box_to_patches([16, 48, 48, 80], clip_grid(tall, 8, 64, 128)) == [5, 6, 9, 10]
    padded = SimpleNamespace(do_pad=True, do_resize=True, size={"height": 32, "width": 32}, do_center_crop=False)
    # pad 64x128 to 128x128 (32 px each side), then a quarter: x' = (x + 32) / 4.
    assert box_to_patches([0, 0, 64, 128], clip_grid(padded, 8, 64, 128)) == [1, 2, 5, 6, 9, 10, 13, 14]
    with pytest.raises(HarnessError, match="resize .* is not supported"):
        clip_grid(SimpleNamespace(size={"longest_edge": 32}), 8, 64, 64)
    # Qwen2-VL: 300x200 resized to 12x8 patches of 14 px, 2x2 merged -> a 6x4 token grid.
    grid = qwen_grid([1, 8, 12], 14, 2, 300, 200)
    assert (grid.cols, grid.rows, grid.cell) == (6, 4, 28)
    assert box_to_patches([0, 0, 50, 50], grid) == [0] and box_to_patches([100, 100, 200, 150], grid) == [14, 15]


def _patch_means(pixel_values: "torch.Tensor", processor, patch: int) -> "torch.Tensor":
    """Per-patch mean of the un-normalised image, [rows*cols, 3] in row-major token order."""
    mean = torch.tensor(processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_std).view(3, 1, 1)
    img = pixel_values[0] * std + mean
    cells = img.unfold(1, patch, patch).unfold(2, patch, patch)  # 3, rows, cols, p, p
    return cells.mean((-1, -2)).permute(1, 2, 0).reshape(-1, 3)


@pytest.mark.parametrize("size", [(64, 128), (128, 64)])
def test_box_mapping_matches_the_image_processor(backend, size):
    from PIL import Image, ImageDraw

    from trainers.remgcl import box_to_patches, clip_grid

    w, h = size
    box = [16, 48, 48, 80] if w < h else [48, 16, 80, 48]  # on cell borders after resize and crop
    img = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(img).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=(255, 0, 0))
    pixels = backend.image_processor(images=[img], return_tensors="pt")["pixel_values"]
    patch = backend.model.config.vision_config.patch_size
    means = _patch_means(pixels, backend.image_processor, patch)
    red = {i for i, (r, g, b) in enumerate(means.tolist()) if g < 0.5}
    assert red == set(box_to_patches(box, clip_grid(backend.image_processor, patch, w, h))) and red


def test_bundled_ocr_regions_cover_the_ink(backend):
    from harness.core.task import get_task
    from trainers.data import load_examples
    from trainers.remgcl import box_to_patches, clip_grid

    patch = backend.model.config.vision_config.patch_size
    for ex in load_examples(get_task("ocrbench"), BUNDLED, limit=12):
        regions = ex.item.metadata["text_regions"]
        grid = clip_grid(backend.image_processor, patch, *ex.images[0].size)
        under = set().union(*(box_to_patches(r["box"], grid) for r in regions))
        pixels = backend.image_processor(images=ex.images, return_tensors="pt")["pixel_values"]
        means = _patch_means(pixels, backend.image_processor, patch).mean(1)
        inked = {i for i, m in enumerate(means.tolist()) if m < 0.85}  # the ground is light, the ink dark
        assert inked and inked <= under, ex.item.id


def test_content_tokens_drop_stop_words(backend):
    from trainers.remgcl import content_token_ids

    tok = backend.tokenizer
    kept = tok.decode(content_token_ids(tok, " ", "the angle is 40 degrees. Answer: B"))
    assert "angle" in kept and "40" in kept and "B" in kept
    assert "the" not in kept.split() and " is" not in kept and "Answer" not in kept and "." not in kept
    assert tok.decode(content_token_ids(tok, " ", "+", drop_stop_words=False)).strip() == "+"  # a symbol region
    assert content_token_ids(tok, " ", "+") == []


def test_collator_marks_regions_for_ocr_items_only(backend):
    from harness.core.task import get_task
    from trainers.data import load_examples
    from trainers.remgcl import REMGCLCollator

    examples = load_examples(get_task("ocrbench"), BUNDLED, limit=2) + load_examples(get_task("geoqa"), BUNDLED, limit=2)
    batch = REMGCLCollator(backend, examples)([{"idx": i} for i in range(4)])
    infos = batch["remgcl"]
    assert [len(i["regions"]) for i in infos[2:]] == [0, 0] and all(i["answer_ids"] for i in infos)
    for ex, info in zip(examples[:2], infos[:2]):
        assert len(info["regions"]) == len(ex.item.metadata["text_regions"])
        assert all(patches and ids for patches, ids in info["regions"])
    assert "remgcl" not in {k for k, v in batch.items() if hasattr(v, "shape")}


# --- runs and config -------------------------------------------------------------------------------
def test_short_run_writes_an_adapter_that_eval_loads(random_tiny, tmp_path):
    out = tmp_path / "remgcl"
    res = run_cli("train", "remgcl", "--base", str(random_tiny), "--task", "ocrbench,geoqa", "--out", str(out),
                  "max_steps=2", "batch_size=4", "limit=4", "logging_steps=1", "negatives=in_batch")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    align = manifest["metrics"]["alignment"]
    assert manifest["treatment"] == "remgcl" and manifest["config"]["negatives"] == "in_batch"
    assert manifest["data"]["with_regions"] == 4 and manifest["data"]["n"] == 8
    assert align["global"]["pairs"] == 8 and align["local"]["pairs"] >= 4  # 2 steps x 4 items; OCR items have regions
    assert math.isfinite(align["global"]["last"]) and math.isfinite(align["local"]["mean"])
    assert "align/global" in manifest["metrics"]["last_logged"]
    res = run_cli("eval", "--ckpt", str(out), "--tasks", "ocrbench", "--limit", "2", "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "runs" / "remgcl" / "ocrbench" / "summary.json").read_text())["n"] == 2


def test_bad_config_is_a_clear_error():
    from trainers.common import load_config
    from trainers.remgcl import REMGCLConfig

    with pytest.raises(HarnessError, match="negatives must be one of none, in_batch"):
        load_config(REMGCLConfig, None, ["negatives=hard"])
    with pytest.raises(HarnessError, match="temperature must be > 0"):
        load_config(REMGCLConfig, None, ["temperature=0"])
    with pytest.raises(HarnessError, match="global_weight and local_weight must be >= 0"):
        load_config(REMGCLConfig, None, ["local_weight=-0.1"])
    with pytest.raises(HarnessError, match="unknown key.*negative.*valid keys:.*negatives"):
        load_config(REMGCLConfig, None, ["negative=none"])
    assert REMGCLConfig().negatives == "none" and REMGCLConfig().global_weight == 0.01


def test_unsupported_architecture_errors_clearly():
    from trainers.remgcl import _decoder

    with pytest.raises(HarnessError, match="cannot find the language model inside Linear"):
        _decoder(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_qwen2vl_regions_and_run(tmp_path):
    """Qwen2-VL: merged 2x2 patches, grid from image_grid_thw; a short run trains and logs both terms."""
    from harness.core.task import get_task
    from trainers.tiny_model import build_tiny, build_tokenizer
    from trainers.remgcl import REMGCLConfig, run

    task = get_task("ocrbench")
    texts = [task.prompt(it) + " " + task.target_text(it) for it in task.load(BUNDLED, "test")[:100]]
    base = build_tiny("qwen2vl", build_tokenizer(texts, 300, arch="qwen2vl"), tmp_path / "qwen", image_size=32,
                      patch_size=8, hidden=32, layers=1, heads=2, vision_hidden=16, vision_layers=1, vision_heads=2)
    manifest = run(REMGCLConfig(max_steps=2, batch_size=4, limit=4), str(base), "ocrbench", tmp_path / "out", progress=False)
    align = manifest["metrics"]["alignment"]
    assert align["global"]["pairs"] == 8 and align["local"]["pairs"] > 0 and math.isfinite(align["local"]["last"])
