"""`harness train <treatment> --base X --task T --out DIR [--config FILE] [key=value ...]`.

Checks every input before loading a model (treatment, config keys and types, base, task, output
folder), then runs the treatment; the result is a checkpoint folder that `harness eval --ckpt DIR`
loads. Config precedence: dataclass defaults < --config FILE (YAML/JSON) < key=value arguments.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from pathlib import Path

from harness.errors import HarnessError

# name -> (module, Config class); each module has run(cfg, ...) -> manifest.
TREATMENTS = {
    "sft": ("trainers.sft", "SFTConfig"),
    "average": ("trainers.average", "AverageConfig"),
    "mpo": ("trainers.mpo", "MPOConfig"),
    "self_critique": ("trainers.self_critique", "SelfCritiqueConfig"),
    "self_train": ("trainers.self_train", "SelfTrainConfig"),
    "remgcl": ("trainers.remgcl", "REMGCLConfig"),
    "data_engine": ("trainers.data_engine", "DataEngineConfig"),
    "critic": ("trainers.critic", "CriticConfig"),
}
EPILOG = (
    "treatments: sft (LoRA SFT), average (SFTe: mean of LoRA adapters, adapters=a,b,c), "
    "mpo (Mixed Preference Optimization), self_critique (self-judged pairs + DPO), "
    "self_train (R3V self-training: writes OUT/iter1..K), "
    "remgcl (SFT + image-text alignment loss; negatives=in_batch for InfoNCE), "
    "data_engine (MLLM-DataEngine: per-type error -> targeted items -> SFT, R rounds; one task, e.g. geoqa), "
    "critic (a judge trained on the critic train split's pairwise verdicts and pointwise scores; --task critic). "
    "key=value sets any config field; an unknown key lists the valid ones."
)


def treatment_module(name: str):
    if name not in TREATMENTS:
        raise HarnessError(f"unknown treatment {name!r}; choose one of {', '.join(TREATMENTS)}")
    module_name, config_name = TREATMENTS[name]
    # The config classes are light; mpo's module imports TRL, which only `run` needs, so load it here.
    module = importlib.import_module(module_name)
    return module, getattr(module, config_name)


def build_config(name: str, config_file: str | None, overrides: list[str], values: dict | None = None):
    from trainers.common import load_config

    _, config_cls = treatment_module(name)
    return load_config(config_cls, config_file, overrides, values)


# Treatments that take data files (--data); self_train and data_engine add them to each SFT step.
DATA_TREATMENTS = {"sft": True, "remgcl": True, "mpo": True, "self_critique": True,
                   "self_train": False, "data_engine": False}  # value: can train on data files alone


def train(name: str, cfg, base: str | None, task: str | None, out: Path, data_dir: str | None = None,
          overwrite: bool = False, progress: bool = True, device: str | None = None, data=None,
          image_folder: str | None = None, long_rows: str = "refuse") -> dict:
    """Run treatment `name` with a built config; checks the cheap inputs first. `data`: a --data
    SPEC string or a recipe's list of sources (trainers/formats.py)."""
    from trainers.output import check_out, output_lock
    from trainers.formats import parse_spec

    module, _ = treatment_module(name)
    check_out(Path(out), overwrite)
    sources = parse_spec(data, image_folder, long_rows)
    with output_lock(Path(out)):  # held for the whole run: a second run on `out` is refused, not raced
        return _train(module, name, cfg, base, task, Path(out), data_dir, overwrite, progress, device, sources)


def _train(module, name: str, cfg, base: str | None, task: str | None, out: Path, data_dir: str | None,
           overwrite: bool, progress: bool, device: str | None, sources: list) -> dict:
    from harness.core.task import resolve_data_dir

    if sources and name not in DATA_TREATMENTS:
        raise HarnessError(f"--data does not apply to {name}; it trains {', '.join(DATA_TREATMENTS)}")
    if name == "average":
        if task:
            raise HarnessError("--task does not apply to average (it combines trained adapters: adapters=a,b,...)")
        return module.run(cfg, out, base=base, overwrite=overwrite, progress=progress)
    if not base:
        raise HarnessError(f"{name} needs --base (tiny, or a local checkpoint folder)")
    if not task and not (sources and DATA_TREATMENTS[name]):
        alone = " and/or --data FILE" if DATA_TREATMENTS.get(name) else ""
        raise HarnessError(f"{name} needs --task (a task with a train split, e.g. geoqa, or a list geoqa,mmbench){alone}")
    from harness.models.checkpoints import resolve_checkpoint
    from trainers.data import task_names

    resolve_checkpoint(base)  # a missing base fails here, before any data or model is loaded
    if task:
        task_names(task)
    resolve_data_dir(data_dir)
    extra = {"sources": sources} if sources else {}
    return module.run(cfg, base, task, out, data_dir=data_dir, overwrite=overwrite, progress=progress,
                      device=device, **extra)


def run_train(args: argparse.Namespace) -> int:
    from harness.core.text import visible

    cfg = build_config(args.treatment, args.config, list(args.overrides or []))
    t0 = time.time()
    manifest = train(args.treatment, cfg, args.base, args.task, Path(args.out), data_dir=args.data_dir,
                     overwrite=args.overwrite, progress=True, device=args.device,
                     data=getattr(args, "data", None), image_folder=getattr(args, "image_folder", None),
                     long_rows=getattr(args, "long_rows", "refuse"))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under accelerate launch / torchrun rank 0 wrote the checkpoint and reports it
    metrics = manifest.get("metrics", {})
    shown = {k: metrics[k] for k in ("steps", "first_loss", "last_loss", "members", "mode") if k in metrics}
    print(f"wrote {visible(args.out)} ({args.treatment}, {time.time() - t0:.0f}s): {json.dumps(shown)}")
    # A multi-checkpoint treatment (self_train: OUT/iter1..K) names the one to evaluate.
    print(f"evaluate it with: harness eval --ckpt {visible(manifest.get('evaluate', args.out))} --tasks {args.task or 'geoqa'}")
    return 0
