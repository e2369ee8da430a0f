"""The eval loop: items -> requests -> backend -> samples (stored as they complete) -> summary.

A request's cache key covers everything that determines its output: checkpoint content,
prompt text and image bytes (or the blanking), generation settings, sample index and seed. Work
whose key is already in samples.jsonl or the generation cache is never redone, so a run killed
at any point and started again ends with the same summary, no sample lost or duplicated.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from harness.errors import HarnessError
from harness.core.images import image_digest, missing_images, undecodable_image
from harness.core.parallel import Shard, merge_samples, shard_logs, shard_positions
from harness.core.record import RunRecord, Timer, build_record, write_record
from harness.core.scoring import data_hash, rescore, sample_record
from harness.core.rundir import rescored_note
from harness.core.store import GenerationCache, SampleLog, read_sample_lines, run_lock
from harness.core.task import Task, Unit
from harness.core.types import GenConfig, Item, Prompt
from harness.core.validate import safe_name


class Backend(Protocol):
    name: str
    content_hash: str

    def generate(self, prompts: Sequence[Prompt], gen: GenConfig, n: int = 1, blind: bool = False,
                 seeds: Sequence[int] | None = None) -> list[list[str]]: ...

    def choice_losses(self, prompts: Sequence[Prompt], choices: Sequence[Sequence[str]], blind: bool = False) -> list[list[float]]: ...


CI_METHODS = ("auto", "wilson", "jeffreys", "clopper-pearson", "bootstrap")  # harness.stats.ci.CI_METHODS (kept light)


@dataclass(frozen=True)
class EvalSettings:
    """How a task is run (with `gen`, how each reply is generated). CLI flags come from the metadata."""

    gen: GenConfig = GenConfig()
    n_samples: int = field(default=1, metadata={"help": "samples per item (needs --temperature > 0)", "kind": "positive"})
    batch_size: int = field(default=16, metadata={"help": "prompts per generate call", "kind": "positive"})
    blind: bool = field(default=False, metadata={"help": "blank every image (measures how much the model uses the image)"})
    limit: int | None = field(default=None, metadata={"help": "evaluate only the first N items", "kind": "positive"})
    ci_method: str = field(default="auto", metadata={
        "help": "confidence interval: auto (Wilson for 0/1 items, Wilson on the effective n for clustered 0/1 rows, "
                "bootstrap for partial-credit scores; "
                "the default), wilson, jeffreys, clopper-pearson or bootstrap", "flag": "--ci",
        "choices": CI_METHODS})

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise HarnessError("--n-samples must be >= 1")
        if self.n_samples > 1 and self.gen.greedy:
            raise HarnessError("--n-samples > 1 needs sampling: set --temperature > 0")
        if self.batch_size < 1:
            raise HarnessError("--batch-size must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise HarnessError("--limit must be >= 1")
        if self.ci_method not in CI_METHODS:
            raise HarnessError(f"unknown CI method {self.ci_method!r}; choose {', '.join(CI_METHODS)}")

    def gen_for(self, task: Task) -> GenConfig:
        """The generation settings of `task`'s requests: its own budget unless one was given."""
        return self.gen.for_task(task.max_new_tokens)


@dataclass
class EvalResult:
    """What one task run produced: its record (summary.json), the units statistics resample, the samples."""

    record: RunRecord
    units: list[Unit]
    records: list[dict[str, Any]]

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json's content."""
        return self.record.to_json()

    @property
    def unit_scores(self) -> dict[str, float]:
        return {u.id: u.score for u in self.units}


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


def request_key(content_hash: str, kind: str, item_id: str, req_hash: str, gen: GenConfig, k: int = 0,
                blind: bool = False) -> str:
    """The cache key of one generation (or likelihood) request; the judge's replies use it too."""
    payload = [content_hash, kind, item_id, req_hash, gen.as_dict(), k, blind]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def prompt_hash(prompt: Prompt, extra: bytes = b"", digest=image_digest) -> str:
    """Hash of the prompt text, its image bytes and `extra` (a likelihood request's choices)."""
    h = hashlib.sha256(prompt.text.encode())
    for ref in prompt.images:
        h.update(digest(ref).encode())
    h.update(extra)
    return h.hexdigest()


