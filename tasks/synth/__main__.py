"""Rebuild the bundled mini-sets: `python -m tasks.synth --out data` (what `make data` runs).

Every task that names a generator (`Task.synth`, with its `synth_sizes` and `synth_dirs`) is
built; adding a benchmark's generator to its task class is all `make data` needs.
Deterministic: the same seeds give byte-identical files, so the committed data/ can be checked.
"""
from __future__ import annotations

import argparse
import importlib
import shutil
from pathlib import Path

SEEDS = {"test": 1, "train": 2}


def generators() -> list[tuple[str, tuple[int, int], tuple[str, ...]]]:
    """(generator module, (test items, train items), data folders) of every registered task."""
    from harness.core.task import task_classes

    return [(cls.synth, cls.synth_sizes, cls.synth_dirs) for cls in task_classes().values() if cls.synth]


def build_all(out: Path, scale: float = 1.0, seed_offset: int = 0, splits=("test", "train"),
              options: dict[str, dict] | None = None) -> None:
    """Every generator's splits; `options` passes extra build() arguments per generator, keyed by
    its module's last name (pretraining narrows geoqa's angle values with it)."""
    for module, sizes, _ in generators():
        gen = importlib.import_module(module)
        extra = (options or {}).get(module.rsplit(".", 1)[-1], {})
        for split in splits:
            n = sizes[0] if split == "test" else sizes[1]
            if n:  # a generator with no train split builds none
                gen.build(out, split, max(1, int(n * scale)), SEEDS[split] + seed_offset, **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="data", help="data root to (re)write")
    args = parser.parse_args()
    out = Path(args.out)
    for _, _, dirs in generators():
        for sub in dirs:
            shutil.rmtree(out / sub, ignore_errors=True)
    build_all(out)
    print(f"wrote bundled mini-sets to {out}")


if __name__ == "__main__":
    main()
