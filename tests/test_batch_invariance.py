"""Sampled outputs depend on (checkpoint, prompt + images, settings, seed, item, sample index) only:
not on --batch-size, on which other items share a batch, or on what was cached before."""
from __future__ import annotations

import json

import pytest

from harness.core.runner import EvalSettings, evaluate
from harness.core.store import GenerationCache, read_sample_lines
from harness.core.task import get_task
from harness.core.types import GenConfig

from conftest import BUNDLED


def test_counter_draws_match_splitmix64_and_ignore_other_rows():
    import torch

    from harness.models.shared_prefix import counter_uniforms

    mask = (1 << 64) - 1

    def reference(seed: int, step: int) -> float:
        z = (seed + 0x9E3779B97F4A7C15 * (step + 1)) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return ((z ^ (z >> 31)) >> 11) / 2**53

    seeds = [0, 1, 12345, 2**63 - 1, 987654321987]
    for step in (0, 1, 7, 1000):
        got = counter_uniforms(torch.tensor(seeds), step).tolist()
        assert got == [reference(s, step) for s in seeds]
        assert counter_uniforms(torch.tensor(seeds[2:3]), step).tolist() == got[2:3]  # alone = in a batch
    draws = counter_uniforms(torch.arange(20_000), 3)
    assert 0.49 < float(draws.mean()) < 0.51 and float(draws.min()) >= 0 and float(draws.max()) < 1


@pytest.mark.slow
def test_batch_size_and_cache_state_do_not_change_sampled_outputs(tmp_path):
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint

    backend = HFBackend(resolve_checkpoint("tiny"), device="cpu")
    task = get_task("geoqa")
    items = task.load(BUNDLED, "test")[:16]
    gen = GenConfig(temperature=1.0, max_new_tokens=24, seed=7)

    def run(name: str, batch_size: int, subset=None) -> dict:
        cache = GenerationCache(tmp_path / name / "cache.sqlite")
        if subset is not None:  # a cache warmed by an earlier, smaller run in the same folder
            evaluate(backend, task, subset, EvalSettings(gen=gen, n_samples=3, batch_size=batch_size),
                     tmp_path / name / "run", cache)
        summary = evaluate(backend, task, items, EvalSettings(gen=gen, n_samples=3, batch_size=batch_size),
                           tmp_path / name / "run", cache).summary
        cache.close()
        assert summary["generation"]["batch_size"] == batch_size
        return {(r["id"], r["sample"]): r["output"] for r in read_sample_lines(tmp_path / name / "run" / "samples.jsonl")}

    by4, by16 = run("b4", 4), run("b16", 16)
    resumed = run("resumed", 5, subset=items[3:9:2])
    assert len(by4) == 48 and by4 == by16 == resumed
    varied = sum(len({by4[(it.id, k)] for k in range(3)}) > 1 for it in items)
    assert varied >= 4  # really sampled: the samples of many items differ from each other
    summary = json.loads((tmp_path / "b4" / "run" / "summary.json").read_text())
    assert summary["generation"]["draws"] == "per-sample-counter"
