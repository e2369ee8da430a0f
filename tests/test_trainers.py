"""Treatments (issue 7): each trains a few steps on a small random LLaVA and writes a checkpoint that
loads like any other; averaging is exact; MPO's loss terms match a hand computation; the
self-critique filter and `harness train`'s bad inputs behave as documented."""
from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest

from conftest import BUNDLED, checkpoint_weights as _weights, run_cli
from harness.errors import HarnessError

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

FEW = dict(max_steps=3, batch_size=4, limit=8, logging_steps=1)


# --- helpers ---------------------------------------------------------------------------------------
def _changed(base: dict, trained: dict) -> list[str]:
    assert base.keys() == trained.keys()
    return [k for k in base if not torch.equal(base[k], trained[k])]


def _loads_and_generates(path: Path) -> list[list[str]]:
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.core.task import get_task
    from harness.core.types import GenConfig, Prompt

    task = get_task("geoqa")
    item = task.load(BUNDLED, "test")[0]
    backend = HFBackend(resolve_checkpoint(str(path)), device="cpu")
    return backend.generate([Prompt(task.prompt(item), item.images)], GenConfig(max_new_tokens=4))


@pytest.fixture(scope="module")
def base_weights(random_tiny):
    return _weights(random_tiny)


# --- config loading --------------------------------------------------------------------------------
def test_config_file_then_key_values_with_types(tmp_path):
    from trainers.common import load_config
    from trainers.sft import SFTConfig

    cfg_file = tmp_path / "sft.yaml"
    cfg_file.write_text("lora_r: 4\nepochs: 2\ntarget_modules: q_proj,v_proj\n")
    cfg = load_config(SFTConfig, cfg_file, ["epochs=3", "limit=null", "learning_rate=1e-4", "qlora=false"])
    assert (cfg.lora_r, cfg.epochs, cfg.limit, cfg.learning_rate, cfg.qlora) == (4, 3.0, None, 1e-4, False)
    assert cfg.target_modules == "q_proj,v_proj"
    with pytest.raises(HarnessError, match="unknown key.*lora_rank.*valid keys: lora_r"):
        load_config(SFTConfig, None, ["lora_rank=4"])
    with pytest.raises(HarnessError, match="lora_r='four' is not a valid int"):
        load_config(SFTConfig, None, ["lora_r=four"])
    with pytest.raises(HarnessError, match="lora_dropout must be in"):
        load_config(SFTConfig, None, ["lora_dropout=1.5"])
    with pytest.raises(HarnessError, match="expected key=value"):
        load_config(SFTConfig, None, ["lora_r"])
    from trainers.mpo import MPOConfig
    with pytest.raises(HarnessError, match="chosen_from must be samples or gold"):
        load_config(MPOConfig, None, ["chosen_from=best"])


def test_staged_output_leaves_nothing_on_failure(tmp_path):
    from trainers.common import staged_output

    out = tmp_path / "ckpt"
    with pytest.raises(RuntimeError):
        with staged_output(out) as stage:
            (stage / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed mid-way")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    (tmp_path / ".ckpt.staging-999999999").mkdir()  # left by a run killed with SIGKILL
    with staged_output(out) as stage:
        (stage / "done.txt").write_text("ok")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert (out / "done.txt").read_text() == "ok"
    with pytest.raises(HarnessError, match="already exists"):
        with staged_output(out):
            pass


def _checkpoint(folder, lr):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"treatment": "sft", "config": {"learning_rate": lr}}))


def test_overwrite_replaces_only_a_checkpoint_the_project_wrote(tmp_path, monkeypatch):
    from trainers.common import staged_output

    monkeypatch.chdir(tmp_path)
    _checkpoint(tmp_path / "ckpt", 1e-3)
    with staged_output(tmp_path / "ckpt", overwrite=True) as stage:
        _checkpoint(stage, 5e-4)
    assert json.loads((tmp_path / "ckpt" / "manifest.json").read_text())["config"]["learning_rate"] == 5e-4
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # nothing left aside, no lock file
    (tmp_path / "empty").mkdir()
    with staged_output(tmp_path / "empty", overwrite=True) as stage:
        _checkpoint(stage, 1e-3)
    assert (tmp_path / "empty" / "manifest.json").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "manifest.json").write_text('{"my": "own manifest"}')
    with pytest.raises(HarnessError, match="mine holds manifest.json and is not a checkpoint harness train wrote"):
        with staged_output(tmp_path / "mine", overwrite=True):
            raise AssertionError("never reached: refused before any training")
    assert (tmp_path / "mine" / "manifest.json").read_text() == '{"my": "own manifest"}'


def test_publish_never_replaces_a_folder_that_appeared_meanwhile(tmp_path):
    from trainers.common import staged_output

    out = tmp_path / "x"
    with pytest.raises(HarnessError, match="x appeared while training; the result is not published"):
        with staged_output(out) as stage:
            _checkpoint(stage, 1e-3)
            out.mkdir()
            (out / "notes.txt").write_text("someone else's")
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and [p.name for p in tmp_path.iterdir()] == ["x"]


