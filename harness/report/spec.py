"""A leaderboard spec: the YAML file read and checked, and its recipe checkpoints built.

The spec's keys and rows are documented in harness/report/leaderboard.py (the five steps that
turn a spec into a board); this module only reads and validates it, before anything runs, and
trains the recipe rows whose checkpoint folder is missing (through the `build_recipe` callback:
the engine never imports trainers/).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.core.runner import EvalSettings
from harness.core.types import GenConfig
from harness.core.validate import as_int, check_generation, safe_name
from harness.errors import HarnessError
from harness.report.parallel_builds import build_parallel, folders_read, plan_builds

SPEC_KEYS = {"name", "baseline", "checkpoints", "blind", "tasks", "data_dir", "generation", "seed", "bootstrap", "output_dir", "limit",
             "judge", "ci", "correction"}
ROW_KEYS = {"name", "path", "recipe", "seeds", "runs", "primary", "api"}
GEN_KEYS = {"temperature", "top_p", "top_k", "max_new_tokens", "batch_size"}


@dataclass
class CheckpointSpec:
    name: str
    ckpt: str  # what resolve_checkpoint takes: a name or a path
    recipe: dict[str, Any] | None = None
    seeds: list[int] | None = None  # one build per seed, <ckpt>/seed<k>
    runs: str | None = None  # scored runs, <runs>/<task>/samples.jsonl: no model
    primary: str | None = None  # its primary task, "none", or None: undeclared (harness.stats.board)
    seed: int | None = None  # set on one seed's build of a seeds row
    api_base: str | None = None  # a served row (`api: {model, base_url}`): ckpt is openai:MODEL, this its URL
    # The seeded rows this seeded row's recipe reads (its `base` or an `include`, as written): seed k
    # reads their seed-k builds, so a chain (sft -> mpo, the members -> sfte) is drawn seed by seed.
    upstream: dict[str, CheckpointSpec] = field(default_factory=dict, repr=False)

    def seed_path(self, k: int) -> str:
        """Where seed k's build of this row lies: <ckpt>/seed<k>, or for a recipe with `out` (one build
        writes several checkpoints, self_train's iterations) <out>/seed<k>/<the row's path inside out>."""
        out = (self.recipe or {}).get("out")
        if out is None:
            return str(Path(self.ckpt) / f"seed{k}")
        return str(Path(out) / f"seed{k}" / Path(self.ckpt).relative_to(out))

    def builds(self) -> list[CheckpointSpec]:
        """The checkpoints this row stands for: itself, or one per seed (config seed = k) at seed_path(k),
        each reading its upstream rows' builds of the same seed."""
        if self.seeds is None:
            return [self]
        out = []
        for k in self.seeds:
            recipe = None
            if self.recipe is not None:
                recipe = {**self.recipe, "config": {**(self.recipe.get("config") or {}), "seed": k}}
                if "out" in recipe:
                    recipe["out"] = str(Path(recipe["out"]) / f"seed{k}")
                if recipe.get("base") in self.upstream:
                    recipe["base"] = self.upstream[recipe["base"]].seed_path(k)
                if recipe.get("include"):
                    recipe["include"] = [self.upstream[r].seed_path(k) if r in self.upstream else r
                                         for r in recipe["include"]]
            out.append(CheckpointSpec(self.name, self.seed_path(k), recipe, seed=k))
        return out


@dataclass
class TaskSpec:
    name: str  # our task name; for engine "lmms-eval" an lmms-eval task name or task YAML path
    options: dict[str, str] = field(default_factory=dict)
    engine: str = "harness"


@dataclass
class LeaderboardSpec:
    path: Path
    name: str
    baseline: str
    checkpoints: list[CheckpointSpec]
    tasks: list[TaskSpec]
    blind: list[str] = field(default_factory=list)
    data_dir: str | None = None
    settings: EvalSettings = EvalSettings()  # the spec's `generation`, `seed` and `limit`: every model run's settings
    seed: int = 0
    bootstrap: int = 10_000
    output_dir: str = "runs"
    limit: int | None = None
    judge: str = "tiny"  # scores judged tasks (critic): a checkpoint name or path
    judge_build: CheckpointSpec | None = None  # `judge: {name, recipe}`: the judge is built like a recipe row
    ci: str = "auto"  # harness.stats.ci.CI_METHODS
    correction: str = "holm"  # harness.stats.ci.CORRECTIONS
    allow_missing: bool = False  # torn lines in a scored-runs row are left out (counted), not an error

    @property
    def out_dir(self) -> Path:
        return self.path.parent / self.name


