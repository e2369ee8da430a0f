"""What every treatment shares: configs, loading the base, LoRA, TRL arguments, checkpoints, manifests.

A treatment reads top to bottom as: `Config` (a dataclass below `TrainConfig`) -> load the base with
`load_base` -> `load_train_data` (trainers/data.py: a task's train split in exactly the eval prompt
format, and its collators) -> TRL trainer -> `save_adapter` + `write_manifest`, all written into a
staging folder that `staged_output` (trainers/output.py: the --out rules, lock and publish) renames
into place only when everything succeeded.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import time
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.errors import HarnessError
from trainers.output import check_out, output_lock, staged_output  # noqa: F401  (treatments import them from here)

if TYPE_CHECKING:
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import CheckpointRef


# --- configs -------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Fields every gradient-based treatment has: LoRA shape, optimiser, data size, seed."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank r"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)"})
    lora_dropout: float = field(
        default=0.0,
        metadata={"help": "dropout on the LoRA input (0, PEFT's default: on a CPU it costs ~15% of a step)"},
    )
    target_modules: str = field(
        default="all-linear",
        metadata={"help": "modules to adapt: 'all-linear' (every linear layer but the LM head) or comma-separated names"},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate (linear decay after warmup)"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps spent warming up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training examples"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimiser steps (-1: use epochs)"})
    batch_size: int = field(default=8, metadata={"help": "examples (or pairs) per optimiser step"})
    micro_batches: int = field(
        default=1,
        metadata={"help": "split each step's batch into this many forward passes of similar cost (transformers' "
                          "batch_rebalance sampler; gradients accumulate over the same examples, with less padding "
                          "when lengths differ; SFT-style treatments only)"},
    )
    limit: int | None = field(default=None, metadata={"help": "use only the first N train items of each task (None: all)"})
    seed: int = field(default=0, metadata={"help": "seed for LoRA init, data order and sampling"})
    init_seed: int | None = field(
        default=None,
        metadata={"help": "seed of the LoRA initialisation alone (None: seed); adapters to be averaged share "
                          "it, as a model soup's members share their start, and differ by seed (data order)"},
    )
    replay: float = field(
        default=0.0,
        metadata={"help": "add this share (of the task items) of the other tasks' train items to the SFT data, so "
                          "training for one task keeps the others' formats (trainers/replay.py; 0: none)"},
    )
    replay_tasks: str = field(default="", metadata={"help": "the tasks to replay, comma-separated, each optionally name:weight for that many shares "
                                                        "(empty: every other bundled task, one share each)"})
    logging_steps: int = field(default=5, metadata={"help": "log the loss every N steps"})
    qlora: bool = field(default=False, metadata={"help": "load the base in 4 bit (needs a CUDA GPU and bitsandbytes)"})
    deepspeed: str | None = field(
        default=None,
        metadata={"help": "DeepSpeed config JSON, passed to TrainingArguments(deepspeed=...); needs the deepspeed "
                          "package and a launcher: accelerate launch / deepspeed -m harness train ..."},
    )

    def __post_init__(self) -> None:
        # nan/inf pass every range check below (nan compares False, inf > 0): refuse them first,
        # in every subclass's fields too (temperatures, loss weights, learning rates).
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise HarnessError(f"config: {f.name} must be a finite number, got {value}")
        require(self.lora_r >= 1, "lora_r must be >= 1")
        require(self.lora_alpha > 0, "lora_alpha must be > 0")
        require(0.0 <= self.lora_dropout < 1.0, "lora_dropout must be in [0, 1)")
        require(bool(self.target_modules.strip()), "target_modules is empty; use 'all-linear' or module names")
        require(self.learning_rate > 0, "learning_rate must be > 0")
        require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be in [0, 1)")
        require(self.epochs > 0 or self.max_steps > 0, "epochs must be > 0 (or set max_steps)")
        require(self.max_steps == -1 or self.max_steps >= 1, "max_steps must be -1 or >= 1")
        require(self.batch_size >= 1, "batch_size must be >= 1")
        require(self.micro_batches >= 1 and self.batch_size % self.micro_batches == 0,
                f"micro_batches must be >= 1 and divide batch_size ({self.batch_size}), got {self.micro_batches}")
        require(self.limit is None or self.limit >= 1, "limit must be >= 1 or null")
        require(self.logging_steps >= 1, "logging_steps must be >= 1")
        require(0.0 <= self.replay <= 10.0, "replay must be in [0, 10] (a share of the task's items)")
        require(self.deepspeed is None or Path(self.deepspeed).is_file(),
                f"deepspeed config file not found: {self.deepspeed}; give the path of a DeepSpeed JSON config")


def require(ok: bool, message: str) -> None:
    if not ok:
        raise HarnessError(f"config: {message}")


def load_config(cls: type, path: str | Path | None = None, overrides: Sequence[str] = (),
                values: dict[str, Any] | None = None):
    """Build `cls` from a YAML/JSON file, then a mapping (recipes), then `key=value` strings.

    Values are parsed as YAML scalars/lists (`0.1`, `true`, `[a, b]`) and checked against the
    field's type; an unknown key or a wrong type is an error naming the valid keys.
    """
    import yaml

    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise HarnessError(f"config file not found: {p}; pass --config with a YAML or JSON file")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise HarnessError(f"{p}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise HarnessError(f"{p}: expected a mapping of config keys to values")
        raw.update(loaded)
    raw.update(values or {})
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"expected key=value, got {item!r}")
        try:
            raw[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raw[key.strip()] = text
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise HarnessError(f"{cls.__name__}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
    return cls(**{k: _coerce(cls.__name__, k, v, hints[k]) for k, v in raw.items()})


def _coerce(owner: str, key: str, value: Any, hint: Any) -> Any:
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise HarnessError(f"{owner}: {key} cannot be null")
    base = next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) is not list else hint
    origin = typing.get_origin(base)
    bad = HarnessError(f"{owner}: {key}={value!r} is not a valid {getattr(base, '__name__', base)}")
    if origin is list:
        (inner,) = typing.get_args(base) or (str,)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise bad
        return [_coerce(owner, key, v.strip() if isinstance(v, str) else v, inner) for v in items]
    if base is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if base is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if base is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    return value


# --- model ---------------------------------------------------------------------------------------
def load_base(base: str, qlora: bool = False, device: str | None = None,
              start_from_adapter: str | None = None, dtype: str | None = None) -> tuple["HFBackend", str]:
    """The base as an HFBackend (for sampling and input building) and the name adapters record.

    A LoRA adapter as `base` is a starting point (a warm-up, e.g. an SFT run before self-training),
    for the treatments that name themselves in `start_from_adapter`: the backend is the adapter's
    base model carrying that adapter (unmerged), `backend.start_adapter` its folder, and training
    continues a copy of it (trainers.sft.fit_lora_sft), so the result is again one adapter on the
    adapter's base. Its content hash (adapter + base) is the backend's, so a rebuilt warm-up makes
    a leaderboard recipe built on it stale. `dtype` overrides the backend's choice (bf16 on a GPU):
    full fine-tuning keeps float32 master weights, with TRL's bf16 autocast for the compute."""
    from harness.models.backend import HFBackend
    from harness.models.checkpoints import TINY_NAME, resolve_checkpoint, tiny_path

    if not base:
        raise HarnessError("no base checkpoint given; pass --base tiny or a checkpoint folder")
    ref = resolve_checkpoint(base)
    if ref.kind != "model":
        if start_from_adapter is None:
            raise HarnessError(f"--base {base} is an adapter; this treatment trains on a full model "
                               "(merge the adapter first, or start sft/self_train/data_engine/remgcl/mpo/self_critique from it)")
        if qlora:
            raise HarnessError(f"--base {base} is an adapter: qlora=true cannot continue it; set qlora=false")
        from harness.models.checkpoints import open_adapter

        inner = TINY_NAME if ref.base_path.resolve() == tiny_path().resolve() else str(ref.base_path)
        backend, base_name = load_base(inner, False, device, dtype=dtype)
        try:
            backend.model = open_adapter(backend.model, ref.path).eval()
        except Exception as e:  # PEFT raises many types for broken or mismatched adapters
            raise HarnessError(f"cannot load adapter {ref.path} to start {start_from_adapter} from: "
                               f"{str(e).splitlines()[0][:200]}; re-train or re-save it") from None
        backend.start_adapter, backend.content_hash = str(ref.path.resolve()), ref.content_hash
        return backend, base_name
    if qlora:
        import torch

        _check_qlora()
        # Loaded on the CPU for its tokenizer/image processor, then swapped for the 4-bit GPU copy.
        backend = HFBackend(ref, device="cpu", dtype="bfloat16")
        backend.model = _load_4bit(ref)
        backend.device, backend.torch_dtype = "cuda:0", torch.bfloat16
    else:
        # Under a parallel launch each rank loads onto its own GPU, not all onto cuda:0.
        local_rank = os.environ.get("LOCAL_RANK")
        if device is None and local_rank is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch

            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        backend = HFBackend(ref, device=device, dtype=dtype)
    # `tiny` is recorded by name so the adapter follows the repository; others by absolute path.
    return backend, TINY_NAME if base == TINY_NAME else str(ref.path.resolve())


