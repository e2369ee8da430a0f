"""Data-parallel evaluation: shard the items across processes, merge their sample logs.

    accelerate launch --num_processes 4 -m harness eval --ckpt CKPT --tasks geoqa,mmbench
    torchrun --nproc-per-node 2 -m harness eval --ckpt tiny --tasks geoqa --limit 40   # CPU processes
    (any launcher that sets WORLD_SIZE and RANK; `accelerate launch --cpu` starts ONE process)

Rank r of W evaluates every W-th item of the prompt-length order, dealt in a snake (every shard
gets the same mix of short and long prompts, so the ranks finish together), each on its own
device, and appends to its own `samples.rank<r>-of<W>.jsonl` beside `samples.jsonl`. When all
ranks are done, rank 0 merges the shards (and any earlier samples.jsonl) into samples.jsonl: one
line per wanted sample key, in item order, nothing lost or duplicated; then it writes
summary.json. A killed run resumes per shard: each rank keeps the valid lines of its shard, and
the shared generation cache holds every batch any rank finished (under any world size).

Treatments build their sampled training data on rank 0 and share it (`computed_on_main`).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from harness.errors import HarnessError

SHARD_GLOB = "samples.rank*-of*.jsonl"


@dataclass(frozen=True)
class Shard:
    """This process's place in a data-parallel run (rank 0 of 1 when not launched in parallel)."""

    rank: int = 0
    world: int = 1
    device: str | None = None  # the launcher's device for this rank (cuda:<local rank>, or cpu)
    barrier: Callable[[], None] = field(default=lambda: None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise HarnessError(f"bad data-parallel rank {self.rank} of world size {self.world}; check RANK/WORLD_SIZE")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log_path(self, run_dir: Path) -> Path:
        return run_dir / f"samples.rank{self.rank}-of{self.world}.jsonl"


def current_shard() -> Shard:
    """Rank and world size from the launcher (accelerate launch / torchrun set WORLD_SIZE and RANK).

    accelerate's PartialState joins the process group the launcher prepared and gives the
    barrier and this rank's device; a single process never touches torch.distributed.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise HarnessError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None
    if world <= 1:
        return Shard()
    import torch
    from accelerate import PartialState

    # Without cpu=True accelerate sets up no process group on a machine without GPUs.
    state = PartialState(cpu=not torch.cuda.is_available())
    _destroy_group_at_exit()
    if state.num_processes != world:
        raise HarnessError(f"WORLD_SIZE={world} but the process group has {state.num_processes} processes; "
                           "start the run with `accelerate launch` or `torchrun`")
    return Shard(rank=state.process_index, world=state.num_processes, device=str(state.device),
                 barrier=state.wait_for_everyone)


@functools.cache
def _destroy_group_at_exit() -> None:
    """Tear the process group down before the interpreter does: a group left to the interpreter's
    own teardown sometimes aborts the process (SIGABRT) after all the work is done."""
    import atexit

    import torch.distributed as dist

    atexit.register(lambda: dist.destroy_process_group() if dist.is_initialized() else None)


def shard_positions(lengths: Sequence[int], rank: int, world: int) -> list[int]:
    """Positions (into the item list) that `rank` evaluates, in item order. The items sorted by
    prompt length (ties by position) are dealt out in a snake 0..W-1, W-1..0, ..., so every rank
    gets the same mix of short and long prompts. The shards of all ranks partition
    range(len(lengths)) exactly."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    mine = [i for p, i in enumerate(order) if (p % world if (p // world) % 2 == 0 else world - 1 - p % world) == rank]
    return sorted(mine)


def merge_samples(sources: Iterable[Iterable[Mapping[str, Any]]],
                  order: Mapping[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Union of sample rows from several logs: the first row seen for each key in `order`
    (key -> (item position, sample index)) wins, rows with other keys are dropped, and the result
    is sorted by item position then sample index."""
    merged: dict[str, dict[str, Any]] = {}
    for rows in sources:
        for row in rows:
            key = row.get("key")
            if key in order and key not in merged:
                merged[key] = dict(row)
    return sorted(merged.values(), key=lambda r: order[r["key"]])


def shard_logs(run_dir: Path) -> list[Path]:
    """Every shard log in run_dir, of any world size (a resumed run may change it)."""
    return sorted(run_dir.glob(SHARD_GLOB))


def computed_on_main(fn: Callable[[], Any]) -> Any:
    """fn() run by rank 0 alone, its result sent to every rank; fn() itself in a single process.

    Treatments that sample their own training data (mpo, self_critique, self_train, data_engine)
    must give every rank the same data. The same seed on every rank is not enough on GPUs, whose
    kernels are not bitwise deterministic: ranks with different pair or item counts would stall in
    the trainer's first collective. A failure on rank 0 ends every rank (the others get its message)
    instead of leaving them waiting. Not for DeepSpeed ZeRO-3, where generation needs every rank.
    """
    shard = current_shard()
    if not shard.active:
        return fn()
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    failure = None
    if shard.is_main:
        try:
            box = [("ok", fn())]
        except BaseException as e:  # tell the other ranks before raising here
            failure = e
            box = [("error", f"{type(e).__name__}: {e}" if not isinstance(e, HarnessError) else str(e))]
    broadcast_object_list(box, from_process=0)
    status, value = box[0]
    if failure is not None:
        raise failure
    if status == "error":
        raise HarnessError(f"rank 0 failed while building the training data: {value}")
    return value