def with_seeds(spec: LeaderboardSpec, seeds: list[int]) -> LeaderboardSpec:
    """The same board with `seeds` on every seeded row (`harness leaderboard --seeds`), rendered to
    <spec dir>/<name>-seeds/ beside the spec's own; seed<k> builds are shared between the two."""
    rows = [dataclasses.replace(c, seeds=list(seeds)) if c.seeds is not None else c for c in spec.checkpoints]
    return dataclasses.replace(spec, checkpoints=rows, name=f"{spec.name}-seeds")


def load_spec(path: Path) -> LeaderboardSpec:
    """The spec at `path`, every value checked and typed before any checkpoint is built or loaded;
    errors name the file and the key."""
    raw = _read_yaml(path)

    def bad(msg: str) -> HarnessError:
        return HarnessError(f"{path}: {msg}")

    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise bad(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    for key in ("baseline", "checkpoints", "tasks"):
        if key not in raw:
            raise bad(f"missing required key {key!r}")
    ckpts = _checkpoint_rows(raw, bad, path)
    judge = _judge(raw.get("judge"), bad, path)
    if judge.get("judge_build") is not None:
        _seeded_reads(judge["judge_build"], ckpts, bad)  # the judge is built once: it cannot read a seeded row
    tasks = _task_entries(raw["tasks"] or [], bad)
    blind = _blind_rows(raw.get("blind") or [], ckpts, bad)
    ci, correction = _board_options(raw, bad)
    settings = _settings(raw, path, bad)
    output_dir = raw.get("output_dir") or "runs"
    if not isinstance(output_dir, str):
        raise bad(f"output_dir must be a folder path, got {output_dir!r}")
    return LeaderboardSpec(
        path=path, name=safe_name(raw.get("name") or path.stem, f"{path}: leaderboard name"),
        baseline=raw["baseline"], checkpoints=ckpts,
        tasks=tasks, blind=blind, data_dir=raw.get("data_dir"), settings=settings,
        seed=settings.gen.seed, bootstrap=as_int(raw.get("bootstrap", 10_000), f"{path}: bootstrap", minimum=100),
        output_dir=output_dir, limit=settings.limit,
        ci=ci, correction=correction, **judge,
    )


def _judge(raw: Any, bad: Callable[[str], HarnessError], path: Path) -> dict[str, Any]:
    """`judge: tiny` (a checkpoint), or `judge: {name, recipe, path?}`: a judge built when missing
    (e.g. by the critic treatment), never a row of the board."""
    if raw is None or isinstance(raw, str):
        return {"judge": raw or "tiny"}
    if not (isinstance(raw, dict) and "recipe" in raw and "name" in raw and set(raw) <= {"name", "path", "recipe"}):
        raise bad(f"judge must be a checkpoint name or path, or {{name, recipe, path}}, got {raw!r}")
    build = _checkpoint_row(raw, bad, path)
    return {"judge": build.ckpt, "judge_build": build}


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise HarnessError(f"leaderboard spec not found: {path}; see leaderboards/default.yaml for the format")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise HarnessError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise HarnessError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); re-save it as UTF-8") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: expected a mapping with keys {', '.join(sorted(SPEC_KEYS))}")
    return raw


def _checkpoint_rows(raw: dict[str, Any], bad: Callable[[str], HarnessError], path: Path) -> list[CheckpointSpec]:
    if not isinstance(raw["checkpoints"] or [], list):
        raise bad("checkpoints must be a list")
    ckpts = [_checkpoint_row(entry, bad, path) for entry in raw["checkpoints"] or []]
    names = [c.name for c in ckpts]
    if len(set(names)) != len(names):
        raise bad("checkpoint names must be unique")
    if raw["baseline"] not in names:
        raise bad(f"baseline {raw['baseline']!r} is not one of the checkpoints ({', '.join(names)})")
    for c in ckpts:
        c.upstream = _seeded_reads(c, ckpts, bad)
    return ckpts


