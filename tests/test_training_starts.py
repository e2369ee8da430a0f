"""What a treatment trains from and writes: full_finetune=true (sft, remgcl) trains every weight and
writes a full checkpoint that loads like the base, a warm-up adapter merged in first, REMGCL's
alignment moving the image side only; mpo from a warm-up adapter (MPO after SFT) trains a copy of it
against a frozen copy as the reference."""
from __future__ import annotations

import json

import pytest

from conftest import checkpoint_weights as _state, run_cli
from harness.errors import HarnessError

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

FEW = dict(max_steps=2, batch_size=4, limit=8, logging_steps=1)


def test_sft_full_finetune_writes_a_full_checkpoint_that_eval_loads(random_tiny, tmp_path):
    from trainers.sft import SFTConfig, run

    out = tmp_path / "full"
    manifest = run(SFTConfig(**FEW, full_finetune=True, learning_rate=1e-2), str(random_tiny), "ocrbench", out,
                   progress=False)
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    assert manifest["config"]["full_finetune"] is True and manifest["metrics"]["steps"] == 2
    # The base's tokenizer, processor and template files travel unchanged; the KV cache is on again.
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "chat_template.jinja"):
        if (random_tiny / name).is_file():
            assert (out / name).read_bytes() == (random_tiny / name).read_bytes(), name
    assert json.loads((out / "config.json").read_text()).get("use_cache", True) is True
    base, trained = _state(random_tiny), _state(out)
    assert base.keys() == trained.keys()
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    # What LoRA never reaches trains here: the token embeddings, the patch convolution, the norms.
    assert any("embed_tokens" in k for k in changed) and any("patch_embedding" in k for k in changed)
    assert any("layernorm" in k or "norm.weight" in k for k in changed)
    res = run_cli("eval", "--ckpt", str(out), "--tasks", "ocrbench", "--limit", "2", "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "runs" / "full" / "ocrbench" / "summary.json").read_text())["n"] == 2


def test_full_finetune_from_a_warm_up_adapter_merges_it_first(random_tiny, tmp_path):
    """With a learning rate too small to move a weight, the result is the warm-up merged into its base."""
    from trainers.sft import SFTConfig, run

    warm = tmp_path / "warm"
    run(SFTConfig(**FEW, lora_r=4, learning_rate=5e-2), str(random_tiny), "geoqa", warm, progress=False)
    out = tmp_path / "merged"
    manifest = run(SFTConfig(**{**FEW, "max_steps": 1}, full_finetune=True, learning_rate=1e-12), str(warm), "geoqa",
                   out, progress=False)
    assert manifest["start_adapter"] == str(warm.resolve()) and (out / "config.json").is_file()
    merged, result, base = _state(warm), _state(out), _state(random_tiny)
    assert merged.keys() == result.keys()
    assert any(not torch.allclose(merged[k], base[k]) for k in base)  # the warm-up moved something
    for k in merged:
        assert torch.allclose(merged[k], result[k], atol=1e-6), k


def test_remgcl_full_finetune_trains_and_keeps_the_text_side_fixed(random_tiny, tmp_path):
    from trainers.remgcl import REMGCLConfig, alignment_pairs, run

    table = torch.nn.Embedding(10, 2)  # trainable, as in a full fine-tune
    input_ids = torch.tensor([[5, 3, 3, 7]])
    embeds = torch.randn(1, 4, 2, requires_grad=True)
    (gv, gt, _), local = alignment_pairs(embeds, input_ids, 3, [{"answer_ids": [7], "offset": 0, "regions": []}], table)
    assert gv.requires_grad and not gt.requires_grad and local is None

    out = tmp_path / "remgcl"
    manifest = run(REMGCLConfig(**FEW, full_finetune=True), str(random_tiny), "ocrbench", out, progress=False)
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert manifest["metrics"]["alignment"]["local"]["pairs"] > 0


def test_full_finetune_refuses_qlora_and_is_not_offered_where_it_does_not_apply():
    from trainers.common import load_config
    from trainers.self_train import SelfTrainConfig
    from trainers.sft import SFTConfig

    with pytest.raises(HarnessError, match="full_finetune=true .* set qlora=false"):
        SFTConfig(full_finetune=True, qlora=True)
    with pytest.raises(HarnessError, match="unknown key.*full_finetune"):
        load_config(SelfTrainConfig, overrides=["full_finetune=true"])


def test_mpo_from_a_warm_up_trains_a_copy_against_the_warm_up_as_reference(random_tiny, tmp_path):
    """MPO's order (the preference stage after SFT): at the first step the policy is the warm-up and so
    is the reference, so both rewards are 0; a reference of the bare base would give the warm-up's
    log-ratio to it instead."""
    from trainers.mpo import MPOConfig
    from trainers.mpo import run as mpo
    from trainers.sft import SFTConfig
    from trainers.sft import run as sft

    warm = tmp_path / "warm"
    sft(SFTConfig(**FEW, lora_r=2, learning_rate=5e-2), str(random_tiny), "geoqa", warm, progress=False)
    cfg = MPOConfig(**{**FEW, "max_steps": 1, "limit": 12}, gold_chosen=True, warmup_ratio=0.0)  # lr > 0 at step 1
    manifest = mpo(cfg, str(warm), "geoqa", tmp_path / "mpo", progress=False)
    assert manifest["start_adapter"] == str(warm.resolve()) and manifest["data"]["pairs"] > 0
    first = manifest["metrics"]["last_logged"]  # one step: its log is the forward before any update
    assert first["rewards/chosen"] == pytest.approx(0, abs=1e-4)
    assert first["rewards/rejected"] == pytest.approx(0, abs=1e-4)
    assert json.loads((tmp_path / "mpo" / "adapter_config.json").read_text())["r"] == 2  # the warm-up's shape
    assert not (tmp_path / "mpo" / "ref").exists()
    warm_w, trained = _state(warm), _state(tmp_path / "mpo")
    assert any(not torch.equal(warm_w[k], trained[k]) for k in warm_w)
