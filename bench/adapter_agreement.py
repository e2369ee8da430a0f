"""How far LoRA adapters agree, as weight updates: pairwise cosine of their merged updates
(s_i * B_i A_i over every adapted module, flattened), each one's cosine to their mean, and the mean's
norm against theirs. Behind the README's sfte cause (do SFTe's members cancel each other?).

    .venv/bin/python bench/adapter_agreement.py checkpoints/built/sft checkpoints/built/sft_a128_d10 ...
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


def main() -> None:
    import torch

    from trainers.average import check_compatible, read_adapter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapters", nargs="+", type=Path)
    args = parser.parse_args()
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
