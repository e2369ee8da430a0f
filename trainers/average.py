"""`average` (SFTe): one LoRA adapter from several of identical shape (e.g. SFT runs with different
seeds), a "model soup" of adapters (Wortsman et al. 2022).

    harness train average --out checkpoints/built/sfte adapters=run1,run2,run3 [mode=deltas]

mode=adapters (default): the element-wise mean of every LoRA tensor (A and B separately).
mode=deltas: the mean of the merged updates, mean_i(s * B_i A_i), stored exactly as one LoRA
adapter of rank K*r: A = [A_1; ...; A_K] stacked, B = [B_1 ... B_K] / K, with lora_alpha scaled so
the scale s stays the same. Both results load like any adapter (`harness eval --ckpt DIR`).
Adapters must share base, rank, target modules and tensor shapes; anything else is an error naming
the adapter and the difference. Members may differ in lora_alpha (and dropout, which leaves no trace
in the weights), as the LLaVA post-training seed's SFTe members do (alpha 16 or 8): each member's B
is first multiplied by its scale over the first member's (alpha_i / alpha_1), so every member
contributes its own update s_i B_i A_i and the result carries the first member's alpha. PEFT has weighted merging (`add_weighted_adapter`), but it
works on adapters loaded into one model and re-factorises by SVD for mismatched ranks; averaging
saved tensors directly is exact and needs no model.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from trainers.common import require

MODES = ("adapters", "deltas")
WEIGHTS_FILE = "adapter_model.safetensors"
# adapter_config.json keys that must agree for tensors to be averaged meaningfully.
SHAPE_KEYS = ("peft_type", "r", "use_rslora", "use_dora", "rank_pattern", "alpha_pattern",
              "modules_to_save", "bias", "fan_in_fan_out")


@dataclass
class AverageConfig:
    """Which adapters to average, and how."""

    adapters: list[str] = field(default_factory=list, metadata={"help": "adapter folders to average (2 or more)"})
    mode: str = field(default="adapters", metadata={"help": "adapters: mean of the LoRA tensors; deltas: mean of the merged updates (exact, rank K*r)"})
    seed: int = field(default=0, metadata={"help": "recorded only (averaging is deterministic)"})

    def __post_init__(self) -> None:
        require(len(self.adapters) >= 2, "adapters needs 2 or more adapter folders (adapters=dir1,dir2,...)")
        require(len(set(self.adapters)) == len(self.adapters), "adapters lists the same folder twice")
        require(self.mode in MODES, f"mode must be one of {', '.join(MODES)}")


def read_adapter(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(adapter_config, tensors) of a saved PEFT adapter."""
    from safetensors.torch import load_file

    if not (folder / "adapter_config.json").is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise HarnessError(f"{folder} is not a saved LoRA adapter (needs adapter_config.json and {WEIGHTS_FILE})")
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise HarnessError(f"{folder}/adapter_config.json is not valid JSON ({e.msg}); re-save the adapter") from None
    return config, load_file(str(folder / WEIGHTS_FILE))


def check_compatible(folders: list[Path], configs: list[dict[str, Any]], tensors: list[dict[str, Any]]) -> None:
    """Raise naming the first adapter that differs from the first one in shape-relevant settings."""
    ref_cfg, ref_t = configs[0], tensors[0]
    if ref_cfg.get("peft_type") != "LORA":
        raise HarnessError(f"{folders[0]}: only LoRA adapters can be averaged (peft_type {ref_cfg.get('peft_type')!r})")
    for folder, cfg, t in zip(folders[1:], configs[1:], tensors[1:]):
        for key in SHAPE_KEYS:
            if cfg.get(key) != ref_cfg.get(key):
                raise HarnessError(
                    f"{folder}: {key}={cfg.get(key)!r} differs from {folders[0]} ({ref_cfg.get(key)!r}); "
                    "only adapters of identical shape can be averaged"
                )
        if set(_modules(cfg)) != set(_modules(ref_cfg)):
            raise HarnessError(f"{folder}: target modules differ from {folders[0]}; train both with the same target_modules")
        if cfg.get("base_model_name_or_path") != ref_cfg.get("base_model_name_or_path"):
            raise HarnessError(
                f"{folder}: base {cfg.get('base_model_name_or_path')!r} differs from {folders[0]} "
                f"({ref_cfg.get('base_model_name_or_path')!r}); average adapters of one base"
            )
        if set(t) != set(ref_t):
            missing = sorted(set(ref_t) ^ set(t))[0]
            raise HarnessError(f"{folder}: tensor {missing} is in only one of it and {folders[0]}; not the same adapter layout")
        for name, value in t.items():
            if tuple(value.shape) != tuple(ref_t[name].shape):
                raise HarnessError(
                    f"{folder}: {name} has shape {tuple(value.shape)}, {folders[0]} has {tuple(ref_t[name].shape)}; "
                    "ranks or layers differ"
                )


