"""The Python API: what `harness eval` does, on a checkpoint path or on a model already in memory.

    import harness
    results = harness.evaluate("tiny", tasks=["geoqa", "mmbench"], limit=50)
    results["geoqa"].summary["score"], results["geoqa"].units     # summary.json's content, the units

    model = AutoModelForImageTextToText.from_pretrained("checkpoints/tiny")   # or a PeftModel
    harness.evaluate(model, tasks=["geoqa"], max_new_tokens=64)

An in-memory model runs as it is (not merged, not copied); its tokenizer, image processor and
family come from the folder it was loaded from (`processor=` names another). Its cache key is a
hash of its current weights, so the cache never serves replies of other weights, and a model
that has not changed since the last call is not asked again.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Sequence

from harness.core.runner import EvalResult, EvalSettings
from harness.core.task import Task, get_task
from harness.core.types import GenConfig
from harness.errors import HarnessError

_SETTINGS = {f.name for f in dataclasses.fields(GenConfig)} | {f.name for f in dataclasses.fields(EvalSettings)} - {"gen"}


def settings_from(**settings: Any) -> EvalSettings:
    """EvalSettings from flat keyword arguments (the CLI's flag names with underscores)."""
    unknown = set(settings) - _SETTINGS
    if unknown:
        raise HarnessError(f"unknown setting(s) {', '.join(sorted(unknown))}; choose from {', '.join(sorted(_SETTINGS))}")
    gen = GenConfig(**{k: v for k, v in settings.items() if k in GenConfig.__dataclass_fields__})
    return EvalSettings(gen=gen, **{k: v for k, v in settings.items() if k in EvalSettings.__dataclass_fields__})


def evaluate(model_or_path: Any, tasks: Sequence[str | Task] = ("geoqa",), *, output_dir: str | Path = "runs",
             data_dir: str | Path | None = None, name: str | None = None, processor: str | Path | None = None,
             base: str | None = None, device: str | None = None, dtype: str | None = None,
             trust_remote_code: bool = False, show_progress: bool = False, **settings: Any) -> dict[str, EvalResult]:
    """Evaluate a checkpoint (`tiny`, a folder, an adapter folder) or an in-memory transformers/PEFT
    model on `tasks`; returns {task name: EvalResult(record, units, records)}. Runs land in
    <output_dir>/<name>/<task>/ exactly as `harness eval` writes them. `settings` are the CLI's
    generation and run settings: max_new_tokens, temperature, top_p, top_k, seed, n_samples,
    batch_size, blind, limit, ci_method."""
    from harness.session import Session

    run = settings_from(**settings)
    task_objs = [get_task(t) if isinstance(t, str) else t for t in tasks]
    with Session(output_dir, data_dir, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                 show_progress=show_progress) as s:
        loaded = [(task, s.load(task, run.limit)) for task in task_objs]
        training = getattr(model_or_path, "training", None)  # a model mid-training goes back to train mode after
        try:
            if isinstance(model_or_path, (str, Path)):
                backend = s.backend(s.checkpoint(str(model_or_path), base))
            else:
                backend = s.add_backend(in_memory_backend(model_or_path, processor, name, trust_remote_code))
            results = {}
            for task, items in loaded:
                run_dir = s.run_dir(name or backend.name, task, run.blind)
                results[task.name] = s.evaluate(backend, task, items, run, run_dir)
        finally:
            if training:
                model_or_path.train()
    return results


def in_memory_backend(model: Any, processor: str | Path | None = None, name: str | None = None,
                      trust_remote_code: bool = False):
    """An HFBackend over `model` as it is now; tokenizer and processor from `processor` or the
    folder the model (or a PEFT model's base) was loaded from."""
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import resolve_checkpoint

    source = processor or _source_folder(model)
    if not source:
        raise HarnessError("cannot tell where this model's tokenizer and image processor are; pass processor=FOLDER")
    ref = resolve_checkpoint(str(source), trust_remote_code=trust_remote_code)
    weights = weights_hash(model)
    ref = dataclasses.replace(ref, name=name or f"{ref.name}-{weights[:8]}", content_hash=weights)
    return HFBackend(ref, trust_remote_code=trust_remote_code, model=model)


def _source_folder(model: Any) -> str | None:
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and peft_config:
        return next(iter(peft_config.values())).base_model_name_or_path
    return getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)


def weights_hash(model: Any) -> str:
    """Content hash of a model's current parameters and buffers (names, dtypes, shapes and bytes)."""
    import torch

    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
