"""Self-select cost: each question's prompts answered from one prefill of their common prefix
(image and question) against every prompt prefilled whole, on the same samples, in one process.

    .venv/bin/python bench/self_select.py --ckpt tiny --task geoqa --limit 10 --repeats 2

Draws K sampled outputs per item once (as `harness compare` does), then runs `SelfSelect` at
every n with the shared prefix (`shared`) and without (`whole`), in turns --repeats times, each
with a fresh generation cache; reports CPU and wall seconds per run and the replies that differ
between the two (expected: none, at temperature 0). One torch thread: the CPU seconds are the
steadier figure where other jobs share the cores."""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="tiny", help="checkpoint, or `llava576`: a random tiny-width LLaVA with "
                   "LLaVA-1.5's image layout (CLIP 336 px / 14 px patches = 576 image tokens, image first)")
    p.add_argument("--task", default="geoqa")
    p.add_argument("--limit", type=int, default=10, help="items")
    p.add_argument("--n", default="1..10", help="n values, as `harness compare --n`")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default="bench/results/self_select_cpu.json")
    return p.parse_args(argv)


def build_llava576(root: Path) -> str:
    """The tiny's tokenizer and widths, LLaVA-1.5's vision geometry and prompt layout: the image
    tokens dominate each prompt as they do at real size (random weights: long, junk replies)."""
    import importlib.util

    from transformers import AutoTokenizer

    from harness.models.checkpoints import tiny_path
    from trainers.tiny_model import build_tiny

    spec = importlib.util.spec_from_file_location("bench_random_models", Path(__file__).with_name("random_models.py"))
    random_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(random_models)
    out = build_tiny("llava", AutoTokenizer.from_pretrained(tiny_path()), root / "llava576", image_size=336,
                     patch_size=14, max_positions=4096)
    (out / "chat_template.jinja").write_text(random_models.LLAVA15_TEMPLATE)
    return str(out)


def main(argv=None) -> int:
    import torch

    from harness.commands.compare import CompareConfig, draw_samples
    from harness.core.store import GenerationCache, atomic_write_json, read_sample_lines
    from harness.core.task import get_task, resolve_data_dir
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.self_select import ModelContext, SelfSelect
    from harness.stats.selection import parse_ns

    args = parse_args(argv)
    torch.set_num_threads(1)  # steady timings on cores other jobs share
    task = get_task(args.task)
    data = resolve_data_dir(None)
    items = task.load(data, "test")[: args.limit]
    build_dir = tempfile.TemporaryDirectory()
    ckpt = build_llava576(Path(build_dir.name)) if args.ckpt == "llava576" else args.ckpt
    backend = HFBackend(resolve_checkpoint(ckpt), device="cpu")
    config = CompareConfig(ns=parse_ns(args.n), settings=replace(CompareConfig.settings, batch_size=args.batch_size))
    runs: dict[str, list[dict]] = {"shared": [], "whole": []}
    replies: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = GenerationCache(root / "samples.sqlite")
        try:
            pool = draw_samples(backend, task, items, config, root / "samples", cache, data)
        finally:
            cache.close()
        for rep in range(args.repeats):
            for name in runs:
                run_dir = root / f"{name}{rep}"
                cache = GenerationCache(run_dir / "cache.sqlite")
                ctx = ModelContext(backend, cache, run_dir, gen=replace(config.settings.gen, temperature=0.0),
                                   batch_size=args.batch_size, data_dir=data)
                wall, cpu = time.perf_counter(), time.process_time()
                try:
                    SelfSelect(subsets=config.subsets, seed=config.seed, share_prefix=name == "shared").curve(
                        pool, config.ns, ctx)
                finally:
                    cache.close()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                runs[name].append({"cpu_seconds": round(cpu, 2), "seconds": round(wall, 2)})
                print(f"{name:>6} run {rep + 1}: {cpu:7.2f} cpu-s {wall:7.2f} s", flush=True)
                rows = read_sample_lines(run_dir / "self_select" / "samples.jsonl")
                replies.setdefault(name, {r["id"]: r["output"] for r in rows})
    median = {k: sorted(r["cpu_seconds"] for r in v)[len(v) // 2] for k, v in runs.items()}
    result = {
        "checkpoint": backend.name, "task": task.name, "items": len(pool.items), "ns": list(config.ns),
        "samples_per_item": config.k, "subsets": config.subsets, "batch_size": args.batch_size,
        "prompts": len(replies["shared"]), "torch_threads": 1, "runs": runs,
        "cpu_speedup_median": round(median["whole"] / median["shared"], 3),
        "wall_speedup_best": round(min(r["seconds"] for r in runs["whole"]) / min(r["seconds"] for r in runs["shared"]), 3),
        "differing_replies": sorted(k for k in replies["shared"] if replies["shared"][k] != replies["whole"].get(k)),
    }
    print(f"CPU speedup (median): {result['cpu_speedup_median']}x; wall (best): {result['wall_speedup_best']}x; "
          f"differing replies: {len(result['differing_replies'])} of {result['prompts']}")
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
