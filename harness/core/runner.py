"""The eval loop: items -> requests -> backend -> samples (stored as they complete) -> summary.

A request's cache key covers everything that determines its output: checkpoint content,
prompt text and image bytes (or the blanking), generation settings, sample index and seed. Work
whose key is already in samples.jsonl or the generation cache is never redone, so a run killed
at any point and started again ends with the same summary, no sample lost or duplicated.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Sequence

from harness.errors import HarnessError
from harness.core.images import image_digest, missing_images
from harness.core.parallel import Shard, merge_samples, shard_logs, shard_positions
from harness.core.scoring import data_hash, library_versions, sample_record, summarize
from harness.core.store import GenerationCache, SampleLog, atomic_write_json, read_sample_lines
from harness.core.task import Task
from harness.core.types import GenConfig, Item, Prompt


class Backend(Protocol):
    name: str
    content_hash: str

    def generate(self, prompts: Sequence[Prompt], gen: GenConfig, n: int = 1, blind: bool = False) -> list[list[str]]: ...

    def choice_losses(self, prompts: Sequence[Prompt], choices: Sequence[Sequence[str]], blind: bool = False) -> list[list[float]]: ...


@dataclass(frozen=True)
class EvalSettings:
    gen: GenConfig = GenConfig()
    n_samples: int = 1
    batch_size: int = 16
    blind: bool = False
    limit: int | None = None
    ci_method: str = "bootstrap"

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise HarnessError("--n-samples must be >= 1")
        if self.n_samples > 1 and self.gen.greedy:
            raise HarnessError("--n-samples > 1 needs sampling: set --temperature > 0")
        if self.batch_size < 1:
            raise HarnessError("--batch-size must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise HarnessError("--limit must be >= 1")


@dataclass
class _Request:
    item: Item
    prompt: Prompt
    keys: list[str]  # one per sample index


def run_name(task: Task, blind: bool) -> str:
    """Folder name of a task run: the task, its non-default options, and -blind."""
    parts = [task.name]
    parts += [f"{k}_{v}" for k, v in sorted(task.opts.items()) if v != type(task).options[k][0]]
    if blind:
        parts.append("blind")
    return "-".join(parts)


def _request_key(backend: Backend, task: Task, item_id: str, req_hash: str, settings: EvalSettings, k: int) -> str:
    # The item id is part of the key: two items with the same prompt and image (it happens in
    # real benchmarks) are separate requests, and their samples must not collapse into one.
    gen = replace(settings.gen, max_new_tokens=_max_new_tokens(task, settings))
    payload = [backend.content_hash, task.request_type, item_id, req_hash, gen.as_dict(), k, settings.blind]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _max_new_tokens(task: Task, settings: EvalSettings) -> int:
    # A task's own budget applies unless the user asked for a different one.
    return settings.gen.max_new_tokens if settings.gen.max_new_tokens != GenConfig().max_new_tokens else task.max_new_tokens


def build_requests(backend: Backend, task: Task, items: list[Item], settings: EvalSettings) -> list[_Request]:
    reqs = []
    for item in items:
        prompt = Prompt(task.prompt(item), item.images)
        h = hashlib.sha256(prompt.text.encode())
        for ref in item.images:
            h.update(image_digest(ref).encode())
        if task.request_type == "choice_likelihood":
            h.update(json.dumps(list(item.choices)).encode())
        keys = [_request_key(backend, task, item.id, h.hexdigest(), settings, k) for k in range(settings.n_samples)]
        reqs.append(_Request(item, prompt, keys))
    return reqs


def check_images(task: Task, items: list[Item]) -> None:
    missing = missing_images([ref for it in items for ref in it.images])
    if missing:
        raise HarnessError(
            f"{task.name}: {len(missing)} image(s) missing, e.g. {missing[0]}; "
            f"put the images where `harness tasks` says ({task.data_layout}) or use `harness score` for text-only re-scoring"
        )


def evaluate(
    backend: Backend,
    task: Task,
    items: list[Item],
    settings: EvalSettings,
    run_dir: Path,
    cache: GenerationCache,
    data_dir: Path | None = None,
    progress=None,
    shard: Shard | None = None,
) -> dict[str, Any] | None:
    """Evaluate `items` and write run_dir/samples.jsonl and run_dir/summary.json.

    Under data parallelism (`shard` of a launched run, see harness.parallel) this rank evaluates
    its share of the items into its own shard log; rank 0 then merges the shards and returns the
    summary, the other ranks return None.
    """
    shard = shard or Shard()
    if settings.limit:
        items = items[: settings.limit]
    if not items:
        raise HarnessError(f"{task.name}: no items to evaluate")
    check_images(task, items)
    reqs = build_requests(backend, task, items, settings)
    final = run_dir / "samples.jsonl"
    if shard.active:
        mine = [reqs[i] for i in shard_positions([len(r.prompt.text) for r in reqs], shard.rank, shard.world)]
    else:
        mine = reqs
    wanted = {key: (r, k) for r in mine for k, key in enumerate(r.keys)}

    # Keep what an earlier (possibly killed) run already logged; drop torn, stale or duplicate lines.
    log = SampleLog(shard.log_path(run_dir) if shard.active else final)
    done: dict[str, dict[str, Any]] = {}
    for path in [log.path, final] if shard.active else [log.path]:
        for row in read_sample_lines(path):
            if row.get("key") in wanted and row["key"] not in done:
                done[row["key"]] = row
    log.reset_to(done.values())

    todo = [key for key in wanted if key not in done]
    cached = cache.get_many(todo)
    log.append(_records(task, wanted, [(key, *cached[key]) for key in todo if key in cached]))
    todo = [key for key in todo if key not in cached]

    # Generate what is left, item by item (all missing samples of an item in one call),
    # batched by similar prompt length so left padding wastes little.
    pending: dict[int, list[str]] = {}
    for key in todo:
        pending.setdefault(id(wanted[key][0]), []).append(key)
    by_req = {id(r): r for r in reqs}
    order = sorted(pending, key=lambda rid: len(by_req[rid].prompt.text))
    task_id = progress.add_task(f"{backend.name} {task.name}", total=len(todo)) if progress else None
    for start in range(0, len(order), settings.batch_size):
        batch = [by_req[rid] for rid in order[start : start + settings.batch_size]]
        for n_missing, group in _group_by(batch, lambda r: len(pending[id(r)])).items():
            rows = _run_batch(backend, task, group, [pending[id(r)] for r in group], n_missing, settings)
            cache.put_many(rows)
            log.append(_records(task, wanted, rows))
            if progress:
                progress.advance(task_id, len(rows))
    log.close()
    positions = {key: (pos, k) for pos, r in enumerate(reqs) for k, key in enumerate(r.keys)}
    extra: dict[str, Any] = {}
    if not shard.active:
        # Lines were appended in prompt-length order; put them back in item order (as a merged
        # parallel run has them) unless they already are, so an unchanged re-run writes nothing.
        rows = list(read_sample_lines(final))
        merged = merge_samples([rows], positions)
        if [r.get("key") for r in rows] != [r["key"] for r in merged]:
            SampleLog(final).reset_to(merged)
    else:
        shard.barrier()  # every rank's shard is complete
        if not shard.is_main:
            return None
        shards = {p.name: list(read_sample_lines(p)) for p in shard_logs(run_dir)}
        merged = merge_samples([read_sample_lines(final), *shards.values()], positions)
        missing = len(positions) - len(merged)
        if missing:  # a rank died between its last batch and the barrier: never summarize a partial run
            raise HarnessError(f"{task.name}: {missing} sample(s) missing after merging the shards in {run_dir}; "
                               "re-run the same command to resume")
        SampleLog(final).reset_to(merged)
        for path in shard_logs(run_dir):
            path.unlink()
        extra["data_parallel"] = {"world_size": shard.world, "shard_lines": {n: len(v) for n, v in shards.items()}}

    records = merged  # every requested sample, in item order: what samples.jsonl now holds
    item_map = {it.id: it for it in items}
    summary = summarize(
        task, item_map, records, ci_method=settings.ci_method, seed=settings.gen.seed,
        checkpoint={"name": backend.name, "hash": backend.content_hash},
        generation={**replace(settings.gen, max_new_tokens=_max_new_tokens(task, settings)).as_dict(),
                    "n_samples": settings.n_samples},
        blind=settings.blind,
        limit=settings.limit,
        data={"dir": str(data_dir) if data_dir else None, "hash": data_hash(items)},
        versions=library_versions(),
        **extra,
    )
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def _group_by(seq, key) -> dict:
    groups: dict = {}
    for x in seq:
        groups.setdefault(key(x), []).append(x)
    return groups


def _run_batch(backend: Backend, task: Task, reqs: list[_Request], keys: list[list[str]], n: int,
               settings: EvalSettings) -> list[tuple[str, str, dict[str, Any]]]:
    if task.request_type == "choice_likelihood":
        losses = backend.choice_losses([r.prompt for r in reqs], [r.item.choices for r in reqs], blind=settings.blind)
        return [
            (ks[0], r.item.choices[min(range(len(ls)), key=ls.__getitem__)], {"choice_losses": ls})
            for r, ks, ls in zip(reqs, keys, losses)
        ]
    # Seed per batch from its first key, so a resumed run draws reproducibly for the same batch.
    seed = int(keys[0][0][:8], 16) ^ settings.gen.seed
    gen = replace(settings.gen, max_new_tokens=_max_new_tokens(task, settings), seed=seed)
    outputs = backend.generate([r.prompt for r in reqs], gen, n=n, blind=settings.blind)
    return [(key, out, {}) for ks, outs in zip(keys, outputs) for key, out in zip(ks, outs)]


def _records(task: Task, wanted: dict[str, tuple[_Request, int]], rows) -> list[dict[str, Any]]:
    out = []
    for key, output, extra in rows:
        req, k = wanted[key]
        out.append(sample_record(task, req.item, k, output, key=key, **extra))
    return out
