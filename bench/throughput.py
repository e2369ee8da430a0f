"""Eval throughput on one checkpoint and one item set: our eval path vs lmms-eval's wrapper vs a
naive per-item `model.generate` loop, and the cost of N sampled outputs per item.

    .venv/bin/python bench/throughput.py                     # tiny, geoqa, 32 items (30-60 s on 2 CPU cores)
    .venv/bin/harness bench --task mmbench --limit 64 --out bench/results/throughput.json
    python bench/throughput.py --config qwen2-vl-2b --device cuda --dtype bfloat16 --limit 128 --batch-size 32

Measured, in this order, in one process after a warm-up call (one-time import and allocation
costs excluded), each with a fresh generation cache so nothing is read back:
  ours     `harness.core.runner.evaluate` (batched by prompt length, left padded), greedy
  bare     the ceiling: one batched `model.generate` per batch of the same requests (same order,
           batch size and input builder), no runner, cache, log or scoring; ours/bare >= 0.9 is the
           target
  lmms     lmms-eval's `llava_hf` / `qwen2_vl` model on the same checkpoint and items, when
           lmms-eval is importable, at its largest supported batch size (llava_hf: 1; qwen2_vl:
           --batch-size) (LLaVA gets our rendered prompt, so its greedy outputs must
           match; Qwen2-VL's wrapper builds its own prompt, so mismatches there are expected)
  naive    one `model.generate` call per item, same inputs as ours, greedy
  sampled  ours with --samples N at --temperature: prompt and image encoded once per item, the N
           rows attend to one shared copy of the prompt's keys/values (harness/models/shared_prefix.py)
  sampled_copied  the same, with the prompt's prefilled cache copied to each of the N rows
  sampled_rs  the same N samples with `num_return_sequences` (the prompt prefilled N times), for
           comparison
  <label>, <label>_sampled  with --served LABEL=URL (repeatable): the runner through the OpenAI
           backend against a server of the same checkpoint (`transformers serve`, vLLM), greedy and
           with the N samples; the server is started beforehand (README: Served models)
Greedy outputs are compared across paths by item id. Peak memory is the peak RSS during the
phase on a CPU (sampled every 10 ms) or torch.cuda.max_memory_allocated on a GPU. With --repeats R
the phases take turns R times; a phase reports its fastest wall time and its median CPU seconds
(the steadier figure when other processes share the CPU), and the ratios use both. `--config
qwen2-vl-2b` / `llava-1.5-7b` build a model of that size with random bf16 weights and the tiny
tokenizer (bench/random_models.py); every path then decodes the full --max-new-tokens
(min_new_tokens), and --layers N cuts the depth for a CPU smoke test.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

CONFIGS = ("tiny", "qwen2-vl-2b", "llava-1.5-7b")
LMMS_MAX_BATCH = {"llava_hf": 1}  # lmms-eval's llava_hf asserts batch size 1; its qwen2_vl batches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="harness bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="tiny", help="checkpoint (`tiny`, a folder); ignored with another --config")
    p.add_argument("--config", default="tiny", choices=CONFIGS,
                   help="qwen2-vl-2b / llava-1.5-7b: build a random model of that size (bench/random_models.py; for GPUs)")
    p.add_argument("--layers", type=int, default=None,
                   help="cut a --config model to this many text and vision layers (a CPU smoke test)")
    p.add_argument("--build-dir", default=None, help="where a --config model is saved (default: a temp folder)")
    p.add_argument("--task", default="geoqa")
    p.add_argument("--data-dir", default=None,
                   help="benchmark data root (default: $HARNESS_DATA, else the bundled mini-sets)")
    p.add_argument("--limit", type=int, default=32, help="items (the first N of the test split)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per batch (harness eval's default)")
    p.add_argument("--samples", type=int, default=10, help="sampled outputs per item for the sampling cost")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's own budget")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--repeats", type=int, default=1, help="runs per phase, taken in turns; the fastest is kept")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default on a CPU: 1, so timings stay steady when other work shares "
                        "the cores; on a GPU: torch's default)")
    p.add_argument("--skip", default="",
                   help="comma-separated phases to skip: bare, lmms, naive, sampled, sampled_copied, sampled_rs")
    p.add_argument("--out", default="bench/results/throughput.json", help="JSON file to write")
    p.add_argument("--served", action="append", default=[], metavar="LABEL=URL",
                   help="also time the OpenAI backend against a server of --ckpt at URL (repeatable)")
    p.add_argument("--served-model", default=None, help="the model name the servers use (default: --ckpt's folder)")
    p.add_argument("--api-concurrency", type=int, default=8, help="requests in flight per served path")
    args = p.parse_args(argv)
    if min(args.limit, args.batch_size, args.repeats, args.layers or 1) < 1 or args.samples < 2 or args.temperature <= 0:
        p.error("--limit, --batch-size, --repeats and --layers must be >= 1, --samples >= 2 and --temperature > 0")
    return args


# ---- measurement ---------------------------------------------------------------------------------
def _rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as f:  # Linux without psutil
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory during a `with` block: CUDA allocator peak on a GPU, else sampled process RSS."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.peak_mb = 0.0

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._stop = threading.Event()
            self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._peak, _rss_bytes()) / 2**20


def measure(name: str, device: str, n_items: int,
            fn: Callable[[], dict[str, str]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Run fn once; wall and CPU seconds, items/s, peak memory; fn returns {item id: greedy output}."""
    with PeakMemory(device) as mem:
        wall, cpu = time.perf_counter(), time.process_time()
        outputs = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    row = {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "items_per_s": round(n_items / wall, 3),
           "peak_memory_mb": round(mem.peak_mb, 1), "memory_kind": "cuda_max_allocated" if mem.cuda else "rss"}
    print(f"{name:>10}: {wall:7.2f} s  {cpu:7.2f} cpu-s  {n_items / wall:8.2f} items/s  peak {mem.peak_mb:8.1f} MB",
          flush=True)
    return row, outputs