def build_requests(backend: Backend, task: Task, items: list[Item], settings: EvalSettings) -> list[_Request]:
    gen = settings.gen_for(task)
    reqs = []
    for item in items:
        prompt = Prompt(task.prompt(item), item.images)
        choices = json.dumps(list(item.choices)).encode() if task.request_type == "choice_likelihood" else b""
        h = prompt_hash(prompt, choices)
        # The item id is part of the key: two items with the same prompt and image (it happens in
        # real benchmarks) are separate requests, and their samples must not collapse into one.
        keys = [request_key(backend.content_hash, task.request_type, item.id, h, gen, k, settings.blind)
                for k in range(settings.n_samples)]
        reqs.append(_Request(item, prompt, keys))
    return reqs


def check_images(task: Task, items: list[Item]) -> None:
    """Every image exists and decodes: checked before any model loads."""
    missing = missing_images([ref for it in items for ref in it.images])
    if missing:
        raise HarnessError(
            f"{task.name}: {len(missing)} image(s) missing, e.g. {missing[0]}; "
            f"put the images where `harness tasks` says ({task.data_layout}) or use `harness score` for text-only re-scoring"
        )
    seen: set[Any] = set()
    for it in items:
        for ref in it.images:
            if (key := ref if isinstance(ref, bytes) else str(ref)) in seen:
                continue
            seen.add(key)
            why = undecodable_image(ref)
            if why:
                where = f"image of item {it.id}" if isinstance(ref, bytes) else f"image {ref} (item {it.id})"
                raise HarnessError(f"{task.name}: cannot decode {where}: {why}; replace the file or drop the item")


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
) -> EvalResult | None:
    """Evaluate `items` (already limited and image-checked, see harness.session) and write
    run_dir/samples.jsonl and run_dir/summary.json.

    Under data parallelism (`shard` of a launched run, see harness.core.parallel) this rank
    evaluates its share of the items into its own shard log; rank 0 then merges the shards and
    returns the result, the other ranks return None.
    """
    shard = shard or Shard()
    if not items:
        raise HarnessError(f"{task.name}: no items to evaluate")
    safe_name(backend.name, "checkpoint name")  # an in-memory model names its own runs/<name>/
    reqs = build_requests(backend, task, items, settings)
    load = getattr(backend, "load", None)  # a lazily loaded model (harness.session.LazyBackend)
    if load is not None and _must_generate(reqs, run_dir, cache, shard):
        load()  # a broken checkpoint fails here, before the run writes any file
    check_prompts = getattr(backend, "check_prompts", None)
    if check_prompts is not None:  # too long for the model's context: refused before anything is generated
        check_prompts([(r.item.id, r.prompt) for r in reqs], settings.gen_for(task).budget)
    cache.open()  # a damaged or unwritable cache is named before anything is written
    timer = Timer()
    # One process per run folder: a second one waits, then finds the work done (store.run_lock).
    with run_lock(run_dir, shard.rank if shard.active else None):
        merged, extra = _evaluate_locked(backend, task, settings, run_dir, cache, progress, shard, reqs)
        if merged is None:
            return None  # a data-parallel rank other than 0: rank 0 merged the shards and records the run
        record, units = build_record(
            task, {it.id: it for it in items}, merged, ci_method=settings.ci_method, seed=settings.gen.seed,
            checkpoint={"name": backend.name, "hash": backend.content_hash},
            generation={**settings.gen_for(task).as_dict(), "n_samples": settings.n_samples,
                        "batch_size": settings.batch_size, "draws": SAMPLING_DRAWS},
            blind=settings.blind, limit=settings.limit,
            data={"dir": str(data_dir) if data_dir else None, "hash": data_hash(items)},
            timing=timer.timing(), **extra,
        )
        record = write_record(run_dir, record)
    return EvalResult(record, units, merged)


def _must_generate(reqs: list[_Request], run_dir: Path, cache: GenerationCache, shard: Shard) -> bool:
    """Whether some sample is neither logged nor cached. Read-only (creates no file); outside the
    run lock, so only a hint: the locked pass below decides what is generated."""
    todo = {key for r in reqs for key in r.keys}
    for path in (run_dir / "samples.jsonl", shard.log_path(run_dir) if shard.active else None):
        if path is not None:
            todo -= {row.get("key") for row in read_sample_lines(path)}
    if todo and cache.path.is_file():
        todo -= set(cache.get_many(sorted(todo)))
    return bool(todo)


