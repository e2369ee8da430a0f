"""Time the batched leaderboard statistics: `python bench/stats_speed.py [--checkpoints 20 ...]`.

Builds random 0/1 unit scores for C checkpoints x T tasks x N units and times
`harness.stats.board.leaderboard_frame` (all CIs, paired deltas vs the baseline, corrections, rank intervals).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from harness.stats.board import leaderboard_frame


def random_scores(checkpoints: int, tasks: int, units: int, seed: int) -> dict[str, dict[str, dict[str, float]]]:
    rng = np.random.default_rng(seed)
    ids = [f"q{i}" for i in range(units)]
    board: dict[str, dict[str, dict[str, float]]] = {}
    for c in range(checkpoints):
        accuracy = 0.5 + 0.01 * c  # small real differences so ranks and deltas vary
        board[f"ckpt{c:02d}"] = {
            f"task{t}": dict(zip(ids, (rng.random(units) < accuracy).astype(float).tolist()))
            for t in range(tasks)
        }
    return board


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    board = random_scores(args.checkpoints, args.tasks, args.units, seed=0)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        frame = leaderboard_frame(board, baseline="ckpt00", B=args.resamples, seed=0)
        times.append(time.perf_counter() - start)
    print(
        f"{args.checkpoints} checkpoints x {args.tasks} tasks x {args.units} units, "
        f"B={args.resamples}: best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s "
        f"over {args.repeats} runs ({len(frame)} rows)"
    )


if __name__ == "__main__":
    main()