def _seeded_reads(c: CheckpointSpec, rows: list[CheckpointSpec], bad: Callable[[str], HarnessError]) -> dict[str, CheckpointSpec]:
    """The seeded rows whose checkpoint `c`'s recipe reads, by the reference as written. A seeded
    row has no checkpoint of its own, only seed<k> builds, so what reads it must be seeded too
    (and with seeds it has); a seeded average takes every member from seeded rows."""
    seeded = {os.path.normpath(r.ckpt): r for r in rows if r.seeds is not None and r is not c}
    recipe = c.recipe or {}
    include = [r for r in recipe.get("include") or [] if isinstance(r, str)]
    refs = [r for r in [recipe.get("base"), *include] if isinstance(r, str)]
    reads = {r: seeded[os.path.normpath(r)] for r in refs if os.path.normpath(r) in seeded}
    unseeded = [r for r in include if r not in reads]
    if c.seeds is not None and recipe.get("trainer") == "average" and (unseeded or not include):
        raise bad(f"checkpoint {c.name!r}: a seeded average takes each seed's builds of its include rows; "
                  f"{unseeded[0] if unseeded else 'it includes none'} is not a seeded row of this board")
    if not reads:
        return {}
    first = next(iter(reads.values()))
    if c.seeds is None:
        raise bad(f"checkpoint {c.name!r}: it reads {first.ckpt}, the seeded row {first.name!r}, which has one build "
                  f"per seed; give {c.name!r} seeds too, or name one build, e.g. {first.seed_path(first.seeds[0])}")
    for r, up in reads.items():
        missing = sorted(set(c.seeds) - set(up.seeds or []))
        if missing:
            raise bad(f"checkpoint {c.name!r}: its seed {missing[0]} reads {up.name!r}'s seed-{missing[0]} build, "
                      f"which {up.name!r} does not have; give both rows the same seeds")
    return reads


def _task_entries(entries: list[Any], bad: Callable[[str], HarnessError]) -> list[TaskSpec]:
    tasks = []
    for entry in entries:
        if isinstance(entry, str):
            tasks.append(TaskSpec(entry))
        elif isinstance(entry, dict) and "name" in entry:
            tasks.append(TaskSpec(entry["name"], {k: str(v) for k, v in (entry.get("options") or {}).items()}))
        elif isinstance(entry, dict) and isinstance(entry.get("lmms"), str) and set(entry) <= {"lmms", "metric"}:
            tasks.append(TaskSpec(entry["lmms"], {"metric": str(entry["metric"])} if entry.get("metric") else {},
                                  engine="lmms-eval"))
        else:
            raise bad(f"task entry {entry!r}: give a task name, {{name, options}} or {{lmms: TASK, metric: M}}")
    if not tasks:
        raise bad("no tasks listed")
    return tasks


def _blind_rows(blind: list[Any], ckpts: list[CheckpointSpec], bad: Callable[[str], HarnessError]) -> list[str]:
    names = [c.name for c in ckpts]
    for b in blind:
        if b not in names:
            raise bad(f"blind entry {b!r} is not one of the checkpoints")
        if any(c.name == b and (c.seeds or c.runs) for c in ckpts):
            raise bad(f"blind entry {b!r}: blind runs need one loaded checkpoint, not seeds or scored runs")
    return list(blind)


def _board_options(raw: dict[str, Any], bad: Callable[[str], HarnessError]) -> tuple[str, str]:
    from harness.stats.ci import CI_METHODS, CORRECTIONS

    ci = str(raw.get("ci") or "auto")
    if ci not in CI_METHODS:
        raise bad(f"ci {ci!r} is not one of {', '.join(CI_METHODS)}")
    correction = str(raw.get("correction") or "holm")
    if correction not in CORRECTIONS:
        raise bad(f"correction {correction!r} is not one of {', '.join(CORRECTIONS)}")
    return ci, correction


def _settings(raw: dict[str, Any], path: Path, bad: Callable[[str], HarnessError]) -> EvalSettings:
    """`generation`, `seed` and `limit` as the EvalSettings every model run of the board uses."""
    gen = raw.get("generation") or {}
    if not isinstance(gen, dict):
        raise bad(f"generation must be a mapping with keys {', '.join(sorted(GEN_KEYS))}")
    if set(gen) - GEN_KEYS:
        raise bad(f"unknown generation key(s) {', '.join(sorted(set(gen) - GEN_KEYS))}; allowed: {', '.join(sorted(GEN_KEYS))}")
    seed = as_int(raw.get("seed", 0), f"{path}: seed")
    checked = check_generation(gen.get("max_new_tokens"), gen.get("temperature", 0.0),
                               gen.get("top_p", 1.0), gen.get("top_k", 0), seed, where=f"{path}: generation")
    return EvalSettings(gen=GenConfig(*checked), limit=_optional_positive(raw.get("limit"), "limit", bad),
                        batch_size=as_int(gen.get("batch_size", 16), f"{path}: generation: batch_size", minimum=1))


