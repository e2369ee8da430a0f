"""`harness bench`: runs bench/throughput.py, which parses (and documents, with --help) its own flags."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import HarnessError


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib.util

    import harness

    # The benchmark lives in the repository's bench/ (not an installed package): load it from there.
    script = Path(harness.__file__).resolve().parents[1] / "bench" / "throughput.py"
    if not script.is_file():
        raise HarnessError(f"{script} not found; `harness bench` runs from a checkout of the repository")
    spec = importlib.util.spec_from_file_location("harness_bench_throughput", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(args.bench_args)


def add_parser(sub) -> None:
    p = sub.add_parser("bench", add_help=False, help="throughput: our eval vs lmms-eval vs a naive loop, N-sample cost "
                       "(bench/throughput.py; `harness bench --help` lists its options)")
    p.set_defaults(func=cmd_bench)
