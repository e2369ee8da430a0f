"""How far LoRA adapters agree, as weight updates: pairwise cosine of their merged updates
(s_i * B_i A_i over every adapted module, flattened), each one's cosine to their mean, and the mean's
norm against theirs. Behind the README's sfte cause (do SFTe's members cancel each other?).
With --scale S --out DIR it writes a copy of ONE adapter whose update is S times as long (its
lora_alpha times S; same direction): is a shorter step what the average loses?

    .venv/bin/python bench/adapter_agreement.py checkpoints/built/sft/seed0 checkpoints/built/sft_a128_d10/seed0 ...
    .venv/bin/python bench/adapter_agreement.py checkpoints/built/sft/seed0 --scale 0.82 --out runs/causes/sft_x0.82
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path


def merged_update(config: dict, tensors: dict) -> "torch.Tensor":  # noqa: F821
    import torch

    scale = float(config["lora_alpha"]) / float(config["r"])
    parts = [(tensors[b].double() @ tensors[a].double()).flatten() * scale
             for a in sorted(tensors) if ".lora_A." in a for b in [a.replace(".lora_A.", ".lora_B.")]]
    return torch.cat(parts)


def write_scaled(adapter: Path, scale: float, out: Path) -> None:
    """The adapter's files with lora_alpha x scale: the merged update s * B A becomes scale times as long."""
    import json
    import shutil

    from trainers.average import read_adapter

    config, _ = read_adapter(adapter)  # checks it is an adapter
    if out.exists():
        raise SystemExit(f"{out} exists; delete it or pick another --out")
    shutil.copytree(adapter, out, ignore=shutil.ignore_patterns("manifest.json", "recipe.json"))
    config["lora_alpha"] = float(config["lora_alpha"]) * scale
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    print(f"wrote {out}: {adapter}'s update x {scale} (lora_alpha {config['lora_alpha']:g})")


def main() -> None:
    import torch

    from trainers.average import check_compatible, read_adapter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapters", nargs="+", type=Path)
    parser.add_argument("--scale", type=float, help="write one adapter's update scaled by this factor (with --out)")
    parser.add_argument("--out", type=Path, help="where --scale writes the scaled copy")
    args = parser.parse_args()
    if args.scale is not None or args.out is not None:
        if args.scale is None or args.out is None or len(args.adapters) != 1:
            parser.error("--scale and --out go together, with one adapter")
        return write_scaled(args.adapters[0], args.scale, args.out)
    loaded = [read_adapter(f) for f in args.adapters]
    check_compatible(args.adapters, [c for c, _ in loaded], [t for _, t in loaded])
    updates = [merged_update(c, t) for c, t in loaded]
    cos = torch.nn.functional.cosine_similarity
    pairs = [cos(a, b, dim=0).item() for a, b in itertools.combinations(updates, 2)]
    mean = torch.stack(updates).mean(0)
    print("pairwise cosine:", " ".join(f"{c:.2f}" for c in pairs), f"(mean {sum(pairs) / len(pairs):.2f})")
    print("cosine to the mean:", " ".join(f"{cos(u, mean, dim=0).item():.2f}" for u in updates))
    mean_norm = sum(u.norm().item() for u in updates) / len(updates)
    print(f"norm of the mean / mean of the norms: {mean.norm().item() / mean_norm:.2f}")


if __name__ == "__main__":
    main()
