"""Cost of an unchanged leaderboard re-run relative to the first run (target: <= 5%).

    .venv/bin/python bench/leaderboard_rerun.py [--limit 100] [--tasks geoqa,aokvqa_mc] [--out bench/results/rerun.json]

Writes a small spec (tiny and tiny+blind on the tasks, the first --limit items) into a temp
folder, runs `harness leaderboard` on it twice as a user would (fresh processes, output and
generation cache in the temp folder), and reports wall and CPU seconds (user + sys of the child)
of both runs and their ratios. CPU seconds are the steadier figure on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--tasks", default="geoqa,aokvqa_mc")
    parser.add_argument("--out", default="bench/results/rerun.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "small.yaml"
        spec.write_text(
            f"name: small\nbaseline: tiny\ncheckpoints: [tiny]\nblind: [tiny]\ntasks: [{args.tasks}]\n"
            f"limit: {args.limit}\noutput_dir: {tmp}/runs\n", encoding="utf-8")
        cmd = [sys.executable, "-m", "harness", "leaderboard", "--spec", str(spec)]
        first, again = timed(cmd), timed(cmd)
    result = {"spec": {"checkpoints": ["tiny", "tiny+blind"], "tasks": args.tasks.split(","), "limit": args.limit},
              "first": first, "rerun": again,
              "rerun_vs_first_seconds": round(again["seconds"] / first["seconds"], 4),
              "rerun_vs_first_cpu_seconds": round(again["cpu_seconds"] / first["cpu_seconds"], 4)}
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
