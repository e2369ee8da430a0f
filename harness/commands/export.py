"""`harness export`: a run's predictions in another tool's result layout (harness.bridges.vlmeval)."""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_export(args: argparse.Namespace) -> int:
    from harness.bridges.vlmeval import export_predictions
    from harness.core.text import visible

    path = export_predictions(Path(args.run), Path(args.out), data_dir=args.data_dir)
    print(f"wrote {visible(path)}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a run's predictions in another tool's result layout")
    p.add_argument("--format", required=True, choices=["vlmeval"], help="vlmeval: VLMEvalKit's <model>_<dataset>.xlsx/.tsv")
    p.add_argument("--run", required=True, help="a run folder (samples.jsonl + summary.json) of an LMUData TSV task")
    p.add_argument("--out", required=True, help="file to write: .tsv, or .xlsx (needs openpyxl)")
    p.add_argument("--data-dir", default=None, help="where the run's TSV lives (default: the run's own data dir)")
    p.set_defaults(func=cmd_export)