# ---- the paths -------------------------------------------------------------------------------------
def ours(backend, task, items, settings) -> dict[str, str]:
    from harness.core.runner import evaluate
    from harness.core.store import GenerationCache

    with tempfile.TemporaryDirectory() as tmp:  # a fresh cache: every output is generated
        cache = GenerationCache(Path(tmp) / "cache.sqlite")
        try:
            result = evaluate(backend, task, items, settings, Path(tmp) / "run", cache)
        finally:
            cache.close()
        return {r["id"]: r["output"] for r in result.records if r["sample"] == 0}


def _batches(backend, task, items, batch_size: int):
    """The runner's batches (by prompt length, --batch-size) with their model inputs."""
    from harness.core.images import open_image

    order = sorted(items, key=lambda it: len(task.prompt(it)))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        yield batch, backend.batch_inputs([task.prompt(it) for it in batch],
                                          [[open_image(ref) for ref in it.images] for it in batch])


def bare(backend, task, items, gen, batch_size: int) -> dict[str, str]:
    """The ceiling: one batched `model.generate` per batch of the same requests, in the runner's
    order (by prompt length) and batch size, inputs from the same builder; no runner, cache, log
    or scoring."""
    import torch

    config = backend.generation_config(gen, 1)
    outs = {}
    for batch, inputs in _batches(backend, task, items, batch_size):
        torch.manual_seed(gen.seed)
        with torch.inference_mode():
            ids = backend.model.generate(**inputs, generation_config=config)
        texts = backend.tokenizer.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        outs.update((it.id, text.strip()) for it, text in zip(batch, texts))
    return outs


def naive(backend, task, items, gen) -> dict[str, str]:
    """One generate call per item: the loop most wrappers run (batch size 1, nothing shared)."""
    import torch

    from harness.core.images import open_image

    config = backend.generation_config(gen, 1)
    outs = {}
    for it in items:
        inputs = backend.batch_inputs([task.prompt(it)], [[open_image(ref) for ref in it.images]])
        with torch.inference_mode():
            ids = backend.model.generate(**inputs, generation_config=config)
        text = backend.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        outs[it.id] = text.strip()
    return outs


