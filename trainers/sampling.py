"""What the sampling treatments (mpo, self_critique, self_train) share: the generation settings
of their samples and the batched, rank-0 sampling loop.

    gen = sampling_gen(cfg, examples)                        # cfg.max_new_tokens None: the tasks' budget
    samples = draw_on_main(backend, examples, k, gen, cfg.sample_batch_size, progress, "mpo sampling")
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from harness.core.types import GenConfig
    from harness.models.backend import HFBackend
    from trainers.data import Example


# The reply budget (tokens) when no example comes from a task (data files name none).
DATA_BUDGET = 256


def sampling_gen(cfg: Any, examples: Sequence["Example"], seed: int | None = None) -> "GenConfig":
    """The samples' GenConfig from a treatment config's temperature, top_p, top_k (if it has one),
    max_new_tokens (None: the largest budget of the examples' tasks, else DATA_BUDGET) and seed."""
    from harness.core.types import GenConfig

    budget = cfg.max_new_tokens or max((e.task.max_new_tokens for e in examples if e.task is not None),
                                       default=DATA_BUDGET)
    return GenConfig(max_new_tokens=budget, temperature=cfg.temperature, top_p=cfg.top_p,
                     top_k=getattr(cfg, "top_k", 0), seed=cfg.seed if seed is None else seed)


def sample_answers(backend: "HFBackend", examples: Sequence["Example"], n: int, gen: "GenConfig", batch_size: int,
                   advance=lambda k=1: None) -> list[list[str]]:
    """`n` sampled replies per example, in batches of prompts; each batch seeded from gen.seed."""
    outs: list[list[str]] = []
    for b, start in enumerate(range(0, len(examples), batch_size)):
        chunk = examples[start:start + batch_size]
        outs += backend.generate_images([e.text for e in chunk], [e.images for e in chunk],
                                        replace(gen, seed=gen.seed + b), n=n)
        advance(len(chunk))
    return outs


def draw_on_main(backend: "HFBackend", examples: Sequence["Example"], n: int, gen: "GenConfig", batch_size: int,
                 progress: bool, label: str) -> list[list[str]]:
    """sample_answers on rank 0, broadcast: every rank of a parallel launch trains on the same samples."""
    from harness.core.parallel import computed_on_main
    from trainers.common import sampling_progress

    def draw():
        with sampling_progress(progress, label, len(examples)) as advance:
            return sample_answers(backend, examples, n, gen, batch_size, advance)

    return computed_on_main(draw)