def _modules(cfg: dict[str, Any]) -> list[str]:
    mods = cfg.get("target_modules") or []
    return [mods] if isinstance(mods, str) else list(mods)


def fold_scales(configs: list[dict[str, Any]], tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each member's B times alpha_i / alpha_1 (rank and rsLoRA are shared), so its update at the
    first member's scale equals its own update at its own scale."""
    ref = float(configs[0]["lora_alpha"])
    out = []
    for cfg, t in zip(configs, tensors):
        ratio = float(cfg["lora_alpha"]) / ref
        out.append(t if ratio == 1.0 else {n: (v * ratio).to(v.dtype) if ".lora_B." in n else v for n, v in t.items()})
    return out


def mean_tensors(tensors: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise mean of each tensor (accumulated in float64, stored in the original dtype)."""
    import torch

    out = {}
    for name, first in tensors[0].items():
        total = torch.zeros_like(first, dtype=torch.float64)
        for t in tensors:
            total += t[name].to(torch.float64)
        out[name] = (total / len(tensors)).to(first.dtype).contiguous()
    return out


def mean_deltas(tensors: list[dict[str, Any]]) -> dict[str, Any]:
    """One rank-K*r LoRA whose update B A equals mean_i(B_i A_i): A stacked, B concatenated / K."""
    import torch

    k = len(tensors)
    out = {}
    for name in tensors[0]:
        if ".lora_A." in name:
            out[name] = torch.cat([t[name] for t in tensors], dim=0).contiguous()
        elif ".lora_B." in name:
            out[name] = (torch.cat([t[name] for t in tensors], dim=1) / k).to(tensors[0][name].dtype).contiguous()
        else:
            raise HarnessError(f"mode=deltas supports plain LoRA A/B tensors only, found {name}; use mode=adapters")
    return out


def run(cfg: AverageConfig, out: Path, base: str | None = None, overwrite: bool = False,
        progress: bool = True) -> dict[str, Any]:
    """Average cfg.adapters into `out` (a LoRA adapter + manifest.json). Returns the manifest."""
    from safetensors.torch import save_file

    from harness.models.checkpoints import TINY_NAME, resolve_checkpoint
    from harness.core.store import atomic_write_json
    from trainers.common import staged_output, write_manifest

    folders = [Path(a) for a in cfg.adapters]
    for folder in folders:
        if not folder.is_dir():
            raise HarnessError(f"adapter folder not found: {folder}; list existing adapters in adapters=...")
    loaded = [read_adapter(f) for f in folders]
    configs, tensors = [c for c, _ in loaded], [t for _, t in loaded]
    check_compatible(folders, configs, tensors)
    tensors = fold_scales(configs, tensors)
    base_name = base or configs[0].get("base_model_name_or_path")
    if not base_name:
        raise HarnessError(f"{folders[0]} does not name its base; pass --base")
    base_ref = resolve_checkpoint(str(base_name))
    config = dict(configs[0], base_model_name_or_path=base_name if base_name == TINY_NAME else str(base_ref.path))
    if cfg.mode == "adapters":
        averaged = mean_tensors(tensors)
    else:
        averaged = mean_deltas(tensors)
        k = len(tensors)
        # PEFT scales B A by alpha / r (alpha / sqrt(r) with rsLoRA); keep that scale at rank K*r.
        config["r"] = configs[0]["r"] * k
        config["lora_alpha"] = configs[0]["lora_alpha"] * (math.sqrt(k) if configs[0].get("use_rslora") else k)
    members = []
    for folder in folders:
        manifest_path = folder / "manifest.json"
        member = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
        members.append({"path": str(folder), "treatment": member.get("treatment"), "seed": member.get("seed"),
                        "data": member.get("data"), "metrics": member.get("metrics")})
    with staged_output(Path(out), overwrite) as stage:
        save_file(averaged, str(stage / WEIGHTS_FILE), metadata={"format": "pt"})
        atomic_write_json(stage / "adapter_config.json", config)
        return write_manifest(
            stage, "average", cfg, base=str(base_name), base_hash=base_ref.content_hash,
            data=members[0]["data"] or {}, metrics={"members": len(folders), "mode": cfg.mode,
                                                   "tensors": len(averaged)},
            members=members,
        )
