"""Orchestration behind `harness eval` and `harness score`: validate everything, then run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.core.runner import EvalSettings, check_images, evaluate, run_name
from harness.core.scoring import sample_record, summarize
from harness.core.store import GenerationCache, atomic_write_json, atomic_write_jsonl
from harness.core.task import Task, resolve_data_dir
from harness.core.types import GenConfig


def run_eval(args: argparse.Namespace, tasks: list[Task]) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.core.parallel import current_shard

    settings = EvalSettings(
        gen=GenConfig(
            max_new_tokens=args.max_new_tokens or GenConfig().max_new_tokens,
            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
        ),
        n_samples=args.n_samples, batch_size=args.batch_size, blind=args.blind,
        limit=args.limit, ci_method=args.ci_method,
    )
    # Fail fast: data, images and the checkpoint reference are checked before loading a model.
    data_dir = resolve_data_dir(args.data_dir)
    loaded = []
    for task in tasks:
        items = task.load(data_dir, "test")
        if settings.limit:
            items = items[: settings.limit]
        check_images(task, items)
        loaded.append((task, items))
    ref = resolve_checkpoint(args.ckpt, base=args.base, trust_remote_code=args.trust_remote_code)
    # Under `accelerate launch` / torchrun each rank evaluates a shard on its own device (harness.parallel).
    shard = current_shard()
    if getattr(args, "backend", "hf") == "vllm":
        from harness.models.vllm_backend import VLLMBackend, require_vllm

        require_vllm()
        if any(t.request_type != "generate" for t, _ in loaded):
            raise HarnessError("--backend vllm only generates; likelihood-scored tasks (--mc-mode likelihood) "
                               "need the default backend")
        backend = VLLMBackend(ref, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                              max_images=max((len(it.images) for _, items in loaded for it in items), default=1))
    else:
        backend = HFBackend(ref, device=args.device or shard.device, dtype=args.dtype,
                            trust_remote_code=args.trust_remote_code)

    out = Path(args.output_dir)
    cache = GenerationCache(out / ".cache" / "generations.sqlite")
    console = Console(stderr=True)
    summaries = []
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, transient=True, disable=not shard.is_main) as progress:
            for task, items in loaded:
                run_dir = out / backend.name / run_name(task, settings.blind)
                summaries.append(evaluate(backend, task, items, settings, run_dir, cache,
                                          data_dir=data_dir, progress=progress, shard=shard))
    finally:
        cache.close()
    if not shard.is_main:
        return []  # rank 0 merged the shards and reports
    print_summaries(summaries, title=f"{backend.name}{' (blind)' if settings.blind else ''}")
    return summaries


def print_summaries(summaries: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("task", "n", "score", "95% CI", "unparsed"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for s in summaries:
        table.add_row(s["task"], str(s["n"]), f"{s['score']:.1f}", f"[{s['ci_low']:.1f}, {s['ci_high']:.1f}]",
                      str(s["unparsed"]))
    Console().print(table)


def read_predictions(path: Path, items: dict) -> list[tuple[str, int, str]]:
    """Parse a predictions JSONL; every problem is an error naming the line."""
    if not path.is_file():
        raise HarnessError(f"predictions file not found: {path}")
    rows: list[tuple[str, int, str]] = []
    seen: set[tuple[str, int]] = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise HarnessError(f"{where}: malformed JSON line ({e.msg}); fix or remove it") from None
            if not isinstance(row, dict) or "id" not in row or "output" not in row:
                raise HarnessError(f'{where}: expected {{"id": ..., "output": "..."}} with an optional "sample"')
            item_id = str(row["id"])
            if item_id not in items:
                raise HarnessError(f"{where}: id {item_id!r} is not in the benchmark file; check --task and --data-dir")
            if not isinstance(row["output"], str):
                raise HarnessError(f"{where}: \"output\" must be a string")
            sample = row.get("sample", 0)
            if not isinstance(sample, int) or sample < 0:
                raise HarnessError(f'{where}: "sample" must be a non-negative integer')
            if (item_id, sample) in seen:
                raise HarnessError(f"{where}: duplicate output for id {item_id!r} sample {sample}; give each sample its own \"sample\" index")
            seen.add((item_id, sample))
            rows.append((item_id, sample, row["output"]))
    if not rows:
        raise HarnessError(f"{path}: no predictions found")
    return rows


def run_score(args: argparse.Namespace, task: Task) -> dict[str, Any]:
    data_dir = resolve_data_dir(args.data_dir)
    items = {it.id: it for it in task.load(data_dir, "test")}
    preds = read_predictions(Path(args.predictions), items)
    records = [sample_record(task, items[i], k, out) for i, k, out in preds]
    scored = {r["id"] for r in records}
    summary = summarize(
        task, {i: items[i] for i in scored}, records, ci_method=args.ci_method,
        predictions=str(args.predictions), missing=len(items) - len(scored),
        data={"dir": str(data_dir)},
    )
    out = Path(args.out)
    atomic_write_jsonl(out / "samples.jsonl", records)
    atomic_write_json(out / "summary.json", summary)
    print_summaries([summary], title=f"{task.name} (scored from {Path(args.predictions).name})")
    return summary
