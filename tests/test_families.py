"""Every family harness/models/families.py knows, on a tiny random checkpoint built from its config class:
`harness eval` on geoqa with images of mixed sizes, our batch against the family processor's own
output, likelihoods, sampling, --blind, adapters; the one-line errors of families that cannot load."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.core.types import GenConfig, Prompt
from conftest import BUNDLED, run_cli
from tiny_families import FAMILIES, build_family

ALL = sorted(FAMILIES)
SIZES = [(32, 48), (48, 32), (40, 40), (64, 24)]  # (width, height): every batch mixes shapes and aspect ratios


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    """One tiny checkpoint per family, built once per session."""
    root = tmp_path_factory.mktemp("families")
    return {name: build_family(name, root / name) for name in ALL}


@pytest.fixture(scope="session")
def family_backends(family_dirs) -> dict:
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint

    return {name: HFBackend(resolve_checkpoint(str(path)), device="cpu") for name, path in family_dirs.items()}


@pytest.fixture(scope="session")
def mixed_geoqa(tmp_path_factory) -> Path:
    """The first 4 bundled geoqa test items with their images resized to 4 different shapes."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "geoqa" / "images").mkdir(parents=True)
    keep = 4
    for name in ("test_questions.jsonl", "test_answers.jsonl", "test_meta.jsonl"):
        lines = (BUNDLED / "geoqa" / name).read_text().splitlines()[:keep]
        (root / "geoqa" / name).write_text("\n".join(lines) + "\n")
    for line, size in zip((root / "geoqa" / "test_questions.jsonl").read_text().splitlines(), SIZES):
        image = json.loads(line)["image"]
        (root / "geoqa" / "images" / image).parent.mkdir(parents=True, exist_ok=True)
        Image.open(BUNDLED / "geoqa" / "images" / image).convert("RGB").resize(size).save(root / "geoqa" / "images" / image)
    return root


def _images(k: int = 2) -> list[list[Image.Image]]:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    return [[Image.new("RGB", SIZES[i], colours[i])] for i in range(k)]


