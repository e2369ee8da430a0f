"""`harness view` and `harness diff`: the sample viewer's commands (harness.report.viewer does the work)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.core.text import visible
from harness.errors import HarnessError


def cmd_view(args: argparse.Namespace) -> int:
    from harness.core.outputs import check_output_folder
    from harness.report.viewer import find_runs, write_view

    check_output_folder(args.out, "view")  # a new or empty folder, or one harness view wrote
    runs = find_runs(Path(args.run_dir))
    vs = None
    if args.vs:
        base = Path(args.vs)
        if (base / "samples.jsonl").is_file():
            if len(runs) != 1:
                raise HarnessError(f"--vs {base} is one run but {args.run_dir} holds {len(runs)}; "
                                   "give the baseline's checkpoint folder")
            vs = [base]
        else:
            vs = [base / r.name for r in runs]
            missing = [str(p) for p in vs if not (p / "samples.jsonl").is_file()]
            if missing:
                raise HarnessError(f"--vs {base} has no run {missing[0]}; evaluate the baseline on the same task")
    for path in write_view(runs, Path(args.out), vs, args.data_dir):
        print(f"wrote {visible(path)}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.report.viewer import category_table, diff_table, load_run

    def pick(path: str) -> list:
        """One run (a run folder, or a checkpoint folder holding <task>/), or a seeded build's runs
        (a folder of seed<k>/<task>/ folders, as the leaderboard writes them)."""
        root = Path(path)
        if (root / "samples.jsonl").is_file():
            return [load_run(root, args.data_dir)]
        if (root / args.task / "samples.jsonl").is_file():
            return [load_run(root / args.task, args.data_dir)]
        seeds = sorted((p for p in root.glob(f"seed*/{args.task}") if (p / "samples.jsonl").is_file()
                        and p.parent.name[4:].isdigit()), key=lambda p: int(p.parent.name[4:]))
        if not seeds:
            raise HarnessError(f"{path} has no {args.task} run; give a run folder, a folder holding {args.task}/, "
                               f"or a seeded build's folder of seed<k>/{args.task}/")
        if len(seeds) == 1:
            return [load_run(seeds[0], args.data_dir, label=f"{root.name} ({seeds[0].parent.name})")]
        return [load_run(p, args.data_dir, label=f"{root.name} ({len(seeds)} seeds)") for p in seeds]

    a, b = pick(args.run_a), pick(args.run_b)
    if {r.task.name for r in a + b} != {args.task}:
        raise HarnessError(f"--task {args.task} but the runs are {', '.join(sorted({r.task.name for r in a + b}))}; "
                           "name their task")
    console = Console()
    if len(a) == len(b) == 1:
        console.print(diff_table(a[0], b[0], first=args.first))
    else:
        console.print("flips are listed per run: give one seed's folder (seed<k>) on each side to see them")
    console.print(category_table(a, b))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("view", help="static HTML sample viewer of a run (every item, output, score; flips with --vs)",
                       description="One self-contained page per checkpoint x task (works from file://): filters, "
                                   "search, sorting, thumbnails; with --vs, a page of the units that flipped.")
    p.add_argument("run_dir", help="a run folder (samples.jsonl + summary.json) or a checkpoint folder of them")
    p.add_argument("--vs", default=None, help="the baseline's run (or checkpoint) folder: also write flips pages")
    p.add_argument("--out", required=True, help="folder for the pages")
    p.add_argument("--data-dir", default=None, help="benchmark data root (default: the run's own, else $HARNESS_DATA)")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("diff", help="items that flipped between two runs of a task, and the paired difference "
                                    "per category (rich tables)")
    p.add_argument("run_a", help="run (or checkpoint) folder: the treatment; a folder of seed<k>/ runs: its seeds")
    p.add_argument("run_b", help="run (or checkpoint) folder: the baseline; a folder of seed<k>/ runs: its seeds")
    p.add_argument("--task", required=True, help="task name (the run folder's name inside a checkpoint folder)")
    p.add_argument("--first", type=int, default=20, help="show the first N flipped items (default 20)")
    p.add_argument("--data-dir", default=None, help="benchmark data root (default: the runs' own)")
    p.set_defaults(func=cmd_diff)
