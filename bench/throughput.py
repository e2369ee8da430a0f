"""Eval throughput on one checkpoint and one item set: our eval path vs lmms-eval's wrapper vs a
naive per-item `model.generate` loop, and the cost of N sampled outputs per item.

    .venv/bin/python bench/throughput.py                     # tiny, geoqa, 32 items (30-60 s on 2 CPU cores)
    .venv/bin/harness bench --task mmbench --limit 64 --out bench/results/throughput.json
    python bench/throughput.py --config qwen2-vl-2b --device cuda --dtype bfloat16 --limit 128 --batch-size 32

Measured, in this order, in one process after a warm-up call (one-time import and allocation
costs excluded), each with a fresh generation cache so nothing is read back:
  ours     `harness.core.runner.evaluate` (batched by prompt length, left padded), greedy
  lmms     lmms-eval's `llava_hf` / `qwen2_vl` model on the same checkpoint and items, when
           lmms-eval is importable (LLaVA gets our rendered prompt, so its greedy outputs must
           match; Qwen2-VL's wrapper builds its own prompt, so mismatches there are expected)
  naive    one `model.generate` call per item, same inputs as ours, greedy
  sampled  ours with --samples N at --temperature: prompt and image encoded once per item, the N
           rows attend to one shared copy of the prompt's keys/values (harness/models/shared_prefix.py)
  sampled_copied  the same, with the prompt's prefilled cache copied to each of the N rows
  sampled_rs  the same N samples with `num_return_sequences` (the prompt prefilled N times), for
           comparison
Greedy outputs are compared across paths by item id. Peak memory is the peak RSS during the
phase on a CPU (sampled every 10 ms) or torch.cuda.max_memory_allocated on a GPU. With --repeats R
the phases take turns R times; a phase reports its fastest wall time and its median CPU seconds
(the steadier figure when other processes share the CPU), and the ratios use both. `--config
qwen2-vl-2b` builds a Qwen2-VL-2B-sized model (random weights, 151,936-token vocabulary, 448 px
images = 256 vision tokens) with the tiny tokenizer; random weights rarely stop early, so every
row decodes the full --max-new-tokens.
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

CONFIGS = ("tiny", "qwen2-vl-2b")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="harness bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="tiny", help="checkpoint (`tiny`, a folder); ignored with --config qwen2-vl-2b")
    p.add_argument("--config", default="tiny", choices=CONFIGS, help="qwen2-vl-2b: build a random 2B model (for GPUs)")
    p.add_argument("--build-dir", default=None, help="where --config qwen2-vl-2b is saved (default: a temp folder)")
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
    p.add_argument("--skip", default="", help="comma-separated phases to skip: lmms, naive, sampled, sampled_copied, sampled_rs")
    p.add_argument("--out", default="bench/results/throughput.json", help="JSON file to write")
    args = p.parse_args(argv)
    if min(args.limit, args.batch_size, args.repeats) < 1 or args.samples < 2 or args.temperature <= 0:
        p.error("--limit, --batch-size and --repeats must be >= 1, --samples >= 2 and --temperature > 0")
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
    shared, backend.shared_prefix = backend.shared_prefix, False
    try:
        return ours(backend, task, items, settings)
    finally:
        backend.shared_prefix = shared


def sampled_rs(backend, task, items, gen, n: int, batch_size: int) -> dict[str, str]:
    """N samples per item through num_return_sequences (each prompt prefilled N times)."""
    import torch

    from harness.core.images import open_image

    config = backend.generation_config(gen, n)
    order = sorted(items, key=lambda it: len(task.prompt(it)))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        inputs = backend.batch_inputs([task.prompt(it) for it in batch],
                                      [[open_image(r) for r in it.images] for it in batch])
        torch.manual_seed(gen.seed)
        with torch.inference_mode():
            backend.model.generate(**inputs, generation_config=config)
    return {}


def lmms_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lmms_eval") is not None


def lmms(backend, task, items, gen, cache_root: Path) -> Callable[[], dict[str, str]]:
    """lmms-eval's own (simple) HF wrapper for the model family, loaded now (untimed), and the call
    that feeds it the same items; it runs one item per generate call (llava_hf asserts batch size 1).

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
    kwargs: dict[str, Any] = {"pretrained": str(model_dir(backend.ref, cache_root)), "device": device,
                              "device_map": device, "batch_size": 1}
    same_prompt = name == "llava_hf"
    if same_prompt:
        kwargs.update(chat_template="{{ messages[0]['content'] }}", dtype=backend.dtype)
    model = cls(**kwargs)
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

    return run


def mismatches(reference: dict[str, str], other: dict[str, str]) -> list[str]:
    return sorted((i for i in reference if other.get(i) != reference[i]), key=str)


