"""`harness tasks`: every registered task, where it expects its data, and its options."""
from __future__ import annotations

import argparse


def cmd_tasks(args: argparse.Namespace) -> int:
    from importlib.metadata import entry_points

    # Plain lines rather than a table: paths must stay copyable at any terminal width.
    for ep in sorted(entry_points(group="harness.tasks"), key=lambda e: e.name):
        cls = ep.load()
        print(f"{ep.name}: {cls.description}")
        print(f"  data:    {cls.data_layout}")
        if cls.options:
            print("  options: " + "; ".join(f"--{k.replace('_', '-')} {'|'.join(v)}"
                                            + (f" ({cls.option_help[k]})" if k in cls.option_help else "")
                                            for k, v in cls.options.items()))
    print("Data root: --data-dir, else $HARNESS_DATA, else the bundled mini-sets (data/).")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("tasks", help="list tasks and where each expects its data")
    p.set_defaults(func=cmd_tasks)
