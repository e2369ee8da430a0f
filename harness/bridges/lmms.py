"""lmms-eval as an engine: its tasks, run offline on a local checkpoint, land in our store.

    harness eval --engine lmms-eval --ckpt tiny --tasks lmms_tasks/harness_geoqa.yaml --limit 20
    harness eval --engine lmms-eval --ckpt /ckpts/Qwen2-VL-2B-Instruct --tasks ok_vqa_val2014

`--tasks` takes lmms-eval task names or local task YAML files / folders. lmms-eval's
`simple_evaluate` runs with its `llava_hf` (LLaVA) or `qwen2_vl` / `qwen2_5_vl` wrapper, device_map
set to the device, sample logging on and the Hub offline. Its native logs go to
`runs/<ckpt>/lmms-eval-logs/` (its --log_samples layout: <model>/<date>_samples_<task>.jsonl and
<date>_results.json) and each task becomes `runs/<ckpt>/lmms-<task>/samples.jsonl` +
`summary.json` in our contract, so it gets our CIs and pairs item by item with any run on the same
ids; a leaderboard spec names them as `{lmms: TASK}` (harness/report/leaderboard.py).

Per-sample score: the task's first metric with a number per sample (or `--lmms-metric`). Tasks
whose metric only exists after aggregation (GPT-judged ones such as mmbench_en_dev) have no
per-sample score and are refused. A task exported by `harness export-lmms-task` is re-scored by
our own task class on the same outputs (`lmms_disagreements` counts samples where lmms-eval's
logged score differs; 0 expected).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from dataclasses import dataclass

from harness.bridges.lmms_import import LmmsTask, import_task_samples
from harness.core.runner import EvalSettings
from harness.core.types import GenConfig
from harness.models.checkpoints import CheckpointRef, write_processor_config
from harness.errors import HarnessError
from harness.models.families import lmms_wrappers, takes_video_processor
from harness.core.scoring import library_versions
from harness.core.store import atomic_write_json

INSTALL_HINT = "pip install '.[lmms]' (with CUDA torch; with CPU torch `make setup` installs it, see README: Bridges)"
WRAPPERS = lmms_wrappers()  # model_type -> lmms-eval model name (harness/models/families.py)


def require_lmms():
    """Import lmms-eval (and decord, which its wrappers import at load) or say how to install it."""
    try:
        import decord  # noqa: F401
        import lmms_eval
        import lmms_eval.evaluator  # noqa: F401  (imports transformers' image utilities: torchvision trouble shows here)
    except ImportError as e:
        raise HarnessError(f"lmms-eval or a module it needs is not installed ({e.name or e}); run {INSTALL_HINT}") from None
    except Exception as e:  # a broken dependency, e.g. a CUDA torchvision beside CPU torch
        hint = " (a CUDA torchvision beside CPU torch: `pip uninstall torchvision`)" if "torchvision" in str(e) else ""
        raise HarnessError(f"lmms-eval failed to import: {str(e).splitlines()[0]}{hint}") from None
    return lmms_eval


# --- task specs ---------------------------------------------------------------------------------
def _yaml_task_names(path: Path) -> list[str]:
    """The `task:` names of lmms-eval YAML files (their `!function` tags are skipped, not run)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    names = []
    for f in files:
        try:
            doc = yaml.load(f.read_text(encoding="utf-8"), Loader=_Loader)
        except yaml.YAMLError as e:
            raise HarnessError(f"{f}: not valid YAML ({str(e).splitlines()[0]})") from None
        if isinstance(doc, dict) and isinstance(doc.get("task"), str):
            names.append(doc["task"])
        elif f == path:
            raise HarnessError(f"{f}: no `task:` name; an lmms-eval task YAML names its task")
    if not names:
        raise HarnessError(f"{path}: no lmms-eval task YAML inside; export one with `harness export-lmms-task`")
    return names


def parse_task_specs(specs: list[str]) -> tuple[list[str], list[str]]:
    """(task names, include paths): a spec ending in .yaml/.yml or naming a folder is local."""
    names: list[str] = []
    include: list[str] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if spec.endswith((".yaml", ".yml")) or path.is_dir():
            if not path.exists():
                raise HarnessError(f"task YAML not found: {path}")
            names += _yaml_task_names(path)
            folder = str((path if path.is_dir() else path.parent).resolve())
            if folder not in include:
                include.append(folder)
        else:
            names.append(spec)
    return names, include