# ---- the 2B-sized model ----------------------------------------------------------------------------
def qwen2vl_2b_config(tok):
    """Qwen2-VL-2B's published shape (28 x 1536 text layers, 12 heads / 2 KV heads, 151,936 vocab,
    tied embeddings; 32 x 1280 vision blocks), special tokens from `tok` (a tiny tokenizer)."""
    from transformers import Qwen2VLConfig

    from trainers.tiny_model import QWEN_TOKENS

    ids = {k: tok.convert_tokens_to_ids(v) for k, v in QWEN_TOKENS.items()}
    return Qwen2VLConfig(
        vision_config=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        text_config=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                         max_window_layers=28, bos_token_id=None, eos_token_id=ids["im_end"], pad_token_id=ids["pad"],
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                         tie_word_embeddings=True),
        image_token_id=ids["image"], video_token_id=ids["video"], vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"], tie_word_embeddings=True,
    )


def build_qwen2vl_2b(out: Path, device: str) -> Path:
    """A Qwen2-VL-2B-sized checkpoint with random bf16 weights and the tiny tokenizer, saved to `out`."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2VLForConditionalGeneration
    from transformers import Qwen2VLImageProcessorPil

    from harness.models.checkpoints import tiny_path
    from trainers.tiny_model import for_arch

    if (out / "config.json").is_file():
        return out
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = for_arch(AutoTokenizer.from_pretrained(tiny_path()), "qwen2vl")
    torch.manual_seed(0)
    with torch.device(device):  # initialising 2B parameters on a GPU takes seconds, on a CPU minutes
        model = Qwen2VLForConditionalGeneration._from_config(qwen2vl_2b_config(tok), dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    side = 448  # 32 x 32 patches of 14 px, merged 2 x 2: 256 vision tokens per image
    Qwen2VLImageProcessorPil(min_pixels=side * side, max_pixels=side * side, patch_size=14, merge_size=2,
                             temporal_patch_size=2).save_pretrained(out)
    del model
    return out


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
        if args.config == "qwen2-vl-2b":
            ckpt = str(build_qwen2vl_2b(Path(args.build_dir or tmp) / "qwen2-vl-2b-random", device))
        backend = HFBackend(resolve_checkpoint(ckpt), device=device, dtype=args.dtype)
        greedy = EvalSettings(gen=GenConfig(max_new_tokens=args.max_new_tokens), batch_size=args.batch_size)
        gen = greedy.gen_for(task)
        sampling = EvalSettings(gen=GenConfig(max_new_tokens=gen.max_new_tokens, temperature=args.temperature),
                                n_samples=args.samples, batch_size=args.batch_size)
        skip = {s.strip() for s in args.skip.split(",") if s.strip()}
        n = len(items)
        result: dict[str, Any] = {
            "checkpoint": backend.name, "config": args.config, "model_family": backend.model_family,
            "parameters": sum(p.numel() for p in backend.model.parameters()), "task": task.name, "items": n,
            "batch_size": args.batch_size, "max_new_tokens": gen.max_new_tokens, "samples": args.samples,
            "temperature": args.temperature, "device": str(backend.device), "dtype": backend.dtype,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "paths": {},
        }
        if backend.device.startswith("cuda"):
            result["gpu"] = torch.cuda.get_device_name(backend.device)
        backend.generate([Prompt(task.prompt(items[0]), items[0].images)], gen)  # warm-up: kernels, lazy imports
        phases: dict[str, Callable[[], dict[str, str]]] = {"ours": lambda: ours(backend, task, items, greedy)}
        paths = result["paths"]
        if "lmms" in skip:
            paths["lmms"] = {"status": "skipped"}
        elif not lmms_available():
            paths["lmms"] = {"status": "not installed (pip install -e '.[lmms]')"}
        else:
            try:
                phases["lmms"] = lmms(backend, task, items, gen, Path(tmp) / "lmms-models")
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
        # Phases take turns, --repeats times; each keeps its fastest run (the one least slowed by
        # other work on a shared machine) and lists every run's seconds.
        greedy_outputs: dict[str, dict[str, str]] = {}
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
                if name in ("ours", "lmms", "naive"):
                    greedy_outputs.setdefault(name, outputs)
        if "lmms" in phases:
            paths["lmms"]["status"] = "ok"
        result["greedy_mismatches"] = {k: mismatches(greedy_outputs["ours"], v)
                                       for k, v in greedy_outputs.items() if k != "ours"}
        result["ratios"] = ratios(paths)
    return result


def ratios(paths: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Speed of ours over the others (items/s, or CPU seconds spent: higher = ours faster) and the
    cost of N samples over one greedy pass (wall and CPU seconds)."""
    def get(name: str, field: str) -> float | None:
        return paths.get(name, {}).get(field)

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    return {
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
