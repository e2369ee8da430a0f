"""micro_batches (TrainConfig): each optimiser step's examples split by length into forward passes
whose gradients accumulate (transformers' batch_rebalance sampler), so short rows are not padded to a
long select item's length. The step must see the same examples and the same loss as one batch."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import BUNDLED
from harness.errors import HarnessError


def _examples(n: int = 8):
    from harness.core.task import get_task
    from trainers.data import load_examples

    examples = load_examples(get_task("geoqa"), BUNDLED, limit=n)
    # Half of them long, as R3V select items are beside plain rationales.
    return [dataclasses.replace(e, target=" ".join([e.target] * 4)) if i % 2 else e for i, e in enumerate(examples)]


class _Recorder:
    """The SFT collator, keeping each forward pass's row indices and padded width."""

    def __init__(self, backend, examples):
        from trainers.data import SFTCollator

        self.inner, self.calls = SFTCollator(backend, examples), []

    def __call__(self, rows):
        batch = self.inner(rows)
        self.calls.append(([r["idx"] for r in rows], batch["input_ids"].shape[1]))
        return batch


def _fit(random_tiny, micro_batches: int, seed: int = 0, steps: int = 1, batch_size: int = 8):
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from trainers.sft import SFTConfig, fit_lora_sft
    from trainers.common import train_metrics

    backend = HFBackend(resolve_checkpoint(str(random_tiny)), device="cpu")
    examples = _examples()
    cfg = SFTConfig(batch_size=batch_size, max_steps=steps, logging_steps=1, micro_batches=micro_batches, seed=seed,
                    learning_rate=1e-3)
    recorder = _Recorder(backend, examples)
    trainer = fit_lora_sft(backend, backend.model, examples, cfg, False, "test", collator=recorder)
    return train_metrics(trainer), recorder.calls


def test_micro_batches_see_the_steps_examples_with_less_padding_and_the_same_loss(random_tiny):
    whole, [(rows, width)] = _fit(random_tiny, 1)
    split, calls = _fit(random_tiny, 4)
    assert len(calls) == 4 and sorted(i for c, _ in calls for i in c) == list(range(8))
    assert sorted(rows) == list(range(8))
    # The long rows (odd indices) share passes; the short ones are not padded to their width.
    assert max(w for _, w in calls) == width and min(w for _, w in calls) < width * 0.7
    short_passes = [c for c, w in calls if w < width * 0.7]
    assert short_passes and all(i % 2 == 0 for c in short_passes for i in c)
    # The step's loss is the mean over all its reply tokens either way (not a mean of pass means).
    assert split["first_loss"] == pytest.approx(whole["first_loss"], rel=1e-4)


def test_micro_batches_take_the_same_gradient_step(random_tiny, monkeypatch):
    """With plain SGD (the update is the gradient itself) one step over 4 length-balanced passes
    moves every LoRA weight exactly as one pass over the whole batch does."""
    import torch

    import trainers.common as common

    original = common.trl_args
    monkeypatch.setattr(common, "trl_args", lambda *a, **k: original(*a, optim="sgd", **k))

    def update(micro_batches):
        from harness.models.backend import HFBackend
        from harness.models.checkpoints import resolve_checkpoint
        from trainers.sft import SFTConfig, fit_lora_sft

        backend = HFBackend(resolve_checkpoint(str(random_tiny)), device="cpu")
        cfg = SFTConfig(batch_size=8, max_steps=1, micro_batches=micro_batches, learning_rate=1.0, warmup_ratio=0.0)
        trainer = fit_lora_sft(backend, backend.model, _examples(), cfg, False, "test")
        return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_B" in k}

    whole, split = update(1), update(4)
    assert any(v.abs().max() > 0 for v in whole.values())  # lora_B starts at 0: the step moved it
    for name, value in whole.items():
        torch.testing.assert_close(split[name], value, rtol=1e-4, atol=1e-7)


def test_micro_batch_order_follows_the_seed(random_tiny):
    _, first = _fit(random_tiny, 2, seed=0, steps=4, batch_size=4)
    _, again = _fit(random_tiny, 2, seed=0, steps=4, batch_size=4)
    _, other = _fit(random_tiny, 2, seed=5, steps=4, batch_size=4)
    assert first == again

    def steps(calls):  # each optimiser step's set of examples
        return [sorted(calls[k][0] + calls[k + 1][0]) for k in range(0, len(calls), 2)]

    assert steps(first) != steps(other)


def test_micro_batches_are_checked():
    from trainers.common import load_config
    from trainers.mpo import MPOConfig
    from trainers.remgcl import REMGCLConfig
    from trainers.sft import SFTConfig

    with pytest.raises(HarnessError, match=r"micro_batches must be >= 1 and divide batch_size \(16\), got 3"):
        load_config(SFTConfig, None, ["batch_size=16", "micro_batches=3"])
    with pytest.raises(HarnessError, match="preference pairs train whole"):
        load_config(MPOConfig, None, ["micro_batches=2"])
    with pytest.raises(HarnessError, match="alignment loss contrasts"):
        load_config(REMGCLConfig, None, ["micro_batches=2"])