def sampled_copied(backend, task, items, settings) -> dict[str, str]:
    """Ours with the prompt's prefilled cache copied N times instead of shared."""
    from harness.models.decoding import PrefillOnce, SharedPrefix

    picked = backend.decoding
    backend.decoding = PrefillOnce() if isinstance(picked, SharedPrefix) else picked
    try:
        return ours(backend, task, items, settings)
    finally:
        backend.decoding = picked


def sampled_rs(backend, task, items, gen, n: int, batch_size: int) -> dict[str, str]:
    """N samples per item through num_return_sequences (each prompt prefilled N times)."""
    import torch

    config = backend.generation_config(gen, n)
    for _, inputs in _batches(backend, task, items, batch_size):
        torch.manual_seed(gen.seed)
        with torch.inference_mode():
            backend.model.generate(**inputs, generation_config=config)
    return {}


def lmms_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lmms_eval") is not None


def lmms(backend, task, items, gen, cache_root: Path, batch_size: int,
         min_new_tokens: int | None = None) -> tuple[Callable[[], dict[str, str]], int]:
    """lmms-eval's own (simple) HF wrapper for the model family, loaded now (untimed), the call
    that feeds it the same items, and the batch size it runs: ours, or the largest the wrapper
    supports (llava_hf asserts 1).

    For LLaVA the wrapper is given our fully rendered prompt and a pass-through chat template, so
    it tokenizes the same text (its processor expands the image token); Qwen2-VL's wrapper builds
    its own messages, so its prompts differ from ours and mismatches there are expected.
    """
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    from harness.bridges.lmms import WRAPPERS, model_dir
    from harness.core.images import open_image

    name = WRAPPERS[backend.model_family]
    try:
        cls = get_model(name, force_simple=True)  # the chat variant takes message lists, not prompts
    except TypeError:  # releases before the chat/simple split
        cls = get_model(name)
    device = str(backend.device)
    batch_size = min(batch_size, LMMS_MAX_BATCH.get(name, batch_size))
    kwargs: dict[str, Any] = {"pretrained": str(model_dir(backend.ref, cache_root)), "device": device,
                              "device_map": device, "batch_size": batch_size}
    same_prompt = name == "llava_hf"
    if same_prompt:
        kwargs.update(chat_template="{{ messages[0]['content'] }}", dtype=backend.dtype)
    model = cls(**kwargs)
    if min_new_tokens:  # random weights: every row decodes the full budget, as in the other phases
        model.model.generation_config.min_new_tokens = min_new_tokens
    docs = dict(enumerate(items))
    model.task_dict = {task.name: {"test": docs}}

    def visuals(doc):
        return [open_image(ref) for ref in doc.images]

    def context(it) -> str:
        if not same_prompt:
            return task.prompt(it)
        content = [{"type": "image"}] * len(it.images) + [{"type": "text", "text": task.prompt(it)}]
        return backend.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                     add_generation_prompt=True)

    def requests() -> list:  # fresh each run: the wrapper edits the gen_kwargs it is given
        gen_kwargs = {"max_new_tokens": gen.max_new_tokens, "temperature": 0, "do_sample": False}
        return [Instance(request_type="generate_until", idx=0, metadata={"task": task.name, "doc_id": i, "repeats": 1},
                         arguments=(context(it), dict(gen_kwargs), visuals, i, task.name, "test"))
                for i, it in docs.items()]

    model.generate_until(requests()[:1])  # warm-up, as ours had: first-call costs are not throughput

    def run() -> dict[str, str]:
        outputs = model.generate_until(requests())
        return {it.id: str(getattr(out, "text", out)).strip() for it, out in zip(items, outputs)}

    return run, batch_size


def mismatches(reference: dict[str, str], other: dict[str, str]) -> list[str]:
    return sorted((i for i in reference if other.get(i) != reference[i]), key=str)


