"""`harness leaderboard`: build, evaluate and render a leaderboard spec (harness.report.leaderboard)."""
from __future__ import annotations

import argparse
from pathlib import Path


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(k) for k in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give distinct integers, e.g. 0,1,2")
    return seeds


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.report.leaderboard import load_spec, run_leaderboard
    from harness.report.spec import with_seeds

    spec = load_spec(Path(args.spec))
    spec.ci = args.ci or spec.ci
    spec.correction = args.correction or spec.correction
    spec.allow_missing = args.allow_missing
    if args.seeds is not None:
        spec = with_seeds(spec, args.seeds)
    build, fingerprint = _recipe_builder()
    run_leaderboard(spec, build_recipe=build, device=args.device, data_fingerprint=fingerprint, jobs=args.jobs)
    print(f"wrote {spec.out_dir}/leaderboard.{{md,csv,html}} and forest.png")
    return 0


def _recipe_builder():
    """Training lives in trainers/; the engine receives it (and the data-file hashing of recipes'
    `data:`) as callbacks (imports point one way)."""
    try:
        from trainers.recipes import build_recipe, data_fingerprint
    except ImportError:
        return None, None
    return build_recipe, data_fingerprint


def add_parser(sub) -> None:
    from harness.commands.flags import _positive_int
    from harness.core.runner import CI_METHODS

    p = sub.add_parser("leaderboard", help="build, evaluate and render a leaderboard spec")
    p.add_argument("--spec", default="leaderboards/default.yaml")
    p.add_argument("--device", default=None)
    p.add_argument("--ci", default=None, choices=list(CI_METHODS), help="score CIs, overriding the spec's `ci:` (default auto)")
    p.add_argument("--correction", default=None, choices=["holm", "bh", "none"],
                   help="multiplicity correction of the stars, overriding the spec's `correction:` (default holm)")
    p.add_argument("--allow-missing", action="store_true",
                   help="scored-runs rows: leave torn or malformed samples.jsonl lines out (counted) instead of stopping")
    p.add_argument("--seeds", type=_seed_list, default=None,
                   help="replace the seeds of every seeded row (e.g. 0,1,2); the board is written to "
                        "<spec dir>/<name>-seeds/ beside the spec's own (builds are shared: seed<k> folders)")
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="recipe checkpoints to build at once, each in its own process with cores/jobs threads "
                        "(on a 2-core CPU, 2 finish the default board's builds sooner than 1)")
    p.set_defaults(func=cmd_leaderboard)
