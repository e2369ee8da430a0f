"""Rebuild the bundled mini-sets: `python -m tasks.synth --out data` (what `make data` runs).

Deterministic: the same seeds give byte-identical files, so the committed data/ can be checked.
"""
from __future__ import annotations

import argparse
import importlib
import shutil
from pathlib import Path

# generator module -> (test items, train items); MMBench counts questions (copies come on top).
SIZES = {"geoqa": (300, 600), "aokvqa": (300, 600), "mmbench": (150, 300), "ocrbench": (300, 600)}
SEEDS = {"test": 1, "train": 2}


def build_all(out: Path, scale: float = 1.0, seed_offset: int = 0, splits=("test", "train"),
              options: dict[str, dict] | None = None) -> None:
    """Every generator's splits; `options` passes extra build() arguments per generator (pretraining
    narrows geoqa's angle values with it)."""
    for name, (n_test, n_train) in SIZES.items():
        gen = importlib.import_module(f"tasks.synth.{name}")
        for split in splits:
            n = n_test if split == "test" else n_train
            gen.build(out, split, max(1, int(n * scale)), SEEDS[split] + seed_offset, **(options or {}).get(name, {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="data", help="data root to (re)write")
    args = parser.parse_args()
    out = Path(args.out)
    for sub in ("geoqa", "aokvqa", "coco", "mmbench", "ocrbench"):
        shutil.rmtree(out / sub, ignore_errors=True)
    build_all(out)
    print(f"wrote bundled mini-sets to {out}")


if __name__ == "__main__":
    main()