# ---- main ------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint
    from harness.core.runner import EvalSettings
    from harness.core.task import get_task, resolve_data_dir
    from harness.core.types import GenConfig, Prompt

    task = get_task(args.task)
    if task.request_type != "generate":
        raise SystemExit(f"{args.task} scores by likelihood, not generation; pick a generation task")
    items = task.load(resolve_data_dir(args.data_dir), "test")[: args.limit]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # Several OpenMP threads on cores that other processes also use wait on each other at every
    # op (a run can take 10x longer at random); one thread per process keeps the ratios steady.
    threads = args.threads or (1 if device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if args.config != "tiny":
            import importlib.util

            # bench/ is no package and `harness bench` loads this file by path: so is its neighbour.
            spec = importlib.util.spec_from_file_location("bench_random_models", Path(__file__).with_name("random_models.py"))
            random_models = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(random_models)
            build = random_models.build
            depth = f"-{args.layers}layers" if args.layers else ""
            ckpt = str(build(args.config, Path(args.build_dir or tmp) / f"{args.config}{depth}-random", device, args.layers))
        backend = HFBackend(resolve_checkpoint(ckpt), device=device, dtype=args.dtype)
        greedy = EvalSettings(gen=GenConfig(max_new_tokens=args.max_new_tokens), batch_size=args.batch_size)
        gen = greedy.gen_for(task)
        forced = gen.max_new_tokens if args.config != "tiny" else None
        if forced:  # random weights: no early end token, every path decodes the full budget
            backend.model.generation_config.min_new_tokens = forced
        sampling = EvalSettings(gen=GenConfig(max_new_tokens=gen.max_new_tokens, temperature=args.temperature),
                                n_samples=args.samples, batch_size=args.batch_size)
        skip = {s.strip() for s in args.skip.split(",") if s.strip()}
        n = len(items)
        result: dict[str, Any] = {
            "checkpoint": backend.name, "config": args.config, "layers": args.layers, "full_length": bool(forced),
            "model_family": backend.model_family,
            "parameters": sum(p.numel() for p in backend.model.parameters()), "task": task.name, "items": n,
            "batch_size": args.batch_size, "max_new_tokens": gen.max_new_tokens, "samples": args.samples,
            "temperature": args.temperature, "device": str(backend.device), "dtype": backend.dtype,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "paths": {},
        }
        if backend.device.startswith("cuda"):
            result["gpu"] = torch.cuda.get_device_name(backend.device)
        backend.generate([Prompt(task.prompt(items[0]), items[0].images)], gen)  # warm-up: kernels, lazy imports
        phases: dict[str, Callable[[], dict[str, str]]] = {"ours": lambda: ours(backend, task, items, greedy)}
        if "bare" not in skip:
            phases["bare"] = lambda: bare(backend, task, items, gen, args.batch_size)
        paths = result["paths"]
        lmms_batch = None
        if "lmms" in skip:
            paths["lmms"] = {"status": "skipped"}
        elif not lmms_available():
            paths["lmms"] = {"status": "not installed (pip install -e '.[lmms]')"}
        else:
            try:
                phases["lmms"], lmms_batch = lmms(backend, task, items, gen, Path(tmp) / "lmms-models",
                                                  args.batch_size, forced)
            except Exception as e:  # a wrapper that cannot load this checkpoint is a result, not a crash
                paths["lmms"] = {"status": f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        if "naive" not in skip:
            phases["naive"] = lambda: naive(backend, task, items, gen)
        if "sampled" not in skip:
            phases["sampled"] = lambda: ours(backend, task, items, sampling)
        if "sampled_copied" not in skip:
            phases["sampled_copied"] = lambda: sampled_copied(backend, task, items, sampling)
        if "sampled_rs" not in skip:
            phases["sampled_rs"] = lambda: sampled_rs(backend, task, items, sampling.gen, args.samples, args.batch_size)
        for label, url in (spec.split("=", 1) for spec in args.served):
            from harness.models.openai_backend import OpenAIBackend, ServedSettings

            served = ServedSettings(api_base=url, api_concurrency=args.api_concurrency)
            api = OpenAIBackend(resolve_checkpoint(f"openai:{args.served_model or backend.ref.path}", api_base=url), served)
            phases[label] = lambda api=api: ours(api, task, items, greedy)
            phases[f"{label}_sampled"] = lambda api=api: ours(api, task, items, sampling)
        # Phases take turns, --repeats times; each keeps its fastest run (the one least slowed by
        # other work on a shared machine) and lists every run's seconds.
        greedy_outputs: dict[str, dict[str, str]] = {}
        served_labels = {spec.split("=", 1)[0] for spec in args.served}
        for _ in range(args.repeats):
            for name, fn in phases.items():
                row, outputs = measure(name, device, n, fn)
                best = paths.setdefault(name, {**row, "runs": [], "cpu_runs": []})
                best["runs"].append(row["seconds"])
                best["cpu_runs"].append(row["cpu_seconds"])
                # Wall seconds (and items/s) of the fastest run, the median of the CPU seconds, the
                # largest peak memory.
                cpu = sorted(best["cpu_runs"])
                best.update(seconds=min(best["runs"]), items_per_s=round(n / min(best["runs"]), 3),
                            cpu_seconds=round((cpu[(len(cpu) - 1) // 2] + cpu[len(cpu) // 2]) / 2, 3),
                            peak_memory_mb=max(best["peak_memory_mb"], row["peak_memory_mb"]))
                if name in ("ours", "bare", "lmms", "naive") or name in served_labels:
                    greedy_outputs.setdefault(name, outputs)
        if "lmms" in phases:
            paths["lmms"].update(status="ok", batch_size=lmms_batch)
        result["greedy_mismatches"] = {k: mismatches(greedy_outputs["ours"], v)
                                       for k, v in greedy_outputs.items() if k != "ours"}
        result["ratios"] = ratios(paths)
        for label in served_labels:  # a server against the in-process runner, greedy and N-sample
            for suffix in ("", "_sampled"):
                mine, theirs = paths.get(label + suffix, {}), paths.get("sampled" if suffix else "ours", {})
                if mine.get("items_per_s") and theirs.get("items_per_s"):
                    result["ratios"][f"{label}{suffix}_vs_ours_items_per_s"] = round(mine["items_per_s"] / theirs["items_per_s"], 3)
    return result


def ratios(paths: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Speed of ours over the others (items/s, or CPU seconds spent: higher = ours faster) and the
    cost of N samples over one greedy pass (wall and CPU seconds)."""
    def get(name: str, field: str) -> float | None:
        return paths.get(name, {}).get(field)

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    return {
        "ours_vs_bare_items_per_s": div(get("ours", "items_per_s"), get("bare", "items_per_s")),
        "ours_vs_bare_cpu": div(get("bare", "cpu_seconds"), get("ours", "cpu_seconds")),
        "ours_vs_naive_items_per_s": div(get("ours", "items_per_s"), get("naive", "items_per_s")),
        "ours_vs_naive_cpu": div(get("naive", "cpu_seconds"), get("ours", "cpu_seconds")),
        "ours_vs_lmms_items_per_s": div(get("ours", "items_per_s"), get("lmms", "items_per_s")),
        "ours_vs_lmms_cpu": div(get("lmms", "cpu_seconds"), get("ours", "cpu_seconds")),
        "sampled_vs_greedy_seconds": div(get("sampled", "seconds"), get("ours", "seconds")),
        "sampled_vs_greedy_cpu_seconds": div(get("sampled", "cpu_seconds"), get("ours", "cpu_seconds")),
        "sampled_copied_vs_greedy_seconds": div(get("sampled_copied", "seconds"), get("ours", "seconds")),
        "sampled_copied_vs_greedy_cpu_seconds": div(get("sampled_copied", "cpu_seconds"), get("ours", "cpu_seconds")),
        "sampled_rs_vs_greedy_seconds": div(get("sampled_rs", "seconds"), get("ours", "seconds")),
        "sampled_rs_vs_greedy_cpu_seconds": div(get("sampled_rs", "cpu_seconds"), get("ours", "cpu_seconds")),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    for key, value in result["ratios"].items():
        print(f"{key}: {value if value is not None else 'n/a'}")
    for path, ids in result["greedy_mismatches"].items():
        print(f"greedy mismatches ours vs {path}: {len(ids)}{' ' + ', '.join(ids[:10]) if ids else ''}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