# ---- harness eval, every family ------------------------------------------------------------------
@pytest.mark.parametrize("family", ALL)
def test_eval_geoqa_with_mixed_image_sizes(family, family_dirs, mixed_geoqa, tmp_path, capsys):
    from harness.cli import main

    out = tmp_path / "runs"
    code = main(["eval", "--ckpt", str(family_dirs[family]), "--tasks", "geoqa", "--limit", "4", "--batch-size", "4",
                 "--max-new-tokens", "4", "--data-dir", str(mixed_geoqa), "--output-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / family / "geoqa" / "summary.json").read_text())
    assert summary["n"] == 4
    rows = [json.loads(line) for line in (out / family / "geoqa" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(isinstance(r["output"], str) for r in rows)


@pytest.mark.slow  # the in-process runs above cover the command; this one pays a fresh interpreter's imports
def test_eval_cli_in_a_fresh_process(family_dirs, mixed_geoqa, tmp_path):
    res = run_cli("eval", "--ckpt", str(family_dirs["qwen3_vl"]), "--tasks", "geoqa", "--limit", "4",
                  "--max-new-tokens", "4", "--data-dir", str(mixed_geoqa), "--output-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "qwen3_vl" / "geoqa" / "summary.json").read_text())["n"] == 4


# ---- our batch = the family processor's own output ------------------------------------------------
def _messages(text: str, images: list) -> list[dict]:
    return [{"role": "user", "content": [*({"type": "image", "image": im} for im in images),
                                         {"type": "text", "text": text}]}]


# SmolVLM's processor.apply_chat_template reads its video processor, which the harness never loads.
PROCESSOR_TEMPLATE = [f for f in ALL if f != "smolvlm"]


@pytest.mark.parametrize("family", PROCESSOR_TEMPLATE)
def test_batch_equals_the_processors_own_output(family, family_backends):
    backend = family_backends[family]
    texts = ["Which angle?", "Answer: B because it is"]
    images = _images(2)
    for idx in ([0], [0, 1]):  # one prompt, then a padded batch of two
        ours = backend.batch_inputs([texts[i] for i in idx], [images[i] for i in idx])
        theirs = backend.processor.apply_chat_template(
            [_messages(texts[i], images[i]) for i in idx], add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt", padding=True, padding_side="left",
            chat_template=backend.chat_template)
        for key in ("input_ids", "attention_mask", "pixel_values"):
            assert torch.equal(ours[key].cpu(), theirs[key].to(ours[key].dtype)), (family, key, len(idx))


@pytest.mark.parametrize("family", ALL)
def test_reply_labels_are_the_reply_tokens(family, family_backends):
    backend = family_backends[family]
    targets = ["B", "A. 30 is it"]
    batch = backend.batch_inputs(["Which angle?", "Answer: B because"], _images(2), targets)
    plain = backend.batch_inputs(["Which angle?", "Answer: B because"], _images(2))
    for row, target in enumerate(targets):
        reply = backend.tokenizer(backend.reply_prefix + target + backend.reply_suffix, add_special_tokens=False)["input_ids"]
        labelled = batch["labels"][row][batch["labels"][row] != -100].tolist()
        assert labelled == reply
        # the prompt part is the processor's prompt, unchanged
        prompt = plain["input_ids"][row][plain["attention_mask"][row].bool()].tolist()
        full = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        assert full == prompt + reply
    if family == "paligemma":  # prefix-LM: reply tokens are the causal suffix
        assert bool((batch["token_type_ids"][batch["labels"] != -100] == 1).all())


# ---- likelihoods, sampling, blind ------------------------------------------------------------------
@pytest.mark.parametrize("family", ALL)
def test_likelihood_sampling_and_blind(family, family_backends, tmp_path):
    from harness.models.backend import sequence_losses

    backend = family_backends[family]
    paths = []
    for i, [im] in enumerate(_images(2)):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    prompts = [Prompt("Which angle?", (paths[0],)), Prompt("Answer: B because it is", (paths[1],))]
    losses = backend.choice_losses(prompts, [["A", "B"], ["C"]])
    assert [len(x) for x in losses] == [2, 1] and all(torch.isfinite(torch.tensor(x)).all() for x in losses)
    # one prompt alone scores the same as in the batch (padding and batching change nothing)
    alone = backend.choice_losses(prompts[1:], [["C"]])
    assert alone[0][0] == pytest.approx(losses[1][0], rel=1e-4, abs=1e-5)
    batch = backend.batch_inputs(["Which angle?"], [[Image.open(paths[0]).convert("RGB")]], ["B"])
    labels = batch.pop("labels")
    with torch.inference_mode():
        manual = sequence_losses(backend.model(**batch).logits.float(), labels)
    assert float(manual[0]) == pytest.approx(losses[0][1], rel=1e-4, abs=1e-5)

    sampled = backend.generate(prompts, GenConfig(max_new_tokens=3, temperature=1.0, seed=3), n=3)
    assert [len(s) for s in sampled] == [3, 3]
    assert sampled == backend.generate(prompts, GenConfig(max_new_tokens=3, temperature=1.0, seed=3), n=3)
    blind = backend.choice_losses(prompts, [["A", "B"], ["C"]], blind=True)
    assert blind != losses  # the images reach the model


# ---- adapters ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llava_next", "qwen3_vl", "internvl", "gemma3"])
def test_lora_adapter_evaluates(family, family_dirs, family_backends, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.cli import main

    model = AutoModelForImageTextToText.from_pretrained(family_dirs[family])
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA starts as a no-op (B = 0); make it change the model
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter = tmp_path / f"{family}-lora"
    peft_model.save_pretrained(adapter)
    adapted = HFBackend(resolve_checkpoint(str(adapter)), device="cpu")
    prompt = [Prompt("Which angle?", ())]
    assert adapted.choice_losses(prompt, [["A"]]) != family_backends[family].choice_losses(prompt, [["A"]])
    code = main(["eval", "--ckpt", str(adapter), "--tasks", "aokvqa_mc", "--limit", "4", "--mc-mode", "likelihood",
                 "--output-dir", str(tmp_path / "runs")])
    assert code == 0, capsys.readouterr().err
    [summary] = (tmp_path / "runs").glob(f"{adapter.name}/aokvqa_mc*/summary.json")
    assert json.loads(summary.read_text())["n"] == 4


# ---- families that cannot run, and families without an entry ----------------------------------------
def test_internvl_chat_needs_the_flag_and_its_code(family_dirs, tmp_path, capsys):
    from harness.models.checkpoints import resolve_checkpoint

    remote = tmp_path / "internvl_chat"
    shutil.copytree(family_dirs["internvl"], remote)
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="internvl_chat", auto_map={"AutoModel": "modeling_internvl_chat.InternVLChatModel"})
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(HarnessError, match="--trust-remote-code"):
        resolve_checkpoint(str(remote))
    from harness.cli import main

    code = main(["eval", "--ckpt", str(remote), "--tasks", "geoqa", "--limit", "1", "--trust-remote-code",
                 "--output-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "modeling_internvl_chat.py" in err and str(remote) in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("summary.json"))


def test_missing_processor_package_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    from harness.models import families

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: lfm2_vl's processor loads")
    with pytest.raises(HarnessError, match="needs the package torchvision"):
        families.load_processor(tmp_path, families.family_of("lfm2_vl"), None)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "num2words" else real(name, *a))
    with pytest.raises(HarnessError, match="needs the package num2words; pip install num2words"):
        families.load_processor(tmp_path, families.family_of("smolvlm"), None)


def test_a_family_without_an_entry_runs_through_its_processor(family_dirs, family_backends, monkeypatch, capsys):
    from harness.models import backend as backend_module
    from harness.models import families
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint

    monkeypatch.delitem(families.FAMILIES, "llava_next")
    monkeypatch.setattr(backend_module, "_said", set())
    generic = HFBackend(resolve_checkpoint(str(family_dirs["llava_next"])), device="cpu")
    assert "no entry in harness/models/families.py" in capsys.readouterr().err
    known = family_backends["llava_next"]
    texts, images = ["Which angle?", "Answer: B because"], _images(2)
    a, b = generic.batch_inputs(texts, images), known.batch_inputs(texts, images)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    HFBackend(resolve_checkpoint(str(family_dirs["llava_next"])), device="cpu")
    assert capsys.readouterr().err == ""  # said once


def test_models_table_lists_every_family(capsys):
    from harness.cli import main
    from harness.models.families import FAMILIES

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in FAMILIES)
    assert set(ALL) <= set(FAMILIES)  # every family built here has an entry


@pytest.mark.parametrize("family", ALL)
def test_prefilled_continuation_equals_plain_greedy(family, family_backends):
    """The N-sample path (prompt prefilled once, then continued with a shared or copied cache,
    whichever the family allows) decodes greedily exactly what one plain `generate` does."""
    backend = family_backends[family]
    inputs = backend.batch_inputs(["Which angle?", "Answer: B because it is"], _images(2))
    gen = GenConfig(max_new_tokens=4)
    with torch.inference_mode():
        plain = backend.model.generate(**inputs, generation_config=backend.generation_config(gen, 1))
    expanded = backend.generate_expanded(inputs, gen, n=2)
    width = inputs["input_ids"].shape[1]
    assert torch.equal(expanded[:, width:], plain[:, width:].repeat_interleave(2, dim=0)), family


def test_sft_on_qwen3_vl_then_the_adapter_evaluates(family_dirs, tmp_path, capsys):
    from harness.cli import main
    from trainers.sft import SFTConfig, run

    out = tmp_path / "sft-qwen3"
    manifest = run(SFTConfig(max_steps=2, batch_size=2, limit=4, logging_steps=1), str(family_dirs["qwen3_vl"]),
                   "geoqa", out, progress=False)
    assert manifest["metrics"]["steps"] == 2 and (out / "adapter_config.json").is_file()
    code = main(["eval", "--ckpt", str(out), "--tasks", "geoqa", "--limit", "2", "--max-new-tokens", "3",
                 "--output-dir", str(tmp_path / "runs")])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "runs" / out.name / "geoqa" / "summary.json").read_text())["n"] == 2


def test_mpo_on_internvl(family_dirs, tmp_path, monkeypatch):
    import trainers.mpo as mpo
    import trainers.sampling as sampling

    # A random model is never right, so its samples are scripted: half correct, half wrong.
    def scripted(backend, examples, n, gen, batch_size, advance=lambda k=1: None):
        wrong = lambda e: "ABCD"[("ABCD".index(e.item.target) + 1) % 4]  # noqa: E731
        return [[e.target, f"Answer: {wrong(e)}"][:n] for e in examples]

    monkeypatch.setattr(sampling, "sample_answers", scripted)
    out = tmp_path / "mpo-internvl"
    manifest = mpo.run(mpo.MPOConfig(max_steps=2, batch_size=2, limit=4, logging_steps=1, samples_per_question=2,
                                     dropout_ntp=True), str(family_dirs["internvl"]), "geoqa", out, progress=False)
    assert manifest["data"]["pairs"] >= 4 and manifest["data"]["dropout_ntp_pairs"] >= 0
    assert {"loss/dpo", "loss/bco", "loss/sft"} <= manifest["metrics"]["last_logged"].keys()


def test_pixtral_stand_in_lays_out_image_rows(family_backends):
    """Mistral 3 without torchvision: each image is rows of [IMG] (one per merged patch column), every
    row but the last closed by [IMG_BREAK], the last by [IMG_END], as the image processor sized it."""
    backend = family_backends["mistral3"]
    proc = backend.processor
    step = proc.patch_size * proc.spatial_merge_size
    batch = backend.batch_inputs(["a", "b"], _images(2))
    sizes = proc.image_processor(images=[im for [im] in _images(2)], patch_size=step, return_tensors="pt")["image_sizes"]
    ids = {name: backend.tokenizer.convert_tokens_to_ids(tok) for name, tok in
           (("img", "[IMG]"), ("brk", "[IMG_BREAK]"), ("end", "[IMG_END]"))}
    for row, (h, w) in enumerate(sizes.tolist()):
        seq = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        start = seq.index(ids["img"])
        rows, cols = h // step, w // step
        expected = ([ids["img"]] * cols + [ids["brk"]]) * rows
        expected[-1] = ids["end"]
        assert seq[start:start + len(expected)] == expected and rows * cols > 0


@pytest.mark.parametrize("family", ALL)
def test_multi_turn_conversation_labels_every_reply(family, family_backends):
    """A two-turn conversation (a data file's row) through the family's processor: the labels are
    exactly the two replies' tokens, with the image expanded however the family expands it."""
    from trainers.data import encode_conversation

    backend = family_backends[family]
    messages = [{"role": "user", "content": "<image>\nWhat colour is it?"}, {"role": "assistant", "content": "red"},
                {"role": "user", "content": "And the shape?"}, {"role": "assistant", "content": "a circle"}]
    pieces = encode_conversation(backend, messages)
    batch = backend.conversation_inputs([pieces, pieces[:2]], [_images(1)[0], _images(1)[0]])
    for row, parts in enumerate((pieces, pieces[:2])):
        want = [t for text, learn in parts if learn for t in backend.tokenizer(text, add_special_tokens=False)["input_ids"]]
        assert batch["labels"][row][batch["labels"][row] != -100].tolist() == want
    with torch.inference_mode():
        assert torch.isfinite(backend.model(**batch).loss)


@pytest.mark.parametrize("family", ["qwen3_vl", "internvl"])
def test_remgcl_reads_each_familys_visual_tokens(family, family_dirs, tmp_path):
    """Qwen3-VL: text regions mapped through its merged-patch grid (both terms); InternVL (tiles, no
    grid entry): regions need local_weight=0, the global term still reads its image tokens."""
    import math

    from trainers.remgcl import REMGCLConfig, run

    local = 0.01 if family == "qwen3_vl" else 0.0
    manifest = run(REMGCLConfig(max_steps=1, batch_size=4, limit=4, local_weight=local), str(family_dirs[family]),
                   "ocrbench", tmp_path / "out", progress=False)
    align = manifest["metrics"]["alignment"]
    assert align["global"]["pairs"] == 4 and math.isfinite(align["global"]["last"])
    assert (align["local"]["pairs"] > 0) == (family == "qwen3_vl")
    if family == "internvl":
        with pytest.raises(HarnessError, match="local_weight=0"):
            run(REMGCLConfig(max_steps=1, batch_size=4, limit=4), str(family_dirs[family]), "ocrbench",
                tmp_path / "out2", progress=False)