def test_output_lock_is_reentrant_and_leaves_nothing(tmp_path):
    from trainers.output import output_lock

    out = tmp_path / "new" / "deeper" / "ckpt"
    with output_lock(out):
        assert (out.parent / ".ckpt.harness-lock").read_text() == str(os.getpid())
        with output_lock(out):  # the CLI holds it, the treatment's staged_output takes it again
            pass
        assert (out.parent / ".ckpt.harness-lock").exists()
    assert list(tmp_path.iterdir()) == []  # the lock and the folders made for it are gone (nothing published)


def test_a_recipe_build_waits_for_another_process_building_the_same_row(tmp_path, capsys):
    """Two leaderboards on one spec: the second waits on the row's lock, then uses that build."""
    import subprocess
    import sys

    from trainers.recipes import _build_once

    row = tmp_path / "built" / "sft"
    child = ("import fcntl, json, os, sys, time; from pathlib import Path\n"
             "row = Path(sys.argv[1]); row.parent.mkdir(parents=True, exist_ok=True)\n"
             "fd = os.open(row.parent / '.sft.harness-lock', os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX)\n"
             "os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); time.sleep(2)\n"
             "row.mkdir(); (row / 'manifest.json').write_text(json.dumps({'treatment': 'sft', 'config': {}}))\n"
             "os.unlink(row.parent / '.sft.harness-lock')\n")
    proc = subprocess.Popen([sys.executable, "-c", child, str(row)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"

    def build():
        raise AssertionError("trained twice")

    assert _build_once(row, build) == {"treatment": "sft", "config": {}}
    assert proc.wait(timeout=60) == 0
    assert f"waiting for another harness process (pid {proc.pid}) building {row}" in capsys.readouterr().err
    assert sorted(p.name for p in row.parent.iterdir()) == ["sft"]


# --- sft -------------------------------------------------------------------------------------------
def test_sft_labels_cover_the_reply_only(random_tiny):
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.core.task import get_task
    from trainers.data import SFTCollator, load_examples

    backend = HFBackend(resolve_checkpoint(str(random_tiny)), device="cpu")
    examples = load_examples(get_task("geoqa"), BUNDLED, limit=3)
    batch = SFTCollator(backend, examples)([{"idx": 0}, {"idx": 2}])
    for row, ex in zip(batch["labels"], (examples[0], examples[2])):
        reply = backend.tokenizer.decode(row[row != -100])
        assert reply.strip() == ex.target + backend.tokenizer.eos_token
        assert "Answer:" in ex.target and ex.text not in reply
    answer_only = load_examples(get_task("geoqa"), BUNDLED, limit=3, target="answer")
    item = answer_only[0].item
    # The final answer only: the gold choice as the worked target names it ("Answer: 130°").
    assert answer_only[0].target == "Answer: " + item.choices["ABCD".index(item.target)]


def test_sft_trains_a_lora_that_harness_eval_loads(random_tiny, base_weights, tmp_path):
    from trainers.sft import SFTConfig, run

    out = tmp_path / "sft"
    manifest = run(SFTConfig(**FEW), str(random_tiny), "geoqa", out, progress=False)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(random_tiny.resolve()) and cfg["r"] == 16
    saved = json.loads((out / "manifest.json").read_text())
    assert saved == manifest
    assert saved["treatment"] == "sft" and saved["config"]["lora_r"] == 16 and saved["seed"] == 0
    assert saved["data"]["n"] == 8 and saved["data"]["task"] == "geoqa" and len(saved["data"]["hash"]) == 16
    assert saved["metrics"]["steps"] == 3 and saved["versions"]["trl"] and saved["base_hash"]
    assert saved["threads"] == torch.get_num_threads()  # what a full-weight build needs to re-make its weights
    assert math.isfinite(saved["metrics"]["last_loss"])
    changed = _changed(base_weights, _weights(out))
    # all-linear LoRA reaches the language model, the vision tower and the projector.
    assert any("language_model" in k for k in changed) and any("vision_tower" in k for k in changed)
    assert any("multi_modal_projector" in k for k in changed)
    assert not any("lm_head" in k or "embed_tokens" in k for k in changed)

    res = run_cli("eval", "--ckpt", str(out), "--tasks", "geoqa", "--limit", "2", "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "runs" / "sft" / "geoqa" / "summary.json").read_text())
    assert summary["n"] == 2


def test_sft_target_modules_and_qlora_error(random_tiny, tmp_path):
    from trainers.sft import SFTConfig, run

    out = tmp_path / "sft-qv"
    run(SFTConfig(**{**FEW, "max_steps": 1}, lora_r=2, target_modules="q_proj,v_proj"), str(random_tiny), "geoqa",
        out, progress=False)
    modules = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert sorted(modules) == ["q_proj", "v_proj"]
    if not torch.cuda.is_available():
        with pytest.raises(HarnessError, match="qlora=true needs a CUDA GPU"):
            run(SFTConfig(**FEW, qlora=True), str(random_tiny), "geoqa", tmp_path / "q", progress=False)
        assert not (tmp_path / "q").exists()


def test_training_continues_from_an_adapter_base(random_tiny, tmp_path):
    """--base ADAPTER (a warm-up): the result is that adapter trained further, on the same base model,
    with the warm-up's LoRA shape; treatments that cannot continue one refuse it in one line."""
    from safetensors.torch import load_file

    from trainers.critic import CriticConfig
    from trainers.critic import run as critic_run
    from trainers.sft import SFTConfig, run

    warm = tmp_path / "warm"
    run(SFTConfig(**FEW, lora_r=4), str(random_tiny), "geoqa", warm, progress=False)
    more = tmp_path / "more"
    manifest = run(SFTConfig(**{**FEW, "max_steps": 2}, lora_r=16, learning_rate=1e-2), str(warm), "geoqa", more,
                   progress=False)
    cfg = json.loads((more / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["base_model_name_or_path"] == str(random_tiny.resolve())  # the warm-up's shape, its base
    assert manifest["start_adapter"] == str(warm.resolve()) and manifest["base"] == str(random_tiny.resolve())
    a, b = load_file(str(warm / "adapter_model.safetensors")), load_file(str(more / "adapter_model.safetensors"))
    assert set(a) == set(b) and any(not torch.equal(a[k], b[k]) for k in a)  # trained further, not replaced
    assert not any(torch.count_nonzero(b[k]) == 0 for k in b if "lora_B" in k)  # B kept the warm-up's (non-zero) values
    res = run_cli("eval", "--ckpt", str(more), "--tasks", "geoqa", "--limit", "2", "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr
    with pytest.raises(HarnessError, match="is an adapter; this treatment trains on a full model"):
        critic_run(CriticConfig(**FEW), str(warm), "critic", tmp_path / "critic", progress=False)
    assert not (tmp_path / "critic").exists()


# --- average (SFTe) --------------------------------------------------------------------------------
def _random_adapter(base: Path, out: Path, seed: int, r: int = 4, targets=("q_proj", "v_proj"), alpha: int = 8) -> Path:
    """A LoRA adapter with random (non-zero) A and B, saved as PEFT saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from trainers.common import set_adapter_base

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
                                                  init_lora_weights=False))
    peft_model.save_pretrained(str(out))
    set_adapter_base(out, str(base))
    return out


@pytest.fixture(scope="module")
def two_adapters(random_tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return [_random_adapter(random_tiny, root / f"a{s}", seed=s) for s in (1, 2)]


def test_average_is_the_exact_mean_of_the_tensors(two_adapters, tmp_path):
    from safetensors.torch import load_file

    from trainers.average import AverageConfig, run

    out = tmp_path / "sfte"
    manifest = run(AverageConfig(adapters=[str(p) for p in two_adapters]), out, progress=False)
    a, b = (load_file(str(p / "adapter_model.safetensors")) for p in two_adapters)
    avg = load_file(str(out / "adapter_model.safetensors"))
    assert avg.keys() == a.keys() and len(avg) > 0
    for name in avg:
        assert not torch.equal(a[name], b[name])
        torch.testing.assert_close(avg[name], (a[name] + b[name]) / 2, rtol=0, atol=1e-7)
    assert manifest["treatment"] == "average" and manifest["metrics"]["members"] == 2
    _loads_and_generates(out)


def test_average_of_merged_deltas_is_exact(random_tiny, base_weights, two_adapters, tmp_path):
    from trainers.average import AverageConfig, run

    out = tmp_path / "sfte-deltas"
    run(AverageConfig(adapters=[str(p) for p in two_adapters], mode="deltas"), out, progress=False)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"]) == (8, 16)  # rank 2r, alpha 2*alpha: same scale alpha / r
    merged = _weights(out)
    w1, w2 = (_weights(p) for p in two_adapters)
    changed = _changed(base_weights, merged)
    assert changed and all(("q_proj" in k or "v_proj" in k) for k in changed)
    for k in base_weights:
        torch.testing.assert_close(merged[k], (w1[k] + w2[k]) / 2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["deltas", "adapters"])
def test_members_with_other_alphas_keep_their_own_scale(random_tiny, base_weights, two_adapters, tmp_path, mode):
    """SFTe's members differ in alpha (16 or 8): each contributes s_i B_i A_i, not the first one's scale."""
    from trainers.average import AverageConfig, run

    wide = _random_adapter(random_tiny, tmp_path / "alpha16", seed=5, alpha=16)
    out = tmp_path / f"mixed-{mode}"
    run(AverageConfig(adapters=[str(two_adapters[0]), str(wide)], mode=mode), out, progress=False)
    merged, w1, w2 = _weights(out), _weights(two_adapters[0]), _weights(wide)
    if mode == "deltas":  # exact: the mean of the two merged models
        for k in base_weights:
            torch.testing.assert_close(merged[k], (w1[k] + w2[k]) / 2, rtol=0, atol=1e-6)
    else:  # the mean of the tensors, with the alpha-16 member's B doubled (its scale is twice the first's)
        from safetensors.torch import load_file

        a = load_file(str(two_adapters[0] / "adapter_model.safetensors"))
        b = load_file(str(wide / "adapter_model.safetensors"))
        avg = load_file(str(out / "adapter_model.safetensors"))
        for name in avg:
            want = (a[name] + (2 * b[name] if ".lora_B." in name else b[name])) / 2
            torch.testing.assert_close(avg[name], want, rtol=0, atol=1e-7)


def test_scaled_adapter_copy_is_the_same_update_made_longer(base_weights, two_adapters, tmp_path):
    """bench/adapter_agreement.py --scale (behind the README's sfte cause): the copy's merged model is
    base + s * (the adapter's update), in the same direction."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("agreement", Path(__file__).parent.parent / "bench" / "adapter_agreement.py")
    agreement = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agreement)
    agreement.write_scaled(two_adapters[0], 0.5, tmp_path / "half")
    half, full = _weights(tmp_path / "half"), _weights(two_adapters[0])
    assert _changed(base_weights, full)
    for k in base_weights:
        torch.testing.assert_close(half[k] - base_weights[k], (full[k] - base_weights[k]) / 2, rtol=0, atol=1e-6)
    with pytest.raises(SystemExit, match="exists"):
        agreement.write_scaled(two_adapters[0], 2.0, tmp_path / "half")


def test_average_rejects_mismatched_adapters(random_tiny, two_adapters, tmp_path):
    from trainers.average import AverageConfig, run

    rank8 = _random_adapter(random_tiny, tmp_path / "r8", seed=3, r=8)
    with pytest.raises(HarnessError, match="r=8 differs"):
        run(AverageConfig(adapters=[str(two_adapters[0]), str(rank8)]), tmp_path / "x", progress=False)
    other = _random_adapter(random_tiny, tmp_path / "qk", seed=4, targets=("q_proj", "k_proj"))
    with pytest.raises(HarnessError, match="target modules differ"):
        run(AverageConfig(adapters=[str(two_adapters[0]), str(other)]), tmp_path / "x", progress=False)
    with pytest.raises(HarnessError, match="2 or more"):
        AverageConfig(adapters=[str(two_adapters[0])])
    with pytest.raises(HarnessError, match="not a saved LoRA adapter"):
        run(AverageConfig(adapters=[str(two_adapters[0]), str(random_tiny)]), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


# --- mpo -------------------------------------------------------------------------------------------
def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_mpo_loss_terms_on_a_hand_computed_batch():
    from trainers.mpo import RunningMean, mpo_loss

    # Two pairs; sequence log-probs (sums over reply tokens) of policy and reference.
    pc, pr, rc, rr = [-4.0, -6.0], [-5.0, -3.0], [-4.5, -5.0], [-4.0, -4.0]
    beta, delta, nll = 0.1, 0.05, 1.7
    t = torch.tensor
    terms = mpo_loss(t(pc), t(pr), t(rc), t(rr), t(nll), beta, delta, (0.8, 0.2, 1.0))
    # pair 1: chosen reward 0.1*(-4+4.5)=0.05, rejected 0.1*(-5+4)=-0.1
    # pair 2: chosen reward 0.1*(-6+5)=-0.1, rejected 0.1*(-3+4)=0.1
    dpo = -(_logsig(0.05 + 0.1) + _logsig(-0.1 - 0.1)) / 2
    bco = -(_logsig(0.05 - 0.05) + _logsig(-(-0.1 - 0.05)) + _logsig(-0.1 - 0.05) + _logsig(-(0.1 - 0.05))) / 2
    assert float(terms["dpo"]) == pytest.approx(dpo, abs=1e-6)
    assert float(terms["bco"]) == pytest.approx(bco, abs=1e-6)
    assert float(terms["sft"]) == pytest.approx(1.7)
    assert float(terms["loss"]) == pytest.approx(0.8 * dpo + 0.2 * bco + 1.0 * 1.7, abs=1e-6)
    # The shift matters: TRL's bco_pair (no delta) gives a different value on this batch.
    no_shift = mpo_loss(t(pc), t(pr), t(rc), t(rr), t(nll), beta, 0.0)
    assert float(no_shift["bco"]) != pytest.approx(bco, abs=1e-4)

    running = RunningMean()
    assert [running.update(v) for v in (1.0, 3.0, -1.0)] == [1.0, 2.0, 1.0]


def test_mpo_trainer_uses_model_logprobs_and_the_running_shift(random_tiny, tmp_path):
    """The trainer's loss on a real batch = mpo_loss of log-probs computed here from plain logits."""
    from trl import DPOConfig

    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.core.task import get_task
    from trainers.common import TrainConfig, lora_config, trl_args
    from trainers.data import Pair, PairCollator, index_dataset, load_examples
    from trainers.mpo import MPOTrainer, mpo_loss

    backend = HFBackend(resolve_checkpoint(str(random_tiny)), device="cpu")
    examples = load_examples(get_task("geoqa"), BUNDLED, limit=2)
    pairs = [Pair(0, examples[0].target, "Answer: Z"), Pair(1, examples[1].target, "no idea at all")]
    cfg = TrainConfig(lora_r=4)
    trainer = MPOTrainer(model=backend.model, args=trl_args(DPOConfig, cfg, tmp_path, beta=0.1, max_length=None),
                         train_dataset=index_dataset(2), data_collator=PairCollator(backend, examples, pairs),
                         processing_class=backend.tokenizer, peft_config=lora_config(cfg))
    batch = trainer.data_collator([{"idx": 0}, {"idx": 1}])
    model = trainer.model
    with torch.no_grad():  # make the adapter non-zero, so policy != reference
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.train()
    trainer.reward_shift.update(0.3)  # as if one earlier batch had mean reward 0.3

    def seq_logps(adapter_on: bool) -> "torch.Tensor":
        kwargs = {k: v for k, v in batch.items() if k != "completion_mask"}
        with torch.no_grad():
            if adapter_on:
                logits = model(**kwargs).logits
            else:
                with model.disable_adapter():
                    logits = model(**kwargs).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        mask = batch["completion_mask"][:, 1:].float()
        return (logp * mask).sum(1), logp, mask

    pol, tok_logp, mask = seq_logps(True)
    ref, _, _ = seq_logps(False)
    nll = -(tok_logp * mask)[:2].sum() / mask[:2].sum()
    batch_reward = float(torch.cat([0.1 * (pol[:2] - ref[:2]), 0.1 * (pol[2:] - ref[2:])]).mean())
    delta = (0.3 + batch_reward) / 2
    expected = mpo_loss(pol[:2], pol[2:], ref[:2], ref[2:], nll, 0.1, delta)["loss"]
    loss = trainer.compute_loss(model, batch)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-4)
    # rel 1e-5: two float32 forward passes of the same batch may differ in the 7th digit (thread-dependent
    # reduction order on a busy CPU); a wrong shift (no running mean, the wrong batch reward) is off by far more.
    assert trainer.reward_shift.mean == pytest.approx(delta, rel=1e-5) and trainer.reward_shift.count == 2
    assert trainer._metrics["train"]["bco_delta"] == [pytest.approx(delta, rel=1e-5)]


def test_mpo_correctness_pairs():
    from harness.core.task import get_task
    from trainers.data import load_examples
    from trainers.mpo import correctness_pairs

    task = get_task("geoqa")
    ex = load_examples(task, BUNDLED, limit=3)
    gold = [e.item.target for e in ex]
    wrong = ["ABCD"[("ABCD".index(g) + 1) % 4] for g in gold]
    samples = [
        [f"Answer: {gold[0]}", f"Answer: {wrong[0]}", "I do not know", f"So. Answer: {gold[0]}"],
        [f"Answer: {gold[1]}"] * 4,  # all correct: no pair
        [f"Answer: {gold[2]}", f"Answer: {gold[2]} or maybe Answer: {wrong[2]}"],  # chosen inside rejected
    ]
    pairs, stats = correctness_pairs(ex, samples, max_pairs=3, rng=random.Random(0))
    assert stats["all_correct"] == 1 and stats["skipped_substring"] == 1 and stats["questions_with_pairs"] == 1
    assert len(pairs) == 3 and {p.index for p in pairs} == {0}  # 2 correct x 2 wrong, capped at 3
    for p in pairs:
        assert task.score(task.extract(p.chosen, ex[0].item), ex[0].item) == 1.0
        assert task.score(task.extract(p.rejected, ex[0].item), ex[0].item) == 0.0
    capped, _ = correctness_pairs(ex, samples, max_pairs=1, rng=random.Random(0))
    assert len(capped) == 1


def test_mpo_gold_chosen_pairs_reference_with_wrong_samples():
    from harness.core.task import get_task
    from trainers.data import load_examples
    from trainers.mpo import correctness_pairs

    task = get_task("geoqa")
    ex = load_examples(task, BUNDLED, limit=3)
    wrong = ["ABCD"[("ABCD".index(e.item.target) + 1) % 4] for e in ex]
    samples = [[f"Answer: {wrong[0]}", "no idea"],                 # unsolved: the reference is chosen
               [f"Answer: {ex[1].item.target}", f"Answer: {wrong[1]}"],  # solved: its own sample stays chosen
               []]                                                   # nothing sampled: no pair
    off, stats_off = correctness_pairs(ex, samples, max_pairs=2, rng=random.Random(0))
    assert {p.index for p in off} == {1} and stats_off["gold_chosen"] == 0
    on, stats = correctness_pairs(ex, samples, max_pairs=2, rng=random.Random(0), gold_chosen=True)
    assert stats["gold_chosen"] == 1 and {p.index for p in on} == {0, 1}
    gold_pairs = [p for p in on if p.index == 0]
    assert len(gold_pairs) == 2 and all(p.chosen == ex[0].target.strip() for p in gold_pairs)
    assert task.score(task.extract(gold_pairs[0].chosen, ex[0].item), ex[0].item) == 1.0  # the reference is right
    assert [p.chosen for p in on if p.index == 1] == [f"Answer: {ex[1].item.target}"]
    # chosen_from="gold": the reference is the chosen wherever a sample is wrong, a right sample never is
    gold, stats_gold = correctness_pairs(ex, samples, max_pairs=2, rng=random.Random(0), chosen_from="gold")
    assert {p.index for p in gold} == {0, 1} and stats_gold["gold_chosen"] == 2
    assert all(p.chosen == ex[p.index].target.strip() for p in gold)
    assert [p.rejected for p in gold if p.index == 1] == [f"Answer: {wrong[1]}"]
    all_right = [[f"Answer: {ex[0].item.target}"], [], []]
    assert correctness_pairs(ex, all_right, max_pairs=2, rng=random.Random(0), chosen_from="gold")[0] == []


def test_mpo_trains_with_dropout_ntp(random_tiny, base_weights, tmp_path, monkeypatch):
    import trainers.mpo as mpo
    import trainers.sampling as sampling

    # A random model is never right, so its samples are scripted: half correct, half wrong.
    def scripted(backend, examples, n, gen, batch_size, advance=lambda k=1: None):
        wrong = lambda e: "ABCD"[("ABCD".index(e.item.target) + 1) % 4]  # noqa: E731
        return [[e.target, f"Angles: 10°. Answer: {wrong(e)}", "no idea", e.target][:n] for e in examples]

    monkeypatch.setattr(sampling, "sample_answers", scripted)
    out = tmp_path / "mpo"
    manifest = mpo.run(mpo.MPOConfig(**FEW, dropout_ntp=True), str(random_tiny), "geoqa", out, progress=False)
    data = manifest["data"]
    assert data["pairs"] == 2 * 8 + data["dropout_ntp_pairs"] and data["dropout_ntp_pairs"] > 0
    assert data["sample_accuracy"] == 0.5
    logged = manifest["metrics"]["last_logged"]
    assert {"loss/dpo", "loss/bco", "loss/sft", "bco_delta"} <= logged.keys()
    assert manifest["metrics"]["final_bco_delta"] != 0.0
    assert _changed(base_weights, _weights(out))


def test_dropout_ntp_continues_without_the_image(random_tiny):
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.core.task import get_task
    from harness.core.types import GenConfig
    from trainers.data import Pair, load_examples
    from trainers.mpo import dropout_ntp_pairs

    backend = HFBackend(resolve_checkpoint(str(random_tiny)), device="cpu")
    ex = load_examples(get_task("geoqa"), BUNDLED, limit=2)
    chosen = "one two three four five six"
    pairs = dropout_ntp_pairs(backend, ex, [Pair(0, chosen, "x"), Pair(1, "single", "y")],
                              GenConfig(max_new_tokens=6, temperature=1.0, seed=0), batch_size=4)
    assert len(pairs) <= 1  # a one-word answer has no half to keep
    for p in pairs:
        assert p.kind == "dropout_ntp" and p.chosen == chosen
        assert p.rejected.startswith("one two three") and p.rejected != chosen


# --- self-critique ---------------------------------------------------------------------------------
def test_self_critique_keeps_only_order_consistent_verdicts():
    from trainers.self_critique import agreed_pairs, parse_verdict

    cands = [(0, "a0", "b0"), (1, "a1", "b1"), (2, "a2", "b2"), (3, "a3", "b3"), (4, "a4", "b4")]
    forward = [1, 2, 1, 2, None]  # verdict with a shown first
    swapped = [2, 1, 1, 2, 2]  # verdict with b shown first: 2 means a
    pairs = agreed_pairs(cands, forward, swapped)
    assert [(p.index, p.chosen, p.rejected) for p in pairs] == [(0, "a0", "b0"), (1, "b1", "a1")]
    assert all(p.kind == "critique" for p in pairs)
    assert parse_verdict("Reply 2 is right", "x", "y") == 2
    assert parse_verdict("Answer: B", "Answer: A", "Answer: B") == 2
    assert parse_verdict("12 apples", "x", "y") is None and parse_verdict("", "x", "y") is None


def test_self_critique_trains_on_self_judged_pairs(random_tiny, base_weights, tmp_path):
    from trainers.self_critique import SelfCritiqueConfig, run

    out = tmp_path / "sc"
    manifest = run(SelfCritiqueConfig(**{**FEW, "limit": 12}), str(random_tiny), "geoqa", out, progress=False)
    data = manifest["data"]
    assert 0 < data["pairs"] == data["agreed"] <= data["candidates"] <= 12
    assert manifest["metrics"]["steps"] == 3 and manifest["config"]["verdict"] == "likelihood"
    assert _changed(base_weights, _weights(out))
    assert _loads_and_generates(out)


def test_self_critique_sft_weight_adds_the_chosen_replies_nll_to_dpo(random_tiny, tmp_path):
    """At the first step a fresh LoRA is its own reference, so plain DPO's loss is exactly log 2;
    sft_weight adds the chosen replies' NLL (a random model's: several nats per token) on top."""
    import math

    from trainers.self_critique import SelfCritiqueConfig, run

    first = {}
    for w in (0.0, 1.0):
        cfg = SelfCritiqueConfig(**{**FEW, "limit": 12, "max_steps": 1, "sft_weight": w})
        first[w] = run(cfg, str(random_tiny), "geoqa", tmp_path / f"sc{w}", progress=False)["metrics"]["first_loss"]
    assert first[0.0] == pytest.approx(math.log(2), abs=1e-3)
    assert first[1.0] > math.log(2) + 1.0


def test_self_critique_continues_an_adapter_against_a_frozen_copy(random_tiny, tmp_path):
    """The seed's order: self-critique DPO on SFTe. The adapter samples and judges, a copy of it trains
    (TRL's frozen "ref" copy is the reference) and only the trained copy is saved."""
    from trainers.self_critique import SelfCritiqueConfig
    from trainers.self_critique import run as critique
    from trainers.sft import SFTConfig
    from trainers.sft import run as sft

    sft(SFTConfig(**FEW, lora_r=2), str(random_tiny), "geoqa", tmp_path / "warm", progress=False)
    manifest = critique(SelfCritiqueConfig(**{**FEW, "limit": 12}), str(tmp_path / "warm"), "geoqa",
                        tmp_path / "sc", progress=False)
    assert manifest["start_adapter"] == str((tmp_path / "warm").resolve()) and manifest["data"]["pairs"] > 0
    assert not (tmp_path / "sc" / "ref").exists()
    warm, trained = _weights(tmp_path / "warm"), _weights(tmp_path / "sc")
    assert warm.keys() == trained.keys() and _changed(warm, trained)  # the warm-up's adapter shape, moved
    assert _loads_and_generates(tmp_path / "sc")


def test_self_critique_with_a_separate_judge_keeps_its_consistent_verdicts(random_tiny, tmp_path, monkeypatch):
    """judge=CHECKPOINT: the winners are the judge's (both orders, the harness judge's prompt), not the model's."""
    import re

    import trainers.self_critique as sc
    from harness.models.mock import MockBackend

    def longer_reply(req):  # a consistent judge: the longer answer wins in either order
        a, b = re.search(r"\nAnswer1: (.*)\nAnswer2: (.*)\nGive your verdict", req.text, re.S).groups()
        return "Answer1" if len(a) > len(b) else "Answer2" if len(b) > len(a) else "Tie"

    asked = []
    monkeypatch.setattr(sc, "load_judge", lambda path, device: asked.append(path) or MockBackend(longer_reply))
    manifest = sc.run(sc.SelfCritiqueConfig(**{**FEW, "limit": 12, "judge": "checkpoints/built/critic", "replay": 0.5}),
                      str(random_tiny), "geoqa", tmp_path / "sc", progress=False)
    assert asked == ["checkpoints/built/critic"] and manifest["config"]["judge"] == "checkpoints/built/critic"
    data = manifest["data"]
    assert 0 < data["agreed"] <= data["candidates"]
    # replay: 6 of the other tasks' train items join as gold pairs, never judged
    assert data["replay"]["n"] == 6 and data["pairs"] == data["agreed"] + 6
    assert data["no_verdict"] == 0 or data["agreed"] < data["candidates"]  # a tie is no verdict and no pair


# --- recipes and the command line ------------------------------------------------------------------
def test_recipe_builds_sfte_from_seeded_members(random_tiny, tmp_path):
    from harness.report.leaderboard import CheckpointSpec
    from trainers.recipes import build_recipe

    members = {"trainer": "sft", "config": {"max_steps": 1, "batch_size": 2, "limit": 4, "lora_r": 2}}
    spec = CheckpointSpec("sfte", str(tmp_path / "built" / "sfte"), {
        "trainer": "average", "base": str(random_tiny), "task": "geoqa", "seeds": [0, 1], "members": members})
    manifest = build_recipe(spec)
    assert [m["seed"] for m in manifest["members"]] == [0, 1]
    assert (tmp_path / "built" / "sfte-members" / "seed1" / "adapter_config.json").is_file()
    assert (tmp_path / "built" / "sfte" / "adapter_model.safetensors").is_file()
    with pytest.raises(HarnessError, match="unknown recipe key"):
        build_recipe(CheckpointSpec("x", str(tmp_path / "x"), {"trainer": "sft", "epoch": 1}))
    with pytest.raises(HarnessError, match="unknown treatment 'dpo'"):
        build_recipe(CheckpointSpec("x", str(tmp_path / "x"), {"trainer": "dpo"}))


def test_recipe_averages_member_rows_that_differ_in_alpha_and_dropout(random_tiny, tmp_path):
    """The seed's SFTe: members share r and differ in alpha and dropout, each built as its own row."""
    from harness.report.leaderboard import CheckpointSpec
    from trainers.recipes import build_recipe

    rows = []
    for k, (alpha, dropout) in enumerate([(16, 0.05), (8, 0.1)]):
        config = {"max_steps": 1, "batch_size": 2, "limit": 4, "lora_r": 2, "lora_alpha": alpha, "lora_dropout": dropout}
        rows.append(tmp_path / f"m{k}")
        build_recipe(CheckpointSpec(f"m{k}", str(rows[-1]), {"trainer": "sft", "base": str(random_tiny), "task": "geoqa",
                                                           "config": config}))
    manifest = build_recipe(CheckpointSpec("sfte", str(tmp_path / "sfte"), {
        "trainer": "average", "base": str(random_tiny), "include": [str(p) for p in rows]}))
    assert [m["path"] for m in manifest["members"]] == [str(p) for p in rows]
    assert json.loads((tmp_path / "sfte" / "adapter_config.json").read_text())["lora_alpha"] == 16
    with pytest.raises(HarnessError, match="needs members"):
        build_recipe(CheckpointSpec("x", str(tmp_path / "x"), {"trainer": "average", "base": str(random_tiny),
                                                               "include": [str(rows[0])]}))


def test_train_cli_bad_inputs(random_tiny, tmp_path, capsys):
    from harness.cli import main

    def err(*argv: str) -> str:
        assert main(list(argv)) == 2
        return capsys.readouterr().err

    out = str(tmp_path / "o")
    assert "unknown treatment 'dpo'; choose one of sft, average, mpo, self_critique" in err("train", "dpo", "--out", out)
    assert "unknown key(s) lora_rank" in err("train", "sft", "--base", "tiny", "--task", "geoqa", "--out", out, "lora_rank=4")
    assert "sft needs --base" in err("train", "sft", "--task", "geoqa", "--out", out)
    assert "checkpoint not found" in err("train", "mpo", "--base", str(tmp_path / "nope"), "--task", "geoqa", "--out", out)
    assert "unknown task 'nope'" in err("train", "sft", "--base", str(random_tiny), "--task", "nope", "--out", out)
    assert "--task does not apply to average" in err("train", "average", "--task", "geoqa", "--out", out, "adapters=a,b")
    (tmp_path / "o").mkdir()
    assert "already exists" in err("train", "sft", "--base", str(random_tiny), "--task", "geoqa", "--out", out)
    assert "temperature must be in [0.7, 1.0]" in err("train", "mpo", "--out", out, "temperature=0.2")


def test_train_cli_end_to_end_on_two_tasks(random_tiny, tmp_path):
    out = tmp_path / "cli-sft"
    res = run_cli("train", "sft", "--base", str(random_tiny), "--task", "geoqa,mmbench", "--out", str(out),
                  "max_steps=2", "batch_size=2", "limit=3", "lora_r=2")
    assert res.returncode == 0, res.stderr
    assert f"wrote {out}" in res.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["lora_r"] == 2 and manifest["metrics"]["steps"] == 2
    assert manifest["data"]["n_per_task"] == {"geoqa": 3, "mmbench": 3} and manifest["data"]["n"] == 6


def test_train_data_of_several_tasks_keeps_each_task():
    from trainers.data import load_train_data

    examples, data = load_train_data("geoqa, aokvqa_mc", BUNDLED, limit=2)
    assert [e.task.name for e in examples] == ["geoqa", "geoqa", "aokvqa_mc", "aokvqa_mc"]
    assert data["task"] == "geoqa,aokvqa_mc" and data["n"] == 4
    for e in examples:  # each example is scored by its own task
        assert e.task.score(e.task.extract(e.target, e.item), e.item) == 1.0
    with pytest.raises(HarnessError, match="lists a task twice"):
        load_train_data("geoqa,geoqa", BUNDLED, limit=1)
    with pytest.raises(HarnessError, match="unknown task 'nope'"):
        load_train_data("geoqa,nope", BUNDLED, limit=1)


def test_leaderboard_builds_a_recipe_row_then_reuses_it(random_tiny, tmp_path):
    from harness.report.leaderboard import load_spec, run_leaderboard
    from trainers.recipes import build_recipe

    spec_file = tmp_path / "lb.yaml"
    spec_file.write_text(f"""
baseline: base
checkpoints:
  - {{name: base, path: {random_tiny}}}
  - name: sft
    path: {tmp_path / 'built' / 'sft'}
    recipe: {{trainer: sft, base: {random_tiny}, task: geoqa, config: {{max_steps: 2, batch_size: 2, limit: 4}}}}
tasks: [geoqa]
output_dir: {tmp_path / 'runs'}
limit: 4
bootstrap: 200
""")
    built: list[str] = []

    def counting(spec):
        built.append(spec.name)
        return build_recipe(spec)

    df = run_leaderboard(load_spec(spec_file), build_recipe=counting)
    assert built == ["sft"] and set(df.checkpoint) == {"base", "sft"}
    assert json.loads((tmp_path / "built" / "sft" / "manifest.json").read_text())["metrics"]["steps"] == 2
    run_leaderboard(load_spec(spec_file), build_recipe=counting)
    assert built == ["sft"]  # the folder exists: not trained again


def test_a_sampling_treatment_rebuilt_at_its_seed_writes_the_same_bytes(random_tiny, tmp_path):
    """README "The seeds in miniature": a fresh clone rebuilds every checkpoint byte for byte. mpo samples
    its own replies, drops LoRA inputs at random and shuffles its pairs: all of it follows the seed."""
    import trainers.mpo as mpo

    def build(name: str, seed: int) -> bytes:
        cfg = mpo.MPOConfig(**FEW, gold_chosen=True, lora_dropout=0.1, seed=seed)
        mpo.run(cfg, str(random_tiny), "geoqa", tmp_path / name, progress=False)
        return (tmp_path / name / "adapter_model.safetensors").read_bytes()

    first = build("a", 0)
    assert build("b", 0) == first
    assert build("c", 1) != first  # another seed is another draw
