"""`harness train`: the CLI's way into trainers/ (trainers.cli does the work; the engine never imports it)."""
from __future__ import annotations

import argparse


def cmd_train(args: argparse.Namespace) -> int:
    from trainers.cli import run_train

    return run_train(args)


def add_parser(sub) -> None:
    from trainers.cli import EPILOG, TREATMENTS  # names only (no torch): the list lives with the trainers

    p = sub.add_parser(
        "train", help=f"train a treatment into a checkpoint folder ({', '.join(TREATMENTS)})",
        description="Train a treatment on a task's train split and/or your own data files (--data); the folder (a PEFT adapter + manifest.json) "
                    "loads with `harness eval --ckpt DIR`. key=value arguments set config fields.",
        epilog=EPILOG,
    )
    p.add_argument("treatment", help=" | ".join(TREATMENTS))
    p.add_argument("--base", default=None, help="`tiny` or a local checkpoint folder (average: default the adapters' base)")
    p.add_argument("--task", default=None, help="task(s) whose train split is used: geoqa, or geoqa,mmbench")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--config", default=None, help="YAML/JSON file of config fields (key=value arguments override it)")
    p.add_argument("--data-dir", default=None, help="data root (default: $HARNESS_DATA, else the bundled mini-sets)")
    p.add_argument("--data", default=None, metavar="PATH[:RATIO],...",
                   help="your own data files, alone or with --task: LLaVA / ShareGPT / MMPR meta JSON, TRL "
                        "JSONL/JSON/parquet or save_to_disk folder (format detected); :RATIO repeats (2) or subsamples (0.5)")
    p.add_argument("--image-folder", default=None, help="where --data rows' relative image paths point (default: each file's folder)")
    p.add_argument("--long-rows", default="refuse", choices=["refuse", "truncate"],
                   help="--data rows longer than the model's context: refuse (default; an error naming the row) "
                        "or truncate (cut the reply to fit)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a checkpoint harness train wrote (never another folder)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config fields, e.g. lora_r=8 epochs=2")
    p.set_defaults(func=cmd_train)
