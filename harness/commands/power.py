"""`harness power`: how many items a comparison needs, from a pilot run's samples.

    harness power --task geoqa --run runs/tiny/geoqa                         # MDE at the pilot's n
    harness power --task geoqa --run runs/tiny/geoqa --vs runs/sft/geoqa --delta 3   # n for 3 points

The spread of a paired difference per unit, s2 = mean((a_i - b_i)^2), decides everything
(harness.stats.ci.mde). With `--vs` (a second run on the same items) it is measured: for 0/1 items it
is the discordant rate. With one run it is 2 var(score), what two models with this accuracy and
independent errors would give; correlated models (a fine-tune and its base) disagree less, so this
is conservative. Clustered units (MMBench's circular copies in lmudata_mc) count per cluster.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.commands.common import add_task_options, make_tasks
from harness.commands.flags import _positive_int
from harness.core.text import visible
from harness.errors import HarnessError

MIN_DELTA = 0.01  # points; a smaller effect needs more units than any study has (and overflows the sizing)


def unit_scores(task: Any, items: dict[str, Any], run_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    """({unit id: score}, {unit id: cluster}) of a run folder's samples, re-scored by the task's
    current rule (harness.core.rundir.read_run)."""
    import sys

    from harness.core.rundir import read_run

    if not (run_dir / "samples.jsonl").is_file():
        raise HarnessError(f"pilot run not found: {run_dir / 'samples.jsonl'}; run `harness eval` (or `harness score`) "
                           f"into {run_dir} first")
    run = read_run(run_dir, task, items, unknown_ids="skip")
    for note in run.notes():
        print(f"warning: {note}", file=sys.stderr)
    if not run.records:
        raise HarnessError(f"{run.samples_path}: no samples for items of task {task.name}; is it a {task.name} run?")
    units = run.units()
    return {u.id: u.score for u in units}, {u.id: u.cluster for u in units if u.cluster is not None}


def spread(a: dict[str, float], b: dict[str, float] | None, clusters: dict[str, str]) -> tuple[float, int, str]:
    """(s2, n units, how s2 was found) for paired differences of a and b (or a with itself, independent)."""
    import numpy as np

    ids = sorted(a if b is None else a.keys() & b.keys())
    if not ids:
        raise HarnessError("the two pilot runs share no items; run both on the same task and data")
    xa = np.array([a[i] for i in ids])
    d = xa - np.array([b[i] for i in ids]) if b is not None else xa - xa.mean()
    if clusters:  # per cluster, scaled to the mean cluster size (the ratio estimator's linearisation)
        idx = np.unique([clusters.get(i, i) for i in ids], return_inverse=True)[1].ravel()
        d = np.bincount(idx, weights=d) / (len(ids) / (idx.max() + 1))
    n = d.size
    if b is not None:
        return float(np.mean(d ** 2)), n, "measured paired differences"
    return 2 * float(np.mean(d ** 2)), n, "2 var(score): independent errors assumed (conservative); pass --vs to measure"


def power_lines(task: Any, items: dict[str, Any], run: Path, vs: Path | None, n: int | None,
                delta: float | None, alpha: float = 0.05, power: float = 0.8) -> list[str]:
    from harness.stats.ci import mde, n_for

    a, clusters = unit_scores(task, items, run)
    b = unit_scores(task, items, vs)[0] if vs is not None else None
    s2, n_pilot, how = spread(a, b, clusters)
    if s2 <= 0:
        raise HarnessError(f"{run}: every unit scores the same ({'and agrees with --vs' if vs else 'no spread'}); "
                           "a pilot needs some variation to size a study")
    unit = "clusters" if clusters else "units"
    lines = [f"task {task.name}: pilot {run} ({n_pilot} {unit}, score {100 * sum(a.values()) / len(a):.1f}%)"
             + (f" vs {vs}" if vs else ""),
             f"s2 (mean squared paired difference per unit) = {s2:.4f} [{how}]",
             f"tests: two-sided, alpha {alpha:g}, power {power:.0%}, one comparison (a board's Holm correction needs more)"]
    for size in sorted({n_pilot, *([n] if n else [])}):
        lines.append(f"n = {size}: minimum detectable effect {mde(s2, size, alpha, power):.1f} points")
    for d in [delta] if delta else [1.0, 2.0, 5.0, 10.0]:
        lines.append(f"delta = {d:g} points: n = {n_for(d, s2, alpha, power)} {unit} needed")
    return lines


def run_power(args: Any, task: Any) -> None:
    from harness.core.task import resolve_data_dir

    if args.n is not None and args.n < 2:
        raise HarnessError(f"--n {args.n} must be at least 2")
    if args.delta is not None and not MIN_DELTA <= args.delta <= 100:  # nan fails the comparison too
        raise HarnessError(f"--delta {args.delta} must be between {MIN_DELTA} and 100 points")
    items = task.items_by_id(resolve_data_dir(args.data_dir))
    for line in power_lines(task, items, Path(args.run), Path(args.vs) if args.vs else None, args.n, args.delta):
        print(visible(line))  # the pilot's path may hold terminal escapes


def cmd_power(args: Any) -> int:
    (task,) = make_tasks([args.task], args)
    run_power(args, task)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("power", help="items needed to detect an effect, from a pilot run's samples (MDE at 80%% power)")
    p.add_argument("--task", required=True)
    p.add_argument("--run", required=True, help="pilot run folder with samples.jsonl (e.g. runs/tiny/geoqa)")
    p.add_argument("--vs", default=None, help="a second run on the same items: measures how often the two disagree")
    p.add_argument("--n", type=_positive_int, default=None, help="also give the MDE at this many units")
    p.add_argument("--delta", type=float, default=None, help="effect in points: how many units detect it")
    add_task_options(p)
    p.set_defaults(func=cmd_power)