def _checkpoint_row(entry: Any, bad: Callable[[str], HarnessError], path: Path) -> CheckpointSpec:
    if isinstance(entry, str):
        return CheckpointSpec(safe_name(Path(entry).name if "/" in entry else entry, f"{path}: checkpoint name"), entry)
    if not (isinstance(entry, dict) and "name" in entry and {"path", "recipe", "runs", "api"} & set(entry)):
        raise bad(f"checkpoint entry {entry!r}: give a name/path string, or {{name, path}}, {{name, recipe}}, "
                  "{name, runs} or {name, api: {model, base_url}}")
    name = safe_name(entry["name"], f"{path}: checkpoint name")
    primary = entry.get("primary")
    if primary is not None and not (isinstance(primary, str) and primary):
        raise bad(f"checkpoint {name!r}: primary must be a task name or none, got {primary!r}")
    if set(entry) - ROW_KEYS:
        raise bad(f"checkpoint {name!r}: unknown key(s) {', '.join(sorted(set(entry) - ROW_KEYS))}; "
                  f"allowed: {', '.join(sorted(ROW_KEYS))}")
    if "api" in entry:
        return _api_row(name, entry, primary, bad)
    if "runs" in entry:
        if set(entry) - {"name", "runs", "primary"} or not isinstance(entry["runs"], str):
            raise bad(f"checkpoint {name!r}: a scored-runs row is {{name, runs: DIR}} and nothing else (but primary)")
        return CheckpointSpec(name, entry["runs"], runs=entry["runs"], primary=primary)
    recipe = entry.get("recipe")
    if recipe is not None and not (isinstance(recipe, dict) and "trainer" in recipe):
        raise bad(f"checkpoint {name!r}: a recipe needs at least a 'trainer'")
    if recipe is not None:
        safe_name(recipe["trainer"], f"{path}: checkpoint {name}: recipe trainer")
        # A recipe writes its checkpoint where the spec says, never by climbing out with '..'.
        for key, where in (("path", entry.get("path")), ("out", recipe.get("out"))):
            if where is not None and (not isinstance(where, str) or ".." in Path(where).parts):
                raise bad(f"checkpoint {name!r}: a recipe's {key} must be a folder path without '..', got {where!r}")
    elif "path" in entry and not isinstance(entry["path"], str):
        raise bad(f"checkpoint {name!r}: path must be a string")
    seeds = entry.get("seeds")
    if recipe is not None and recipe.get("trainer") != "average" and "seeds" in recipe:
        if seeds is not None:
            raise bad(f"checkpoint {name!r}: give seeds once, on the row or in the recipe")
        recipe = {k: v for k, v in recipe.items() if k != "seeds"}
        seeds = entry["recipe"]["seeds"]
    if seeds is not None:
        if not (isinstance(seeds, list) and seeds and all(isinstance(k, int) and not isinstance(k, bool) for k in seeds)
                and len(set(seeds)) == len(seeds)):
            raise bad(f"checkpoint {name!r}: seeds must be a list of distinct integers, e.g. [0, 1, 2]")
        if recipe is None or (recipe.get("trainer") == "average" and ({"members", "seeds"} & set(recipe))):
            raise bad(f"checkpoint {name!r}: seeds need a recipe: one trainer's, or an average of seeded rows "
                      "(an average with members takes its own seeds as its members')")
        if "out" in recipe and not _inside(entry.get("path"), recipe["out"]):
            raise bad(f"checkpoint {name!r}: a seeded recipe with out needs the row's path inside out, "
                      f"e.g. {recipe['out']}/iter1")
    path_ = entry.get("path") or str(Path("checkpoints") / "built" / name)
    return CheckpointSpec(name, path_, recipe, seeds=seeds, primary=primary)


def _api_row(name: str, entry: dict[str, Any], primary: str | None, bad: Callable[[str], HarnessError]) -> CheckpointSpec:
    """{name, api: {model, base_url}}: a model behind an OpenAI-compatible server (harness/models/openai_backend.py;
    the key comes from $OPENAI_API_KEY, never from the spec)."""
    from harness.models.openai_backend import clean_base_url  # light: the client is imported only to ask

    api = entry["api"]
    if (set(entry) - {"name", "api", "primary"} or not isinstance(api, dict) or set(api) != {"model", "base_url"}
            or not all(isinstance(v, str) and v.strip() for v in api.values())):
        raise bad(f"checkpoint {name!r}: a served row is {{name, api: {{model, base_url}}}} and nothing else (but "
                  "primary), e.g. api: {model: gpt-4o, base_url: https://api.openai.com/v1}")
    try:
        url = clean_base_url(api["base_url"])
    except HarnessError as e:
        raise bad(f"checkpoint {name!r}: api: {e}") from None
    return CheckpointSpec(name, "openai:" + api["model"].strip(), primary=primary, api_base=url)