# --- the checkpoint as lmms-eval's wrappers load it ------------------------------------------------
def model_dir(ref: CheckpointRef, cache_root: Path) -> Path:
    """A folder lmms-eval's wrappers load with AutoProcessor and no download.

    A full checkpoint with a complete processor is used as it is. Otherwise a view is built once
    under cache_root/<content hash>/: adapters merged into their base (the wrappers load no PEFT
    adapter), and for LLaVA the processor_config.json that llava-hf checkpoints ship (patch size,
    feature strategy) added when missing, as in the embedded tiny, whose tokenizer and image
    processor are saved without a LlavaProcessor.
    """
    needs_processor = ref.model_type in ("llava", "llava_next") and not _has_llava_processor(ref.base_path or ref.path)
    if ref.kind == "model" and not needs_processor:
        return ref.path
    view = cache_root / ref.content_hash
    if (view / "config.json").is_file():
        return view
    import shutil

    staging = cache_root / f".{ref.content_hash}.tmp{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    source = ref.base_path if ref.kind == "adapter" else ref.path
    if ref.kind == "adapter":
        _merge_adapter(ref, staging)  # real files first: nothing may be written through a symlink
    for f in source.iterdir():
        # The base's weights (and weight index, manifest) are not the merged model's.
        base_only = ref.kind == "adapter" and (f.suffix in (".safetensors", ".bin", ".pt")
                                               or f.name.endswith(".index.json") or f.name == "manifest.json")
        if f.is_file() and not base_only and not (staging / f.name).exists():
            (staging / f.name).symlink_to(f.resolve())  # tokenizer, processor, chat template
    if needs_processor:
        _write_llava_processor_config(source, staging)
    if view.exists():  # another run built it meanwhile
        shutil.rmtree(staging)
    else:
        os.replace(staging, view)
    return view


def _has_llava_processor(folder: Path) -> bool:
    path = folder / "processor_config.json"
    return path.is_file() and "patch_size" in json.loads(path.read_text(encoding="utf-8"))


def _write_llava_processor_config(source: Path, dest: Path) -> None:
    from transformers import AutoConfig

    write_processor_config(dest, AutoConfig.from_pretrained(source))  # unlinks a symlinked one first


def _merge_adapter(ref: CheckpointRef, dest: Path) -> None:
    from transformers import AutoModelForImageTextToText

    from harness.models.checkpoints import open_adapter

    base = AutoModelForImageTextToText.from_pretrained(ref.base_path, dtype="auto")
    merged = open_adapter(base, ref.path).merge_and_unload()
    merged.save_pretrained(dest)


# --- running ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LmmsRun:
    """How lmms-eval runs: the generation and run settings (EvalSettings: temperature, top_p,
    max_new_tokens, seed, n_samples, limit, blind, ci_method) and where its runs land."""

    settings: EvalSettings
    output_dir: Path
    label: str | None = None  # the run folders' parent: <output_dir>/<label>/lmms-<task>/ (default: the checkpoint's name)
    device: str | None = None
    dtype: str | None = None
    metric: str | None = None  # the per-sample metric (default: the task's first numeric one)


def run_lmms_eval(ref: CheckpointRef, specs: list[str], run: LmmsRun) -> list[dict[str, Any]]:
    """Run lmms-eval on the checkpoint and import every task's samples into our store; returns
    their records (summary.json's content).

    A task whose run folder already holds a summary made with the same checkpoint, task files,
    lmms-eval version and settings is not run again (delete the folder to force it).
    """
    settings = run.settings
    if settings.blind:
        raise HarnessError("--blind is not available with --engine lmms-eval (its tasks load the images); drop it")
    names, include = parse_task_specs(specs)
    wrapper = WRAPPERS.get(ref.model_type)
    if wrapper is None:
        raise HarnessError(
            f"{ref.path}: lmms-eval bridge supports model types {', '.join(WRAPPERS)}, not {ref.model_type!r}; "
            "use the default engine"
        )
    if takes_video_processor(ref.model_type) and importlib.util.find_spec("torchvision") is None:
        # lmms-eval's wrappers load the full processor (AutoProcessor), whose video processor needs
        # torchvision; no CPU torchvision matches the CPU torch wheel here.
        raise HarnessError(
            f"lmms-eval's {wrapper} wrapper needs torchvision ({ref.model_type}'s video processor), which is not "
            "installed; run it where torch and torchvision are a matching (CUDA) pair, see README: Bridges"
        )
    out = run.output_dir / (run.label or ref.name)
    gen = lmms_gen_kwargs(settings.gen)
    keys = {name: _run_key(ref, wrapper, name, include, gen, run) for name in names}
    done = {name: _finished(out / f"lmms-{name}", keys[name]) for name in names}
    todo = [name for name in names if done[name] is None]
    if todo:
        require_lmms()
        results, samples, meta = _simple_evaluate(ref, wrapper, todo, include, gen, run)
        for name in todo:
            info = {**meta["lmms_eval"], "task": name, "key": keys[name], "results": results["results"].get(name, {})}
            done[name] = import_task_samples(
                name, samples[name], results["configs"].get(name, {}), out / f"lmms-{name}", settings.ci_method,
                metric=run.metric, meta={**meta, "lmms_eval": info},
            )
    return [done[name] for name in names]


def lmms_gen_kwargs(gen: GenConfig) -> dict[str, Any]:
    """lmms-eval's gen_kwargs: only what the user set overrides the task YAML's generation_kwargs."""
    out: dict[str, Any] = {}
    if gen.max_new_tokens:
        out["max_new_tokens"] = gen.max_new_tokens
    if gen.temperature > 0:
        out.update(temperature=gen.temperature, do_sample=True, top_p=gen.top_p)
    return out


