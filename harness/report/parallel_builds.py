"""Build a board's missing recipe checkpoints in N worker processes at once (`harness leaderboard --jobs N`).

Why processes: on a CPU a tiny model's training step does not scale to two threads (measured on
the embedded base: 0.82 s per sft step on one thread, 0.60 s on two), so two one-thread builds
side by side finish more work per second than one two-thread build.

A build starts when every build its recipe reads (`base`, `include`) has finished; rows that one
build writes together (self_train's iterations, under the recipe's `out`) are one build. Of the
ready builds, those another build waits for start first, the rest in plan order. Each
worker runs the same `build_recipe` as the sequential path, so a build's folder lock and atomic
publish hold as before: a failed build leaves nothing behind, and the first failure stops the
scheduling of new builds (the running ones finish) before its error is raised.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class _Build:
    folder: Path  # what the trainer writes: the row's folder, or the recipe's `out`
    rows: list[Any] = field(default_factory=list)  # CheckpointSpec rows this build makes
    needs: set[Path] = field(default_factory=set)  # folders of other pending builds it reads


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(path))


def folders_read(recipe: dict[str, Any], folders: set[Path]) -> set[Path]:
    """Those of `folders` that the recipe reads (its `base` or an `include` lies in one)."""
    refs = [_absolute(r) for r in [recipe.get("base"), *(recipe.get("include") or [])] if isinstance(r, str) and r]
    return {f for f in folders if any(r == f or f in r.parents for r in refs)}


def plan_builds(rows: list[Any]) -> dict[Path, _Build]:
    """The pending rows grouped into builds (in row order), each with the builds it waits for."""
    builds: dict[Path, _Build] = {}
    for c in rows:
        folder = _absolute(c.recipe.get("out") or c.ckpt)
        builds.setdefault(folder, _Build(folder)).rows.append(c)
    for b in builds.values():
        b.needs = folders_read(b.rows[0].recipe, set(builds) - {b.folder})
    return builds


def _worker_init(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _run(build_recipe: Callable[[Any], Any], row: Any) -> None:
    build_recipe(row)


def build_parallel(planned: dict[Path, _Build], build_recipe: Callable[[Any], Any], jobs: int,
                   on_built: Callable[[list[Any]], None]) -> None:
    """Run the builds `plan_builds` made in `jobs` processes; `on_built(rows)` runs in this process
    after each build (the recipe stamps)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from harness.errors import HarnessError

    pending = dict(planned)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    running: dict[Any, _Build] = {}
    error: BaseException | None = None
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init, initargs=(threads,)) as pool:
        while pending or running:
            if error is None:
                busy = {b.folder for b in running.values()}
                ready = [b for b in pending.values() if not b.needs & (set(pending) | busy)]
                waited_on = {f for b in pending.values() for f in b.needs}
                # A build others wait for starts first: its dependants (sfte's average, self_train
                # on sft) can then start while the independent builds fill the other slots.
                for b in sorted(ready, key=lambda b: b.folder not in waited_on):
                    if len(running) >= jobs:
                        break
                    running[pool.submit(_run, build_recipe, b.rows[0])] = pending.pop(b.folder)
            if not running:
                if error is None and pending:  # every pending build waits on another: a cycle
                    names = ", ".join(b.rows[0].name for b in pending.values())
                    raise HarnessError(f"checkpoints {names}: their recipes read each other's folders (a cycle)")
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                b = running.pop(future)
                try:
                    future.result()
                except BaseException as e:  # keep the first; the running builds still finish
                    error = error or e
                    continue
                on_built([c for c in b.rows if Path(c.ckpt).is_dir()])
    if error is not None:
        raise error