def _inside(path: Any, folder: Any) -> bool:
    return isinstance(path, str) and isinstance(folder, str) and Path(folder) in Path(path).parents


def _optional_positive(value: Any, key: str, bad: Callable[[str], HarnessError]) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad(f"{key} must be a positive integer or null, got {value!r}")
    return value


def build_checkpoints(spec: LeaderboardSpec, build_recipe: Callable[[CheckpointSpec], None] | None,
                      data_fingerprint: Callable[[dict], Any] | None = None, jobs: int = 1) -> None:
    """Train the recipe checkpoints whose folder does not exist yet (one per seed of a seeds row);
    check the others are current. jobs > 1: that many builds at once (harness/report/parallel_builds.py)."""
    # The judge first (after the builds others wait for, with jobs > 1): it is among the longest
    # builds and no row waits on it, so it runs beside the row builds instead of alone after them.
    builds = [spec.judge_build] if spec.judge_build is not None else []
    builds += [b for c in spec.checkpoints if c.runs is None for b in c.builds()]
    recipes = [c for c in builds if c.recipe is not None]
    missing = [c for c in recipes if not Path(c.ckpt).exists()]
    if missing and build_recipe is None:
        raise HarnessError(f"checkpoint {missing[0].name} needs training (recipe) but no trainer is available")
    planned = plan_builds(missing)  # rows one build writes together (self_train's iterations) are one build
    # A built row whose base is about to be (re)built is checked after the builds (then it is stale).
    built = [c for c in recipes if c not in missing]
    later = [c for c in built if folders_read(c.recipe, set(planned))]
    for c in built:
        if c not in later:
            check_recipe_current(c, data_fingerprint)

    def stamp(rows: list[CheckpointSpec]) -> None:
        for c in rows:
            stamp_recipe(c, data_fingerprint)

    if jobs > 1 and planned:
        build_parallel(planned, build_recipe, jobs, stamp)
    else:
        for b in planned.values():
            build_recipe(b.rows[0])
            stamp([c for c in b.rows if Path(c.ckpt).is_dir()])
    for c in later:
        check_recipe_current(c, data_fingerprint)


RECIPE_STAMP = "recipe.json"


def recipe_fingerprint(c: CheckpointSpec, data_fingerprint: Callable[[dict], Any] | None = None) -> dict[str, Any]:
    """What a built checkpoint was made from: its recipe as written, its base's content hash and
    (a recipe with `data:` files) their content hashes."""
    from harness.models.checkpoints import resolve_checkpoint

    base = (c.recipe or {}).get("base")
    out = {"recipe": c.recipe, "base_hash": resolve_checkpoint(base).content_hash if base else None}
    data = data_fingerprint(c.recipe or {}) if data_fingerprint else None
    if data is not None:  # recipes without data files keep the stamps they had
        out["data"] = data
    return out


def stamp_recipe(c: CheckpointSpec, data_fingerprint: Callable[[dict], Any] | None = None) -> None:
    import json

    from harness.core.store import atomic_write_text

    atomic_write_text(Path(c.ckpt) / RECIPE_STAMP,
                      json.dumps(recipe_fingerprint(c, data_fingerprint), sort_keys=True, indent=1))


def check_recipe_current(c: CheckpointSpec, data_fingerprint: Callable[[dict], Any] | None = None) -> None:
    """A built folder made from another recipe, base or data files would be scored under the wrong name: stop.
    A folder without a stamp (built by hand, or by `harness train`) is used as it is."""
    import json

    stamp = Path(c.ckpt) / RECIPE_STAMP
    if not stamp.is_file():
        return
    try:
        built = json.loads(stamp.read_text(encoding="utf-8"))
    except ValueError:
        built = None
    now = json.loads(json.dumps(recipe_fingerprint(c, data_fingerprint), sort_keys=True))
    if built != now:
        same_recipe = isinstance(built, dict) and built.get("recipe") == now["recipe"]
        what = ("different data files" if same_recipe and built.get("base_hash") == now["base_hash"] else
                "a different base checkpoint" if same_recipe else "a different recipe")
        raise HarnessError(f"checkpoint {c.name}: {c.ckpt} was built from {what}; "
                           f"delete {c.ckpt} (and any -members folder beside it) to rebuild it")
