"""`harness score`: re-score predictions made anywhere, with no model and no images."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.commands.common import add_task_options, make_tasks, print_summaries
from harness.core.record import Timer, build_record, write_record
from harness.core.scoring import data_hash, sample_record
from harness.core.store import atomic_write_jsonl, read_predictions
from harness.core.task import Task, resolve_data_dir
from harness.errors import HarnessError


def run_score(args: argparse.Namespace, task: Task) -> dict[str, Any]:
    timer = Timer()
    data_dir = resolve_data_dir(args.data_dir)
    items = task.items_by_id(data_dir)
    skipped: list[str] = []
    preds = read_predictions(Path(args.predictions), items, task.excluded_ids(data_dir, "test"), skipped)
    if not preds:
        raise HarnessError(f"{args.predictions}: every prediction is for an id the official rule excludes; nothing to score")
    records = [sample_record(task, items[i], k, out) for i, k, out in preds]
    scored = list(dict.fromkeys(r["id"] for r in records))  # in the samples' order, as readers hash them
    missing = len(items) - len(scored)
    if missing and not getattr(args, "allow_missing", False):
        raise HarnessError(f"{args.predictions}: {missing} of {len(items)} {task.name} item(s) have no prediction; "
                           f"add them, or pass --allow-missing to score the {len(scored)} present")
    record, _ = build_record(
        task, {i: items[i] for i in scored}, records, ci_method=args.ci_method,
        predictions=str(args.predictions), missing=missing, excluded=len(set(skipped)),
        data={"dir": str(data_dir), "hash": data_hash(items[i] for i in scored)}, timing=timer.timing(),
    )
    out = Path(args.out)
    atomic_write_jsonl(out / "samples.jsonl", records)
    summary = write_record(out, record).to_json()
    print_summaries([summary], title=f"{task.name} (scored from {Path(args.predictions).name})")
    return summary


def run_judged_score(args: argparse.Namespace, task: Task) -> dict[str, Any]:
    """`harness score` for judged tasks: predictions made anywhere become a run folder (samples and
    their record), then the judge scores them (judged.json beside); its replies are cached there
    too, so a re-score asks nothing again."""
    from harness.commands.common import session_from_args
    from harness.judge.pipeline import Judge, JudgeSettings, judge_pointwise
    from harness.judge.runs import bootstrap_only, print_judged

    ci_method = bootstrap_only(args.ci_method)
    timer = Timer()
    out = Path(args.out)
    with session_from_args(args, output_dir=out) as s:
        items = task.items_by_id(s.data_dir)
        preds = read_predictions(Path(args.predictions), items)
        records = [sample_record(task, items[i], k, text) for i, k, text in preds]
        judge_ref = s.checkpoint(args.judge or "tiny")
        scored = {i: items[i] for i in dict.fromkeys(r["id"] for r in records)}
        source = {"predictions": str(args.predictions), "missing_predictions": len(items) - len(scored)}
        record, _ = build_record(task, scored, records, data={"dir": str(s.data_dir)}, **source)
        atomic_write_jsonl(out / "samples.jsonl", records)
        write_record(out, replace(record, timing=timer.timing()))
        judge = Judge(s.backend(judge_ref), s.cache, JudgeSettings(ci_method=ci_method))
        base = {"task": task.name, "options": task.opts, **source, "data": {"dir": str(s.data_dir)}}
        result = judge_pointwise(judge, scored, records, out, base)
    print_judged([result.summary], f"{task.name} (scored from {Path(args.predictions).name}, judge {judge_ref.name})")
    return result.summary


def cmd_score(args: argparse.Namespace) -> int:
    from harness.core.outputs import check_output_folder

    check_output_folder(args.out, "score")  # a new or empty folder, or one harness score wrote
    (task,) = make_tasks([args.task], args)
    if task.judged:
        run_judged_score(args, task)
        return 0
    if args.judge:
        raise HarnessError(f"--judge applies only to judged tasks (critic), not {task.name}")
    run_score(args, task)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="re-score predictions made anywhere, with no model and no images")
    p.add_argument("--task", required=True)
    p.add_argument("--predictions", required=True, help='JSONL: {"id": ..., "output": "...", "sample": k (optional)} per line')
    p.add_argument("--out", required=True, help="folder for samples.jsonl and summary.json")
    p.add_argument("--allow-missing", action="store_true",
                   help="score the items that have predictions when some have none (the count is shown); "
                        "default: missing items are an error")
    p.add_argument("--judge", default=None, help="judged tasks (critic): the checkpoint that scores the answers (default: tiny)")
    p.add_argument("--device", default=None, help="judged tasks: where the judge runs (default: cuda if present)")
    add_task_options(p)
    p.set_defaults(func=cmd_score)
