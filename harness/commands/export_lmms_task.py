"""`harness export-lmms-task`: an lmms-eval task YAML + utils module for one of our tasks."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.common import add_task_options, make_tasks


def cmd_export_lmms_task(args: argparse.Namespace) -> int:
    from harness.bridges.lmms_export import export_task
    from harness.core.task import resolve_data_dir

    (task,) = make_tasks([args.task], args)
    path = export_task(task, resolve_data_dir(args.data_dir), Path(args.out))
    print(f"wrote {path} and {path.stem}_utils.py; run: lmms-eval --tasks {path.stem} --include_path {path.parent} ...")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("export-lmms-task", help="write an lmms-eval task YAML + utils module for one of our tasks",
                       description="lmms-eval then runs it over the data dir in place (geoqa, aokvqa_mc, aokvqa_da).")
    p.add_argument("task", help="geoqa | aokvqa_mc | aokvqa_da")
    p.add_argument("--out", required=True, help="folder for harness_<task>.yaml and its utils module")
    add_task_options(p)
    p.set_defaults(func=cmd_export_lmms_task)