def _evaluate_locked(backend, task, settings, run_dir, cache, progress, shard, reqs):
    """Generate what is neither logged nor cached; returns (every requested sample in item order,
    record extras), or (None, {}) on a data-parallel rank other than 0."""
    final = run_dir / "samples.jsonl"
    served = getattr(backend, "record", None)  # a served model (openai_backend): its usage goes in summary.json
    usage_mark = backend.usage.as_dict() if served else None
    if shard.active:
        mine = [reqs[i] for i in shard_positions([len(r.prompt.text) for r in reqs], shard.rank, shard.world)]
    else:
        mine = reqs
    wanted = {key: (r, k) for r in mine for k, key in enumerate(r.keys)}
    log = SampleLog(shard.log_path(run_dir) if shard.active else final)
    done = _resume(task, wanted, log, [log.path, final] if shard.active else [log.path])
    todo = [key for key in wanted if key not in done]
    cached = cache.get_many(todo)
    log.append(_records(task, wanted, [(key, *cached[key]) for key in todo if key in cached]))
    _generate(backend, task, settings, cache, progress, log, wanted, [key for key in todo if key not in cached])
    positions = {key: (pos, k) for pos, r in enumerate(reqs) for k, key in enumerate(r.keys)}
    if not shard.active:
        merged, extra = _in_item_order(task, final, positions), {}
    else:
        merged, extra = _merge_shards(task, run_dir, shard, positions)
        if merged is None:
            return None, {}
    if served:
        extra["served"] = {**served(), "usage": backend.usage.since(usage_mark)}
    return merged, extra


def _resume(task: Task, wanted: dict[str, tuple[_Request, int]], log: SampleLog, paths: list[Path]) -> dict[str, dict]:
    """What an earlier (possibly killed) run already logged, torn, stale and duplicate lines dropped
    and the log rewritten to exactly that. Its scores are re-computed from the outputs by the task's
    current rule, never trusted; a stored score that disagreed is reported."""
    done: dict[str, dict[str, Any]] = {}
    changed: list[str] = []
    for path in paths:
        for row in read_sample_lines(path):
            if row.get("key") in wanted and row["key"] not in done and isinstance(row.get("output"), str):
                done[row["key"]] = fresh = rescore(task, wanted[row["key"]][0].item, row)
                if fresh["score"] != row.get("score") or fresh["extracted"] != row.get("extracted"):
                    changed.append(fresh["id"])
    if changed:
        print(f"warning: {rescored_note(log.path, task, changed)}", file=sys.stderr, flush=True)
    log.reset_to(done.values())
    return done


def _generate(backend, task, settings, cache, progress, log: SampleLog, wanted: dict[str, tuple[_Request, int]],
              todo: list[str]) -> None:
    """Generate the `todo` samples, item by item (all missing samples of an item in one call),
    caching and logging each batch as it completes."""
    pending: dict[int, list[str]] = {}
    for key in todo:
        pending.setdefault(id(wanted[key][0]), []).append(key)
    by_req = {id(r): r for r, _ in wanted.values()}
    task_id = progress.add_task(f"{backend.name} {task.name}", total=len(todo)) if progress else None
    if task.request_type == "choice_likelihood":
        batches = _likelihood_batches(backend, [(by_req[rid], keys) for rid, keys in pending.items()], settings)
    else:
        # A task may name groups of items whose prompts share a prefix (self-select: one question's
        # candidate lists); each group is then batched together, by length within it.
        groups = [task.batch_group(by_req[rid].item) for rid in pending]
        batches = generate_batches(backend, [(by_req[rid].prompt, keys) for rid, keys in pending.items()],
                                   settings.gen_for(task), settings.batch_size, settings.blind,
                                   groups=groups if any(g is not None for g in groups) else None)
    for rows in batches:
        cache.put_many(rows)
        log.append(_records(task, wanted, rows))
        if progress:
            progress.advance(task_id, len(rows))
    log.close()


