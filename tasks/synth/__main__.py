"""Rebuild the bundled mini-sets: `python -m tasks.synth --out data` (what `make data` runs).

`python -m tasks.synth --heldout --out data/heldout` (`make heldout`) builds the held-out set that
recipes are chosen on: the test layout (so `--data-dir data/heldout` works with every task), other
generator seeds, and ids disjoint from both the test and the train ids. Never the test split.

Every task that names a generator (`Task.synth`, with its `synth_sizes` and `synth_dirs`) is
built; adding a benchmark's generator to its task class is all `make data` needs.
Deterministic: the same seeds give byte-identical files, so the committed data/ can be checked.
"""
from __future__ import annotations

import argparse
import importlib
import shutil
from pathlib import Path

import inspect

SEEDS = {"test": 1, "train": 2}
HELDOUT_SEED_OFFSET = 76  # test seed 1 + 76: seed 77 (the earlier held-out sets' seed)
HELDOUT_ID_BASE = 200_000  # test ids start at 0, train ids at 100,000 (A-OKVQA ids hash the seed)
HELDOUT_SCALE = 2.0  # twice the test size: 600 GeoQA questions


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


def build_heldout(out: Path) -> None:
    """The held-out set (test layout, seed 77, ids from HELDOUT_ID_BASE)."""
    options = {}
    for module, _, _ in generators():
        if "id_base" in inspect.signature(importlib.import_module(module).build).parameters:
            options[module.rsplit(".", 1)[-1]] = {"id_base": HELDOUT_ID_BASE}
    build_all(out, scale=HELDOUT_SCALE, seed_offset=HELDOUT_SEED_OFFSET, splits=("test",), options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data", help="data root to (re)write")
    parser.add_argument("--heldout", action="store_true", help="build the held-out set recipes are chosen on")
    args = parser.parse_args()
    out = Path(args.out)
    for _, _, dirs in generators():
        for sub in dirs:
            shutil.rmtree(out / sub, ignore_errors=True)
    if args.heldout:
        build_heldout(out)
        print(f"wrote the held-out set to {out} (use --data-dir {out})")
        return
    build_all(out)
    print(f"wrote bundled mini-sets to {out}")


if __name__ == "__main__":
    main()
