"""The embedded tiny architectures, the HF backend and checkpoint resolution.

Models are built with very small sizes into a session temp folder (once per architecture) and
loaded back through the Auto classes, exactly as a downloaded checkpoint is.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.core.types import GenConfig, Prompt

torch = pytest.importorskip("torch")

ARCHS = ["llava", "qwen2vl"]
SMALL = dict(image_size=32, patch_size=8, hidden=32, layers=1, heads=2, vision_hidden=16,
             vision_layers=1, vision_heads=2)
TEXTS = [
    "Which shape is red? Answer with the option's letter.",
    "A. circle B. square C. triangle D. star",
    "The answer is B.",
    "Read the text in the image.",
] * 20


@pytest.fixture(scope="session")
def tokenizer():
    from trainers.tiny_model import build_tokenizer

    return build_tokenizer(TEXTS, vocab_size=300)


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> list[Path]:
    from PIL import Image, ImageDraw

    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (colour, size) in enumerate([("red", (64, 64)), ("blue", (80, 48))]):
        img = Image.new("RGB", size, "white")
        ImageDraw.Draw(img).rectangle([8, 8, 40, 40], fill=colour)
        paths.append(folder / f"{i}.png")
        img.save(paths[-1])
    return paths


@pytest.fixture(scope="session")
def built(tokenizer, tmp_path_factory) -> dict[str, Path]:
    from trainers.tiny_model import build_tiny

    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny(arch, tokenizer, root / arch, **SMALL) for arch in ARCHS}


@pytest.fixture(scope="session")
def backends(built):
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint

    return {arch: HFBackend(resolve_checkpoint(str(path))) for arch, path in built.items()}


def prompts(images) -> list[Prompt]:
    # Different lengths, so batching needs padding.
    return [
        Prompt("Read the text in the image.", (images[0],)),
        Prompt("Which shape is red? Answer with the option's letter. A. circle B. square C. triangle", (images[1],)),
    ]


# ---- building and loading ------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_loads_through_auto_classes(built, arch):
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    path = built[arch]
    assert (path / "model.safetensors").is_file()
    model = AutoModelForImageTextToText.from_pretrained(path)
    expected = {"llava": "LlavaForConditionalGeneration", "qwen2vl": "Qwen2VLForConditionalGeneration"}
    assert type(model).__name__ == expected[arch]
    tok = AutoTokenizer.from_pretrained(path)
    proc = AutoImageProcessor.from_pretrained(path, backend="pil")
    assert type(proc).__name__.endswith("Pil")
    message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    rendered = tok.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
    if arch == "llava":
        assert rendered == "<s>USER: Hi\n<image> ASSISTANT:"
    else:
        assert rendered == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n"
    # Byte-level BPE: text never seen in training still round-trips.
    odd = "Ünïcode 42 ≠ ∑"
    assert tok.decode(tok(odd, add_special_tokens=False)["input_ids"]) == odd


@pytest.mark.parametrize("arch", ARCHS)
def test_image_tokens_match_vision_grid(backends, images, arch):
    from PIL import Image

    backend = backends[arch]
    inputs = backend.batch_inputs(["x"], [[Image.new("RGB", (32, 32))]])
    n_image_tokens = int((inputs["input_ids"] == backend.image_token_id).sum())
    patches = (32 // 8) ** 2
    # LLaVA: one token per patch (CLS dropped); Qwen2-VL merges 2x2 patches into one token.
    assert n_image_tokens == (patches if arch == "llava" else patches // 4)


# ---- generation ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_batched_greedy_equals_one_by_one(backends, images, arch):
    backend = backends[arch]
    gen = GenConfig(max_new_tokens=6)
    ps = prompts(images)
    batched = backend.generate(ps, gen)
    single = [backend.generate([p], gen)[0] for p in ps]
    assert batched == single
    assert all(len(outs) == 1 and isinstance(outs[0], str) for outs in batched)


@pytest.mark.parametrize("arch", ARCHS)
def test_sampling_n_and_seed(backends, images, arch):
    backend = backends[arch]
    ps = prompts(images)
    gen = GenConfig(max_new_tokens=6, temperature=1.0, seed=7)
    first = backend.generate(ps, gen, n=3)
    assert [len(outs) for outs in first] == [3, 3]
    assert backend.generate(ps, gen, n=3) == first
    other = backend.generate(ps, GenConfig(max_new_tokens=6, temperature=1.0, seed=8), n=3)
    assert other != first  # a random-init model samples near-uniformly over the vocabulary
    greedy = backend.generate(ps, GenConfig(max_new_tokens=6), n=2)
    assert all(outs[0] == outs[1] for outs in greedy)


@pytest.mark.parametrize("arch", ARCHS)
def test_blind_replaces_images_with_grey(backends, images, arch, monkeypatch):
    backend = backends[arch]
    seen = []
    real = backend.batch_inputs

    def spy(texts, imgs, targets=None):
        seen.append(imgs)
        return real(texts, imgs, targets)

    monkeypatch.setattr(backend, "batch_inputs", spy)
    ps = prompts(images)
    backend.generate(ps, GenConfig(max_new_tokens=1), blind=True)
    blind_images = [img for row in seen[-1] for img in row]
    assert [img.size for img in blind_images] == [(64, 64), (80, 48)]
    assert all(img.getcolors() == [(img.width * img.height, (128, 128, 128))] for img in blind_images)
    backend.generate(ps, GenConfig(max_new_tokens=1), blind=False)
    assert seen[-1][0][0].getpixel((20, 20)) == (255, 0, 0)
    monkeypatch.undo()
    seeing = backend.choice_losses(ps, [["A"], ["B"]])
    blind = backend.choice_losses(ps, [["A"], ["B"]], blind=True)
    assert seeing != blind


# ---- inputs, labels, likelihoods -----------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_labels_mask_only_the_reply(backends, images, arch):
    from harness.core.images import open_image

    backend = backends[arch]
    ps = prompts(images)
    targets = ["B", "The answer is B."]
    batch = backend.batch_inputs([p.text for p in ps], [[open_image(r) for r in p.images] for p in ps], targets)
    end = {"llava": "</s>", "qwen2vl": "<|im_end|>"}[arch]
    for row, target in enumerate(targets):
        labels = batch["labels"][row]
        kept = labels != -100
        reply = backend.tokenizer.decode(labels[kept])
        assert reply.strip() == target + end
        # The reply is the tail of the row, so the kept labels are exactly the last tokens.
        n = int(kept.sum())
        assert kept[-n:].all() and not kept[:-n].any()
        assert torch.equal(labels[kept], batch["input_ids"][row][kept])
        # No image token is ever a label.
        assert not (labels == backend.image_token_id).any()
    # Left padding: the shorter row starts with padding that is masked out.
    mask = batch["attention_mask"]
    assert mask[:, -1].all() and not mask.all()
    short = int(mask.sum(1).argmin())
    assert mask[short, 0] == 0 and batch["input_ids"][short, 0] == backend.pad_token_id


@pytest.mark.parametrize("arch", ARCHS)
def test_choice_losses_equal_manual_forward(backends, images, arch):
    from harness.core.images import open_image

    backend = backends[arch]
    ps = prompts(images)
    choices = [["A", "B", "circle"], ["The answer is B.", "square"]]
    losses = backend.choice_losses(ps, choices)
    assert [len(row) for row in losses] == [3, 2]
    assert all(math.isfinite(x) and x > 0 for row in losses for x in row)
    for prompt, row, got_row in zip(ps, choices, losses):
        imgs = [open_image(r) for r in prompt.images]
        for choice, got in zip(row, got_row):
            with torch.no_grad():
                manual = backend.model(**backend.batch_inputs([prompt.text], [imgs], [choice])).loss
            assert got == pytest.approx(float(manual), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_losses_equal_one_by_one(backends, images, arch):
    # Greedy argmax of a random tiny model barely moves when padding leaks into attention; the
    # losses do, so this is the sharp check that left padding is masked out.
    backend = backends[arch]
    ps = prompts(images)
    choices = [["A", "B"], ["The answer is B.", "square"]]
    batched = backend.choice_losses(ps, choices)
    single = [backend.choice_losses([p], [c])[0] for p, c in zip(ps, choices)]
    for got, want in zip(batched, single):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


# ---- checkpoints ---------------------------------------------------------------------------
def test_resolve_errors(tmp_path, monkeypatch):
    from harness.models import checkpoints
    from harness.models.checkpoints import resolve_checkpoint

    with pytest.raises(HarnessError, match="checkpoint not found"):
        resolve_checkpoint(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HarnessError, match="no config.json or adapter_config.json"):
        resolve_checkpoint(str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(HarnessError, match="broken .*config.json"):
        resolve_checkpoint(str(broken))
    remote = tmp_path / "internvl"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "internvl_chat", "auto_map": {}}))
    with pytest.raises(HarnessError, match="--trust-remote-code"):
        resolve_checkpoint(str(remote))
    assert resolve_checkpoint(str(remote), trust_remote_code=True).kind == "model"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(HarnessError, match="gone.*--base"):
        resolve_checkpoint(str(adapter))
    monkeypatch.setattr(checkpoints, "tiny_path", lambda: tmp_path / "checkpoints" / "tiny")
    with pytest.raises(HarnessError, match="make tiny"):
        resolve_checkpoint("tiny")
    with pytest.raises(HarnessError) as info:
        resolve_checkpoint(str(broken))
    assert "\n" not in str(info.value)


def test_content_hash_tracks_weights(built, tmp_path):
    from harness.models.checkpoints import resolve_checkpoint

    copy = tmp_path / "copy"
    shutil.copytree(built["llava"], copy)
    original = resolve_checkpoint(str(built["llava"]))
    assert resolve_checkpoint(str(copy)).content_hash == original.content_hash  # content, not location
    (copy / "manifest.json").write_text('{"train_seconds": 12.5}')  # how it was made, not what it computes
    (copy / "README.md").write_text("a model card naming /some/other/path\n")
    assert resolve_checkpoint(str(copy)).content_hash == original.content_hash
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("}", ', "note": 1}', 1))
    assert resolve_checkpoint(str(copy)).content_hash != original.content_hash
    shutil.copy(built["llava"] / "config.json", copy / "config.json")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # flip one byte of one weight
    weights.write_bytes(bytes(data))
    assert resolve_checkpoint(str(copy)).content_hash != original.content_hash


def test_adapter_hash_ignores_the_order_peft_writes_target_modules_in(tmp_path):
    """PEFT writes target_modules from a set: two identical trainings may list them in other orders."""
    import json

    from harness.models.checkpoints import content_hash

    hashes = []
    for order in (["q_proj", "v_proj", "k_proj"], ["k_proj", "q_proj", "v_proj"]):
        folder = tmp_path / "-".join(order)
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": order}))
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        hashes.append(content_hash(folder))
    assert hashes[0] == hashes[1]
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "target_modules": order}))
    assert content_hash(folder) != hashes[0]


def test_broken_weights_are_a_harness_error(built, tmp_path):
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint

    copy = tmp_path / "bad"
    shutil.copytree(built["llava"], copy)
    (copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(HarnessError, match=str(copy)):
        HFBackend(resolve_checkpoint(str(copy)))


def test_lora_adapter_roundtrip(built, backends, images, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint

    base_dir = built["llava"]
    model = AutoModelForImageTextToText.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA starts as a no-op (B = 0); make it change the model
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter_dir = tmp_path / "lora"
    peft_model.save_pretrained(adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]

    ref = resolve_checkpoint(str(adapter_dir))
    assert ref.kind == "adapter" and ref.base_path == base_dir.resolve()
    assert ref.content_hash != backends["llava"].content_hash
    import warnings

    with warnings.catch_warnings():  # loading an adapter prints no library deprecation notice
        warnings.simplefilter("error", FutureWarning)
        adapted = HFBackend(ref)
    ps = prompts(images)
    outputs = adapted.generate(ps, GenConfig(max_new_tokens=4))
    assert [len(o) for o in outputs] == [1, 1]
    assert adapted.choice_losses(ps, [["A"], ["B"]]) != backends["llava"].choice_losses(ps, [["A"], ["B"]])

    # An adapter whose recorded base is gone needs --base; giving it works.
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "moved_base")
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(HarnessError, match="--base"):
        resolve_checkpoint(str(adapter_dir))
    assert resolve_checkpoint(str(adapter_dir), base=str(base_dir)).base_path == base_dir.resolve()