def _in_item_order(task: Task, final: Path, positions: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Lines were appended in prompt-length order; put them back in item order (as a merged
    parallel run has them) unless they already are, so an unchanged re-run writes nothing."""
    rows = list(read_sample_lines(final))
    merged = merge_samples([rows], positions)
    missing = len(positions) - len(merged)
    if missing:  # never summarize a partial run (its score would silently cover fewer items)
        raise HarnessError(f"{task.name}: {missing} of {len(positions)} requested sample(s) missing from "
                           f"{final}; re-run the same command to generate them")
    if [r.get("key") for r in rows] != [r["key"] for r in merged]:
        SampleLog(final).reset_to(merged)
    return merged


def _merge_shards(task: Task, run_dir: Path, shard: Shard, positions: dict[str, tuple[int, int]]):
    """Rank 0 merges every rank's shard log into samples.jsonl (other ranks return (None, {}))."""
    shard.barrier()  # every rank's shard is complete
    if not shard.is_main:
        return None, {}
    final = run_dir / "samples.jsonl"
    shards = {p.name: list(read_sample_lines(p)) for p in shard_logs(run_dir)}
    merged = merge_samples([read_sample_lines(final), *shards.values()], positions)
    missing = len(positions) - len(merged)
    if missing:  # a rank died between its last batch and the barrier: never summarize a partial run
        raise HarnessError(f"{task.name}: {missing} sample(s) missing after merging the shards in {run_dir}; "
                           "re-run the same command to resume")
    SampleLog(final).reset_to(merged)
    for path in shard_logs(run_dir):
        path.unlink()
    return merged, {"data_parallel": {"world_size": shard.world, "shard_lines": {n: len(v) for n, v in shards.items()}}}


# Recorded in summary.json: how sampled tokens are drawn (batch-invariant per-sample streams).
SAMPLING_DRAWS = "per-sample-counter"


def row_seed(key: str) -> int:
    """The seed of one sample's draws: 63 bits of its cache key (which already holds the seed)."""
    return int(key[:16], 16) & (2**63 - 1)


def _group_by(seq, key) -> dict:
    groups: dict = {}
    for x in seq:
        groups.setdefault(key(x), []).append(x)
    return groups


def generate_batches(backend: Backend, requests: Sequence[tuple[Prompt, list[str]]], gen: GenConfig,
                     batch_size: int, blind: bool = False,
                     groups: Sequence[str] | None = None) -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    """Generate len(keys) replies per (prompt, keys) request; yields (key, reply, {}) rows per call.

    Shortest prompts first, `batch_size` prompts per call, so left padding wastes little; the
    prompts of one call that want the same number of samples are generated together. With
    `groups` (one name per request), each group's requests come together, shortest first within it.
    """
    position = {id(r): i for i, r in enumerate(requests)}
    order = sorted(requests, key=lambda r: (groups[position[id(r)]] if groups else "", len(r[0].text)))
    for start in range(0, len(order), batch_size):
        for n, group in _group_by(order[start : start + batch_size], lambda r: len(r[1])).items():
            # Each sample draws from its own stream, seeded by its key (checkpoint, prompt + images,
            # settings, seed, item, sample index): outputs do not depend on the batch it ran in.
            seeds = [row_seed(key) for _, keys in group for key in keys]
            outputs = backend.generate([p for p, _ in group], gen, n=n, blind=blind, seeds=seeds)
            yield [(key, out, {}) for (_, keys), outs in zip(group, outputs) for key, out in zip(keys, outs)]


def _likelihood_batches(backend: Backend, reqs: list[tuple[_Request, list[str]]], settings: EvalSettings):
    """Rank each item's choices by mean token loss; the lowest-loss choice is the reply."""
    order = sorted(reqs, key=lambda r: len(r[0].prompt.text))
    for start in range(0, len(order), settings.batch_size):
        group = order[start : start + settings.batch_size]
        losses = backend.choice_losses([r.prompt for r, _ in group], [r.item.choices for r, _ in group],
                                       blind=settings.blind)
        yield [(keys[0], r.item.choices[min(range(len(ls)), key=ls.__getitem__)], {"choice_losses": ls})
               for (r, keys), ls in zip(group, losses)]


def _records(task: Task, wanted: dict[str, tuple[_Request, int]], rows) -> list[dict[str, Any]]:
    out = []
    for key, output, extra in rows:
        req, k = wanted[key]
        out.append(sample_record(task, req.item, k, output, key=key, **extra))
    return out