def read_lmms_run(run_dir: Path):
    """An imported lmms-eval run folder read back (harness.core.rundir.Run): scores checked, not
    re-scored (they are lmms-eval's metric)."""
    from harness.core.record import RECORD_FILE, load_record
    from harness.core.rundir import read_run

    if not (run_dir / RECORD_FILE).is_file():
        raise HarnessError(f"{run_dir} has no {RECORD_FILE}; run the lmms-eval column again (delete the folder)")
    return read_run(run_dir, LmmsTask(load_record(run_dir / RECORD_FILE).task))


def _run_key(ref: CheckpointRef, wrapper: str, name: str, include: list[str], gen: dict[str, Any], run: LmmsRun) -> str:
    import hashlib

    s = run.settings
    files = sorted(p for d in include for p in Path(d).iterdir() if p.suffix in (".yaml", ".yml", ".py"))
    payload = [ref.content_hash, wrapper, name, s.limit, gen, s.gen.seed, s.n_samples, run.dtype,
               s.ci_method, run.metric, _version("lmms_eval"),
               [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files]]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _finished(run_dir: Path, key: str) -> dict[str, Any] | None:
    from harness.core.record import RECORD_FILE, load_record

    try:
        summary = load_record(run_dir / RECORD_FILE).to_json()
    except (OSError, HarnessError):
        return None
    return summary if (summary.get("lmms_eval") or {}).get("key") == key else None


def _simple_evaluate(ref: CheckpointRef, wrapper: str, names: list[str], include: list[str], gen: dict[str, Any],
                     run: LmmsRun) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """lmms-eval's simple_evaluate, offline, sample logging on; its native logs written too."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local model, local data: never reach the Hub
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import torch
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.loggers import EvaluationTracker
    from lmms_eval.tasks import TaskManager

    _quiet_loguru()
    local = {n for folder in include for n in _yaml_task_names(Path(folder))}
    # Indexing lmms-eval's own few hundred task YAMLs takes seconds: only when a name needs them.
    manager = TaskManager("WARNING", include_path=include or None, include_defaults=bool(set(names) - local))
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise HarnessError(
            f"lmms-eval has no task {unknown[0]!r}; give an lmms-eval task name or a task YAML path "
            "(`harness export-lmms-task` writes ours)"
        )
    out = run.output_dir
    s = run.settings
    device = run.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pretrained = model_dir(ref, out / ".cache" / "lmms-models")
    if "," in str(pretrained):
        raise HarnessError(f"{pretrained}: lmms-eval's model_args cannot hold a path with a comma; move the checkpoint")
    model_args = f"pretrained={pretrained},device_map={device}"  # the device itself goes as device=
    if wrapper == "llava_hf":
        model_args += f",dtype={run.dtype or 'auto'}"
    log_root = out / ref.name / "lmms-eval-logs"
    tracker = EvaluationTracker(output_path=str(log_root))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    try:
        results = simple_evaluate(
            model=wrapper, model_args=model_args, tasks=names, batch_size=1, device=device,
            limit=s.limit, log_samples=True, task_manager=manager, evaluation_tracker=tracker,
            gen_kwargs=",".join(f"{k}={v}" for k, v in gen.items()) or None, bootstrap_iters=0,
            random_seed=s.gen.seed, numpy_random_seed=s.gen.seed, torch_random_seed=s.gen.seed,
            repeats=s.n_samples, verbosity="WARNING", datetime_str=stamp,
        )
    except HarnessError:
        raise
    except Exception as e:  # lmms-eval raises bare asserts and ValueErrors for bad setups
        if "ConnectionError" in repr(e) or "offline" in str(e).lower():
            raise HarnessError(
                f"lmms-eval task(s) {', '.join(names)} load data from the Hugging Face Hub, and the bridge runs offline; "
                "fetch the dataset into the HF cache first (or run with HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0), "
                "or use a local task YAML"
            ) from e
        raise HarnessError(f"lmms-eval failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if results is None:
        raise HarnessError("lmms-eval returned no results (a non-zero rank?); run it in a single process")
    samples = results.pop("samples")
    imported = {name: copy.deepcopy(samples[name]) for name in samples}  # saving pops their "doc"
    tracker.save_results_aggregated(results=results, samples=samples, datetime_str=stamp)
    for name in samples:
        tracker.save_results_samples(task_name=name, samples=samples[name])
    meta = {
        "engine": "lmms-eval",
        "lmms_eval": {"version": _version("lmms_eval"), "model": wrapper, "model_args": model_args, "logs": str(log_root)},
        "checkpoint": {"name": ref.name, "hash": ref.content_hash},
        "generation": {**gen, "n_samples": s.n_samples}, "limit": s.limit, "seed": s.gen.seed,
        "versions": {**library_versions(), "lmms-eval": _version("lmms_eval")},
    }
    return results, imported, meta


def _quiet_loguru() -> None:
    import sys

    from loguru import logger

    logger.remove()  # lmms-eval logs every step at INFO; keep warnings and errors
    logger.add(sys.stderr, level="WARNING")


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "unknown"
