"""`harness eval` and `harness score`: settings from the flags, then a Session runs the tasks."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.core.config import from_args
from harness.core.runner import EvalResult, EvalSettings
from harness.core.scoring import sample_record, summarize
from harness.core.store import atomic_write_json, atomic_write_jsonl, read_predictions
from harness.core.task import Task, resolve_data_dir
from harness.core.types import GenConfig
from harness.errors import HarnessError


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    return from_args(EvalSettings, args, gen=from_args(GenConfig, args))


def run_eval(args: argparse.Namespace, tasks: list[Task]) -> list[EvalResult]:
    """Evaluate one checkpoint on `tasks` (not judged ones); print and return what summary.json holds."""
    from harness.core.parallel import current_shard
    from harness.session import Session

    settings = settings_from_args(args)
    # Under `accelerate launch` / torchrun each rank evaluates a shard on its own device (harness.core.parallel).
    shard = current_shard()
    engine = getattr(args, "backend", "hf")
    if engine == "vllm" and any(t.request_type != "generate" for t in tasks):
        raise HarnessError("--backend vllm only generates; likelihood-scored tasks (--mc-mode likelihood) "
                           "need the default backend")
    with Session(args.output_dir, args.data_dir, device=args.device or shard.device, dtype=args.dtype,
                 trust_remote_code=args.trust_remote_code, engine=engine, show_progress=shard.is_main) as s:
        # Fail fast: data, images and the checkpoint reference are checked before loading a model.
        loaded = [(task, s.load(task, settings.limit)) for task in tasks]
        ref = s.checkpoint(args.ckpt, args.base)
        backend = s.backend(ref, max_images=max((len(it.images) for _, items in loaded for it in items), default=1))
        results = [s.evaluate(backend, task, items, settings, shard=shard) for task, items in loaded]
    if not shard.is_main:
        return []  # rank 0 merged the shards and reports
    print_summaries([r.summary for r in results], title=f"{backend.name}{' (blind)' if settings.blind else ''}")
    return results


def print_summaries(summaries: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    # Items left unscored (score --allow-missing) or excluded by the official rule are shown, never silent.
    shown = [c for c in ("missing", "excluded") if any(s.get(c) for s in summaries)]
    for col in ("task", "n", "score", "95% CI", "unparsed", *shown):
        table.add_column(col, justify="right" if col != "task" else "left")
    for s in summaries:
        table.add_row(s["task"], str(s["n"]), f"{s['score']:.1f}", f"[{s['ci_low']:.1f}, {s['ci_high']:.1f}]",
                      str(s["unparsed"]), *(str(s.get(c, 0)) for c in shown))
    Console().print(table)


def run_score(args: argparse.Namespace, task: Task) -> dict[str, Any]:
    data_dir = resolve_data_dir(args.data_dir)
    items = {it.id: it for it in task.load(data_dir, "test")}
    skipped: list[str] = []
    preds = read_predictions(Path(args.predictions), items, task.excluded_ids(data_dir, "test"), skipped)
    if not preds:
        raise HarnessError(f"{args.predictions}: every prediction is for an id the official rule excludes; nothing to score")
    records = [sample_record(task, items[i], k, out) for i, k, out in preds]
    scored = {r["id"] for r in records}
    missing = len(items) - len(scored)
    if missing and not getattr(args, "allow_missing", False):
        raise HarnessError(f"{args.predictions}: {missing} of {len(items)} {task.name} item(s) have no prediction; "
                           f"add them, or pass --allow-missing to score the {len(scored)} present")
    summary = summarize(
        task, {i: items[i] for i in scored}, records, ci_method=args.ci_method,
        predictions=str(args.predictions), missing=missing, excluded=len(set(skipped)),
        data={"dir": str(data_dir)},
    )
    out = Path(args.out)
    atomic_write_jsonl(out / "samples.jsonl", records)
    atomic_write_json(out / "summary.json", summary)
    print_summaries([summary], title=f"{task.name} (scored from {Path(args.predictions).name})")
    return summary