def _check_qlora() -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise HarnessError(
            "qlora=true needs a CUDA GPU and the bitsandbytes package (pip install bitsandbytes); "
            "on this machine set qlora=false"
        )


def _load_4bit(ref: "CheckpointRef"):
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForImageTextToText.from_pretrained(ref.path, quantization_config=quant, device_map={"": 0})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def trainable_start(model, start: str | None):
    """The model a treatment trains: `model` itself, or when training continues the warm-up adapter
    `start` (load_base), a trainable copy of that adapter on the bare base (the copy `model` carries
    for sampling is unloaded first). TRL then adds its own frozen copy as a DPO reference."""
    if start is None:
        return model
    from peft import PeftModel

    from harness.models.checkpoints import open_adapter

    if isinstance(model, PeftModel):
        model = model.unload()
    return open_adapter(model, start, is_trainable=True)


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    targets = cfg.target_modules.strip()
    modules: str | list[str] = targets if targets == "all-linear" else [m.strip() for m in targets.split(",") if m.strip()]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=modules, bias="none", task_type="CAUSAL_LM")


def trl_args(args_cls: type, cfg: TrainConfig, workdir: Path, **extra: Any):
    """A TRL config (SFTConfig / DPOConfig) with the settings every treatment shares."""
    import torch

    cuda = torch.cuda.is_available()
    if cfg.deepspeed:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise HarnessError(f"deepspeed={cfg.deepspeed} needs the deepspeed package (pip install deepspeed, "
                               "on a CUDA machine); or drop deepspeed= to train with plain DDP")
        extra["deepspeed"] = cfg.deepspeed  # TrainingArguments hands it to accelerate's DeepSpeed plugin
    return args_cls(
        output_dir=str(workdir), seed=cfg.seed if cfg.init_seed is None else cfg.init_seed, data_seed=cfg.seed,
        learning_rate=cfg.learning_rate, lr_scheduler_type="linear", warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio
        weight_decay=cfg.weight_decay, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size // cfg.micro_batches, gradient_accumulation_steps=cfg.micro_batches,
        # Several micro-batches: each step's examples (the same draw) are split by length, so a long
        # select item does not pad the short ones; the collator's dataset carries a "length" column.
        train_sampling_strategy="batch_rebalance" if cfg.micro_batches > 1 else "random",
        logging_steps=cfg.logging_steps, save_strategy="no", report_to="none", disable_tqdm=True,
        # Our collators read the "idx" column; TRL would drop it as unknown to the model.
        remove_unused_columns=False, dataloader_num_workers=0,
        activation_checkpointing=False,  # TRL turns it on by default; small models only lose speed
        use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
        **extra,
    )


