"""`harness score`: re-score predictions made anywhere, with no model and no images."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.commands.common import add_task_options, make_tasks, print_summaries
from harness.core.scoring import sample_record, summarize
from harness.core.store import atomic_write_json, atomic_write_jsonl, read_predictions
from harness.core.task import Task, resolve_data_dir
from harness.errors import HarnessError


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


def cmd_score(args: argparse.Namespace) -> int:
    from harness.core.outputs import check_output_folder

    check_output_folder(args.out, "score")  # a new or empty folder, or one harness score wrote
    (task,) = make_tasks([args.task], args)
    if getattr(task, "judged", False):
        from harness.judge.runs import run_judged_score

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
