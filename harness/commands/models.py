"""`harness models`: the model families the harness drives, how each is tested, known limits."""
from __future__ import annotations

import argparse


def cmd_models(args: argparse.Namespace) -> int:
    from harness.models.families import table

    # Plain lines, like `harness tasks`: the notes stay readable at any terminal width.
    for row in table():
        print(f"{row['family']}: lmms-eval {row['lmms-eval']}")
        print(f"  tested: {row['tested']}")
        print(f"  limits: {row['limits']}")
    print("Other model types run through their own processor (generic path), untested.")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the model families the harness drives, how each is tested, known limits")
    p.set_defaults(func=cmd_models)