@functools.cache
def seeded_rebalance(trainer_cls: type) -> type:
    """`trainer_cls` whose batch_rebalance sampler (micro_batches > 1) shuffles by the run's data_seed:
    transformers builds it with a fixed seed, and seeded builds must differ in data order."""
    from transformers.trainer_pt_utils import BatchRebalanceSampler

    class Seeded(trainer_cls):
        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if isinstance(sampler, BatchRebalanceSampler):
                sampler.seed = self.args.data_seed
            return sampler

    Seeded.__name__ = Seeded.__qualname__ = trainer_cls.__name__
    return Seeded


def prepare_trainer(trainer, progress: bool, label: str):
    """Swap transformers' printed log dicts for a progress bar (or silence, in tests)."""
    from transformers import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(_rich_progress_callback(label))
    return trainer


def _rich_progress_callback(label: str):
    from transformers import TrainerCallback

    from harness.core.progress import progress_bar

    class RichProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = progress_bar()
            self.bar.start()
            self.task = self.bar.add_task(label, total=state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.bar.update(self.task, description=f"{label} loss {logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.stop()

    return RichProgress()


def sampling_progress(enabled: bool, label: str, total: int):
    """A context manager yielding advance(n): a Rich bar on stderr, or a no-op."""
    from harness.core.progress import progress_bar

    @contextlib.contextmanager
    def bar():
        if not enabled:
            yield lambda n=1: None
            return
        with progress_bar() as p:
            t = p.add_task(label, total=total)
            yield lambda n=1: p.advance(t, n)

    return bar()


def train_metrics(trainer) -> dict[str, Any]:
    """What the manifest keeps of a run: step count, time, first/last logged loss and the last
    logged value of every other metric."""
    logs = [h for h in trainer.state.log_history if "loss" in h]
    summary = next((h for h in reversed(trainer.state.log_history) if "train_runtime" in h), {})
    out: dict[str, Any] = {
        "steps": trainer.state.global_step,
        "train_seconds": round(float(summary.get("train_runtime", 0.0)), 1),
        "train_loss": summary.get("train_loss"),
        "first_loss": logs[0]["loss"] if logs else None,
        "last_loss": logs[-1]["loss"] if logs else None,
        "loss_history": [[h["step"], round(h["loss"], 4)] for h in logs],
    }
    if logs:
        out["last_logged"] = {k: v for k, v in logs[-1].items() if k not in ("loss", "step", "epoch")}
    return out


def save_trained(model, folder: Path, base_name: str, backend: "HFBackend") -> None:
    """Write what training produced: a PEFT adapter (save_adapter), or after full fine-tuning a full
    checkpoint with the base's tokenizer and processor (a model folder that eval loads like any other)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        save_adapter(model, folder, base_name)
        return
    import shutil

    from harness.models.checkpoints import PROVENANCE_FILES, save_for_engines

    # The base's own tokenizer, processor and template files, byte for byte (a processor's
    # save_pretrained rewrites them in its own version's dialect); the weights are the new ones.
    for source in backend.ref.path.iterdir():
        weights = source.suffix in (".safetensors", ".bin", ".pt", ".pth") or source.name.endswith(".index.json")
        if source.is_file() and not weights and source.name not in PROVENANCE_FILES:
            shutil.copy2(source, folder / source.name)
    model.config.use_cache = True  # TRL turns the KV cache off for training; generation wants it back
    save_for_engines(model, backend.processor, folder)


def save_adapter(model, folder: Path, base_name: str) -> None:
    """save_pretrained a PEFT model, then point adapter_config.json at `base_name` (PEFT records
    the path the base was loaded from, which for `tiny` would tie the adapter to this clone)."""
    adapters = [a for a in getattr(model, "peft_config", {}) if a != "ref"]  # TRL's frozen DPO reference copy
    model.save_pretrained(str(folder), selected_adapters=adapters or None)  # a full disk: staged_output names --out
    set_adapter_base(folder, base_name)


def set_adapter_base(folder: Path, base_name: str) -> None:
    from harness.core.store import atomic_write_json

    cfg_path = folder / "adapter_config.json"
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_name
    atomic_write_json(cfg_path, config)


def write_manifest(folder: Path, treatment: str, config: Any, base: str | None, base_hash: str | None,
                   data: dict[str, Any], metrics: dict[str, Any], start_adapter: str | None = None,
                   **extra: Any) -> dict[str, Any]:
    """manifest.json: how the checkpoint was made, enough to re-make it (`start_adapter`: the adapter
    training continued from, with its own LoRA shape, which the config's lora_r/lora_alpha do not set;
    `threads`: a full-weight build re-makes the same weights only at the same thread count, since
    some of its float sums are split by it; the board's LoRA builds were measured not to depend on it)."""
    import torch

    from harness.core.scoring import library_versions
    from harness.core.store import atomic_write_json

    manifest = {
        "treatment": treatment,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config,
        "base": base,
        "base_hash": base_hash,
        **({"start_adapter": start_adapter} if start_adapter else {}),
        "data": data,
        "seed": getattr(config, "seed", None),
        "versions": library_versions(),
        "threads": torch.get_num_threads(),
        "metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    atomic_write_json(folder / "manifest.json", manifest)
    return manifest


def quiet_libraries() -> None:
    """Deprecation notices and per-step info from transformers/TRL/datasets drown the progress bar."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    for name in ("trl", "datasets", "accelerate", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(trl|transformers|peft|torch)\..*")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
