"""Leaderboard recipes: a checkpoint row that says how to train itself.

    checkpoints:
      - {name: sft, recipe: {trainer: sft, base: tiny, task: geoqa, config: {epochs: 2}}}
      - name: sfte
        recipe: {trainer: average, base: tiny, task: geoqa, seeds: [1, 2], include: [checkpoints/built/sft],
                 members: {trainer: sft, config: {epochs: 2}}, config: {mode: adapters}}

`harness leaderboard` calls `build_recipe(spec)` for a recipe row whose folder (spec.ckpt,
default checkpoints/built/<name>) does not exist yet. An `average` recipe trains its members
(one per seed) into <ckpt>-members/seed<k> first, reusing members already there, and averages
them with the adapters listed under `include` (e.g. an earlier row's SFT run, built first because
rows are built in spec order; this saves training that seed twice). With two or more adapters under
`include` and no `members`, it averages those rows alone (SFTe members that differ in alpha and
dropout, each its own row).

Several training seeds of one recipe (the leaderboard shows their mean, a hierarchical bootstrap CI
over seeds then items, and the seed range): `seeds` beside the recipe, or inside a non-average recipe.
The leaderboard (harness.report.leaderboard.CheckpointSpec.builds) calls `build_recipe` once per seed with
the row's path + /seed<k> and the recipe's config `seed: k`:

      - {name: mpo, seeds: [0, 1, 2], recipe: {trainer: mpo, base: tiny, task: geoqa, config: {...}}}

A seeded row whose recipe reads another seeded row (its `base`, or an average's `include`) reads that
row's build of the same seed (CheckpointSpec.upstream), so seed k of a chain is one draw of all of it:

      - {name: sft, seeds: [0, 1, 2], recipe: {trainer: sft, base: tiny, task: geoqa}}
      - {name: mpo, seeds: [0, 1, 2], recipe: {trainer: mpo, base: checkpoints/built/sft, task: geoqa}}

A recipe trains on data files with `data:` (a `PATH[:RATIO],...` string, or a list of paths and
`{path, ratio, format, image_folder, long_rows}` mappings; trainers/formats.py), alone or beside `task`; the
leaderboard's staleness check hashes those files (`data_fingerprint`), so an edited file is a changed recipe:

      - {name: sft_mine, recipe: {trainer: sft, base: tiny, task: geoqa,
                                  data: [{path: my/llava.json, image_folder: my/images}, {path: mmpr/meta.json, ratio: 0.5}]}}

A treatment that writes several checkpoints in one run (self_train: <out>/iter1..K) names that
folder as the recipe's `out`; each row's path is one checkpoint inside it, and the first missing
row builds them all (a YAML anchor shares the recipe):

      - {name: self_train_iter1, path: checkpoints/built/self_train/iter1,
         recipe: &st {trainer: self_train, base: tiny, task: geoqa, out: checkpoints/built/self_train}}
      - {name: self_train_iter2, path: checkpoints/built/self_train/iter2, recipe: *st}

A build goes through `trainers.cli.train` like `harness train`: its folder is locked for the whole
build (a second leaderboard building the same row waits, then uses that build instead of training it
again) and published by one rename, so a killed build leaves no half checkpoint that a later run
would take as built.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

RECIPE_KEYS = {"trainer", "base", "task", "config", "data_dir", "data", "seeds", "members", "include", "out"}


def build_recipe(spec: Any) -> dict[str, Any]:
    """Train `spec` (harness.report.leaderboard.CheckpointSpec) into spec.ckpt; returns its manifest."""
    from trainers.cli import build_config, train

    recipe = dict(spec.recipe or {})
    where = f"checkpoint {spec.name}"
    unknown = set(recipe) - RECIPE_KEYS
    if unknown:
        raise HarnessError(f"{where}: unknown recipe key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(RECIPE_KEYS))}")
    trainer = recipe.get("trainer")
    config = recipe.get("config") or {}
    if not isinstance(config, dict):
        raise HarnessError(f"{where}: recipe config must be a mapping of config keys to values")
    out = Path(spec.ckpt)
    t0 = time.time()
    print(f"building {spec.name}: {trainer} on {recipe.get('task') or '-'} -> {out}", file=sys.stderr, flush=True)
    if trainer == "average":
        if "out" in recipe:
            raise HarnessError(f"{where}: 'out' applies to treatments that write several checkpoints (self_train), not average")
        include = recipe.get("include") or []
        if not isinstance(include, list) or not all(isinstance(p, str) for p in include):
            raise HarnessError(f"{where}: include must be a list of adapter folders")
        adapters = include + [str(p) for p in _build_members(spec, recipe, where, len(include))]
        cfg = build_config("average", None, [], {**config, "adapters": adapters})
        manifest = _build_once(out, lambda: train("average", cfg, recipe.get("base"), None, out))
    else:
        if {"members", "seeds", "include"} & set(recipe):
            raise HarnessError(f"{where}: 'members', 'seeds' and 'include' apply to an average recipe only")
        cfg = build_config(str(trainer), None, [], config)
        build = _build_folder(recipe, out, where)
        manifest = _build_once(build, lambda: train(str(trainer), cfg, recipe.get("base"), recipe.get("task"), build,
                                                    data_dir=recipe.get("data_dir"), data=recipe.get("data")))
        if not out.exists():
            raise HarnessError(f"{where}: the {trainer} build wrote {build} but no {os.path.relpath(out, build)}; "
                               "check the recipe's config (e.g. iterations) against the row's path")
    print(f"built {spec.name} in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    return manifest


def _build_once(folder: Path, build: Any) -> dict[str, Any]:
    """`build()` into `folder` under its lock; when another process is building it (a second
    leaderboard on the same spec), wait and use what that one built instead of training twice."""
    import json

    from trainers.output import output_lock

    with output_lock(folder, wait=True):
        if folder.exists():
            manifest = folder / "manifest.json"
            return json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
        return build()


def _build_folder(recipe: dict[str, Any], out: Path, where: str) -> Path:
    """What the trainer writes: the row's own folder, or the recipe's `out` holding it."""
    if recipe.get("out") is None:
        return out
    if not isinstance(recipe["out"], str):
        raise HarnessError(f"{where}: recipe out must be a folder path")
    build = Path(recipe["out"])
    if Path(os.path.abspath(build)) not in Path(os.path.abspath(out)).parents:
        raise HarnessError(f"{where}: its path {out} must lie inside the recipe's out folder {build}")
    if build.exists():  # built before, by a recipe that did not make this row's checkpoint
        raise HarnessError(f"{where}: {build} exists but has no {os.path.relpath(out, build)}; "
                           f"delete {build} to rebuild it with the current recipe")
    return build


def _build_members(spec: Any, recipe: dict[str, Any], where: str, n_included: int) -> list[Path]:
    from trainers.cli import build_config, train

    members = recipe.get("members") or {}
    seeds = recipe.get("seeds") or []
    if not members and not seeds and n_included >= 2:  # members are other rows (each its own recipe)
        return []
    if not isinstance(members, dict) or "trainer" not in members:
        raise HarnessError(f"{where}: an average recipe needs members: {{trainer: sft, config: {{...}}}}")
    if not isinstance(seeds, list) or len(seeds) + n_included < 2 or not all(isinstance(s, int) for s in seeds):
        raise HarnessError(f"{where}: an average recipe needs seeds: a list of integers (2 or more adapters in all)")
    extra = set(members) - {"trainer", "config", "task", "base", "data_dir", "data"}
    if extra:
        raise HarnessError(f"{where}: unknown members key(s) {', '.join(sorted(extra))}")
    base = members.get("base") or recipe.get("base")
    task = members.get("task") or recipe.get("task")
    folder = Path(spec.ckpt).parent / f"{Path(spec.ckpt).name}-members"
    paths = []
    for seed in seeds:
        path = folder / f"seed{seed}"
        if not path.exists():
            cfg = build_config(members["trainer"], None, [], {**(members.get("config") or {}), "seed": seed})
            _build_once(path, lambda: train(members["trainer"], cfg, base, task, path,
                                            data_dir=members.get("data_dir") or recipe.get("data_dir"),
                                            data=members.get("data") or recipe.get("data")))
        paths.append(path)
    return paths


def data_fingerprint(recipe: dict[str, Any]) -> Any:
    """What a recipe's `data:` files hold now (path, content hash, ratio), for the leaderboard's
    recipe stamp; None when the recipe names no data files."""
    from trainers.formats import parse_spec, source_hash

    sources = parse_spec((recipe or {}).get("data"))
    if not sources:
        return None
    return [{"path": str(s.path), "hash": source_hash(s), "ratio": s.ratio} for s in sources]
