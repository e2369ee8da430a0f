"""Eval throughput of `harness eval` on a checkpoint: items/s by batch size, and the cost of N samples.

    .venv/bin/python bench/eval_speed.py [--ckpt tiny] [--task geoqa] [--items 96] [--out bench/results/eval_speed.json]

Each configuration runs in a fresh output folder (no cache), in this one process, after one
warm-up batch, so the numbers compare like with like on the same machine.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="tiny")
    parser.add_argument("--task", default="geoqa")
    parser.add_argument("--items", type=int, default=96)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--out", default="bench/results/eval_speed.json")
    args = parser.parse_args()

    import torch

    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.core.runner import EvalSettings, evaluate
    from harness.core.store import GenerationCache
    from harness.core.task import BUNDLED_DATA, get_task
    from harness.core.types import GenConfig

    task = get_task(args.task)
    items = task.load(BUNDLED_DATA, "test")[: args.items]
    backend = HFBackend(resolve_checkpoint(args.ckpt))
    results = {"ckpt": args.ckpt, "task": args.task, "items": len(items), "threads": torch.get_num_threads(),
               "device": str(backend.device), "runs": []}

    def timed(settings: EvalSettings) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            cache = GenerationCache(Path(tmp) / "cache.sqlite")
            start = time.perf_counter()
            evaluate(backend, task, items[: settings.limit], settings, Path(tmp) / "run", cache)
            cache.close()
            return time.perf_counter() - start

    timed(EvalSettings(batch_size=8, limit=8))  # warm-up
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        secs = timed(EvalSettings(batch_size=bs))
        results["runs"].append({"mode": "greedy", "batch_size": bs, "seconds": round(secs, 2),
                                "items_per_s": round(len(items) / secs, 2)})
        print(results["runs"][-1], flush=True)
    bs = max(int(b) for b in args.batch_sizes.split(","))
    greedy = next(r["seconds"] for r in results["runs"] if r["batch_size"] == bs)
    secs = timed(EvalSettings(gen=GenConfig(temperature=0.8), n_samples=args.samples, batch_size=bs))
    results["runs"].append({"mode": f"{args.samples} samples", "batch_size": bs, "seconds": round(secs, 2),
                            "items_per_s": round(len(items) / secs, 2),
                            "cost_vs_greedy": round(secs / greedy, 2)})
    print(results["runs"][-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
