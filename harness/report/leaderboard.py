"""Leaderboards: a YAML spec -> evaluate every checkpoint x task (cached) -> statistics -> renders.

    harness leaderboard --spec leaderboards/default.yaml

Spec keys (unknown keys are errors, so a typo never silently changes a leaderboard):
  name: default                  # output folder leaderboards/<name>/ (default: the file's stem)
  baseline: tiny                 # the checkpoint every other one is compared with
  checkpoints:                   # names (`tiny`), paths, or {name, path} / {name, recipe} / {name, runs}
    - tiny
    - {name: sft, recipe: {trainer: sft, base: tiny, task: geoqa, config: {}}}
    - {name: mpo, seeds: [0, 1, 2], recipe: {trainer: mpo, base: tiny, task: geoqa}}  # one build per seed
    - {name: theirs, runs: runs/theirs}   # scored runs: runs/theirs/<task>/samples.jsonl, no model loaded
    # any row may add `primary: geoqa` (its target: the one starred comparison, the rest exploratory;
    # `primary: none`: all exploratory; no key: all in the family; a blind row follows its row's).
    # Rules: harness/stats/board.py
  blind: [tiny]                  # also evaluate these with blanked images, as "<name>+blind" rows
  tasks: [geoqa, mmbench]        # task names, or {name: aokvqa_mc, options: {mc_mode: likelihood}},
                                 # or {lmms: <lmms-eval task name or task YAML>, metric: ...}: run by
                                 # lmms-eval (harness/bridges/lmms.py), column "lmms-<task>", not blind
  data_dir: null                 # default: $HARNESS_DATA, else the bundled mini-sets
  generation: {temperature: 0, max_new_tokens: null, batch_size: 16}
  seed: 0
  bootstrap: 10000
  limit: null                    # evaluate only the first N items of each task (quick looks)
  judge: tiny                    # judged tasks (critic): the judge checkpoint; they add a column
                                 # "<task>-vs-<baseline>" (preference over the baseline's answers)
  ci: auto                       # score CIs: auto (Wilson for 0/1 units, wilson-clustered for clustered
                                 # 0/1 rows, wilson-effective for fractional ones), wilson, jeffreys,
                                 # clopper-pearson or bootstrap
  correction: holm               # multiplicity over the board's comparisons: holm, bh or none
A row with `seeds: [..]` (beside its recipe; a non-average recipe's own `seeds` means the same) builds
one checkpoint per seed, <path>/seed<k>, with the recipe's config `seed` set to k; its cells show the
mean over seeds with a hierarchical bootstrap CI (seeds, then items) and the seed range.
Recipe checkpoints are built (trained) only when their folder does not exist yet. A recipe with
`out: DIR` trains DIR, a folder of several checkpoints, and the row's `path` is one of them: rows
sharing the recipe (self_train_iter1..K) share one build (trainers/recipes.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError
from harness.core.types import GenConfig
from harness.core.validate import as_int, check_generation, safe_name

SPEC_KEYS = {"name", "baseline", "checkpoints", "blind", "tasks", "data_dir", "generation", "seed", "bootstrap", "output_dir", "limit",
             "judge", "ci", "correction"}
ROW_KEYS = {"name", "path", "recipe", "seeds", "runs", "primary"}
GEN_KEYS = {"temperature", "top_p", "top_k", "max_new_tokens", "batch_size"}


@dataclass
class CheckpointSpec:
    name: str
    ckpt: str  # what resolve_checkpoint takes: a name or a path
    recipe: dict[str, Any] | None = None
    seeds: list[int] | None = None  # one build per seed, <ckpt>/seed<k>
    runs: str | None = None  # scored runs, <runs>/<task>/samples.jsonl: no model
    primary: str | None = None  # its primary task, "none", or None: undeclared (harness.stats.board)

    def builds(self) -> list[CheckpointSpec]:
        """The checkpoints this row stands for: itself, or one per seed (config seed = k)."""
        if self.seeds is None:
            return [self]
        out = []
        for k in self.seeds:
            recipe = None
            if self.recipe is not None:
                recipe = {**self.recipe, "config": {**(self.recipe.get("config") or {}), "seed": k}}
            out.append(CheckpointSpec(self.name, str(Path(self.ckpt) / f"seed{k}"), recipe))
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
    generation: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    bootstrap: int = 10_000
    output_dir: str = "runs"
    limit: int | None = None
    judge: str = "tiny"  # scores judged tasks (critic)
    ci: str = "auto"  # harness.stats.ci.CI_METHODS
    correction: str = "holm"  # harness.stats.ci.CORRECTIONS

    @property
    def out_dir(self) -> Path:
        return self.path.parent / self.name


def load_spec(path: Path) -> LeaderboardSpec:
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

    def bad(msg: str) -> HarnessError:
        return HarnessError(f"{path}: {msg}")

    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise bad(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    for key in ("baseline", "checkpoints", "tasks"):
        if key not in raw:
            raise bad(f"missing required key {key!r}")
    if not isinstance(raw["checkpoints"] or [], list):
        raise bad("checkpoints must be a list")
    ckpts = [_checkpoint_row(entry, bad, path) for entry in raw["checkpoints"] or []]
    names = [c.name for c in ckpts]
    if len(set(names)) != len(names):
        raise bad("checkpoint names must be unique")
    if raw["baseline"] not in names:
        raise bad(f"baseline {raw['baseline']!r} is not one of the checkpoints ({', '.join(names)})")
    tasks = []
    for entry in raw["tasks"] or []:
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
    blind = list(raw.get("blind") or [])
    for b in blind:
        if b not in names:
            raise bad(f"blind entry {b!r} is not one of the checkpoints")
        if any(c.name == b and (c.seeds or c.runs) for c in ckpts):
            raise bad(f"blind entry {b!r}: blind runs need one loaded checkpoint, not seeds or scored runs")
    from harness.stats.ci import CI_METHODS, CORRECTIONS

    ci = str(raw.get("ci") or "auto")
    if ci not in CI_METHODS:
        raise bad(f"ci {ci!r} is not one of {', '.join(CI_METHODS)}")
    correction = str(raw.get("correction") or "holm")
    if correction not in CORRECTIONS:
        raise bad(f"correction {correction!r} is not one of {', '.join(CORRECTIONS)}")
    gen = raw.get("generation") or {}
    if not isinstance(gen, dict):
        raise bad(f"generation must be a mapping with keys {', '.join(sorted(GEN_KEYS))}")
    gen = dict(gen)
    if set(gen) - GEN_KEYS:
        raise bad(f"unknown generation key(s) {', '.join(sorted(set(gen) - GEN_KEYS))}; allowed: {', '.join(sorted(GEN_KEYS))}")
    seed = as_int(raw.get("seed", 0), f"{path}: seed")
    # Every value is checked and typed now, before any checkpoint is built or loaded.
    check_generation(gen.get("max_new_tokens"), gen.get("temperature", 0.0),
                     gen.get("top_p", 1.0), gen.get("top_k", 0), seed, where=f"{path}: generation")
    as_int(gen.get("batch_size", 16), f"{path}: generation: batch_size", minimum=1)
    output_dir = raw.get("output_dir") or "runs"
    if not isinstance(output_dir, str):
        raise bad(f"output_dir must be a folder path, got {output_dir!r}")
    return LeaderboardSpec(
        path=path, name=safe_name(raw.get("name") or path.stem, f"{path}: leaderboard name"),
        baseline=raw["baseline"], checkpoints=ckpts,
        tasks=tasks, blind=blind, data_dir=raw.get("data_dir"), generation=gen,
        seed=seed, bootstrap=as_int(raw.get("bootstrap", 10_000), f"{path}: bootstrap", minimum=100),
        output_dir=output_dir, limit=_optional_positive(raw.get("limit"), "limit", bad),
        judge=str(raw.get("judge") or "tiny"), ci=ci, correction=correction,
    )


def _checkpoint_row(entry: Any, bad: Callable[[str], HarnessError], path: Path) -> CheckpointSpec:
    if isinstance(entry, str):
        return CheckpointSpec(safe_name(Path(entry).name if "/" in entry else entry, f"{path}: checkpoint name"), entry)
    if not (isinstance(entry, dict) and "name" in entry and {"path", "recipe", "runs"} & set(entry)):
        raise bad(f"checkpoint entry {entry!r}: give a name/path string, or {{name, path}}, {{name, recipe}} "
                  "or {name, runs}")
    name = safe_name(entry["name"], f"{path}: checkpoint name")
    primary = entry.get("primary")
    if primary is not None and not (isinstance(primary, str) and primary):
        raise bad(f"checkpoint {name!r}: primary must be a task name or none, got {primary!r}")
    if set(entry) - ROW_KEYS:
        raise bad(f"checkpoint {name!r}: unknown key(s) {', '.join(sorted(set(entry) - ROW_KEYS))}; "
                  f"allowed: {', '.join(sorted(ROW_KEYS))}")
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
        if recipe is None or recipe.get("trainer") == "average" or "out" in recipe:
            raise bad(f"checkpoint {name!r}: seeds need a recipe of one trainer that writes one checkpoint "
                      "(not average, whose own seeds are its members, nor a recipe with out)")
    path_ = entry.get("path") or str(Path("checkpoints") / "built" / name)
    return CheckpointSpec(name, path_, recipe, seeds=seeds, primary=primary)


def _optional_positive(value: Any, key: str, bad: Callable[[str], HarnessError]) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad(f"{key} must be a positive integer or null, got {value!r}")
    return value


def run_leaderboard(spec: LeaderboardSpec, build_recipe: Callable[[CheckpointSpec], None] | None = None,
                    device: str | None = None, data_fingerprint: Callable[[dict], Any] | None = None):
    """Build missing recipe checkpoints, evaluate (cached), compute statistics, render everything.
    `data_fingerprint(recipe)` (trainers.recipes) hashes the data files a recipe names, so a built
    row whose files changed is stale like one whose recipe changed."""
    from rich.console import Console

    from harness.core.outputs import check_output_folder
    from harness.core.progress import progress_bar
    from harness.core.runner import EvalSettings

    check_output_folder(spec.out_dir, "leaderboard", flag="leaderboard folder")  # before any work
    from harness.core.task import get_task
    from harness.report import render as report
    from harness.session import Session

    g = spec.generation
    gen = GenConfig(max_new_tokens=g.get("max_new_tokens"), temperature=g.get("temperature", 0.0),
                    top_p=g.get("top_p", 1.0), top_k=g.get("top_k", 0), seed=spec.seed)
    # At most one model is loaded at a time (a GPU never holds two checkpoints).
    with Session(spec.output_dir, spec.data_dir, device=device, one_model=True) as s:
        tasks = [get_task(t.name, **t.options) for t in spec.tasks if t.engine == "harness"]
        lmms_tasks = [t for t in spec.tasks if t.engine == "lmms-eval"]
        items = {task.name: s.load(task, spec.limit) for task in tasks}
        build_checkpoints(spec, build_recipe, data_fingerprint)
        builds = [b for c in spec.checkpoints if c.runs is None for b in c.builds()]
        refs = {b.ckpt: s.checkpoint(b.ckpt) for b in builds}
        judge_ref = s.checkpoint(spec.judge) if any(getattr(t, "judged", False) for t in tasks) else None

        # A checkpoint's blind run follows its own run, so both use one model load. Rows keep the
        # spec's order; a seeds row runs each seed's checkpoint into <output_dir>/<name>/seed<k>/.
        runs = [(c, b, blind) for c in spec.checkpoints if c.runs is None for b in c.builds()
                for blind in (False, True) if not blind or c.name in spec.blind]
        # label -> task -> unit scores ({unit id: score}, or one such mapping per seed)
        unit_scores: dict[str, dict[str, Any]] = {
            label: {} for label in [c.name for c in spec.checkpoints] + [f"{b}+blind" for b in spec.blind]}
        clusters: dict[str, dict[str, str]] = {}  # task -> {unit id: cluster} where units are clustered

        def collect(label: str, task, units, seeded: bool) -> None:
            found = {u.id: u.cluster for u in units if u.cluster is not None}
            if found:
                clusters.setdefault(task.name, {}).update(found)
            scores = {u.id: u.score for u in units}
            if seeded:
                unit_scores[label].setdefault(task.name, []).append(scores)
            else:
                unit_scores[label][task.name] = scores

        from harness.report.viewer import RunView

        # The sample viewer's pages, linked from each cell. A seeds row has one run per seed and
        # its cell is their mean, so no single run's page stands for it: those cells get no link.
        viewed: dict[tuple[str, str], RunView] = {}
        for c in spec.checkpoints:  # scored runs: their samples are the whole result, no model
            if c.runs is not None:
                for task in tasks:
                    item_map = {it.id: it for it in items[task.name]}
                    records = scored_records(c, task, item_map)
                    collect(c.name, task, scored_units(task, item_map, records), False)
                    viewed[(c.name, task.name)] = RunView(c.name, task, item_map, records)
        judged = []  # (label, task, items, run_dir, result) of tasks a judge model scores (harness.judge)
        for c, b, blind in runs:
            name, seeded = c.name, c.seeds is not None
            lmms_cols = {}
            if lmms_tasks and not blind and not seeded:  # lmms-eval loads its own model: before ours
                from harness.bridges.lmms import leaderboard_columns as lmms_columns

                s.release_models()
                lmms_cols = lmms_columns(name, refs[b.ckpt], lmms_tasks, spec, gen, device)
            backend = s.backend(refs[b.ckpt])
            settings = EvalSettings(gen=gen, batch_size=int(g.get("batch_size", 16)), blind=blind)
            label = f"{name}+blind" if blind else name
            for task in tasks:
                run_dir = s.run_dir(f"{name}/{Path(b.ckpt).name}" if seeded else name, task, blind)
                result = s.evaluate(backend, task, items[task.name], settings, run_dir)
                if not seeded:
                    viewed[(label, task.name)] = RunView(label, task, {it.id: it for it in items[task.name]},
                                                         result.records)
                if getattr(task, "judged", False):
                    if seeded:
                        raise HarnessError(f"checkpoint {name}: judged task {task.name} takes one checkpoint per row; "
                                           "drop seeds or the task")
                    judged.append((label, task, {it.id: it for it in items[task.name]}, run_dir, result))
                else:
                    collect(label, task, result.units, seeded)
            unit_scores[name].update(lmms_cols)  # after our tasks, in the spec's column order
        if judged:
            from harness.judge.pipeline import Judge, JudgeSettings
            from harness.judge.runs import leaderboard_columns

            judge = Judge(s.backend(judge_ref), s.cache, JudgeSettings(seed=spec.seed), s.progress)
            for label, columns in leaderboard_columns(judge, judged, spec.baseline).items():
                unit_scores[label].update(columns)

    unit_scores = {label: columns for label, columns in unit_scores.items() if columns}
    title = f"Leaderboard: {spec.name} (baseline {spec.baseline})"
    # Statistics and renders are a pure function of the unit scores and these settings: an
    # unchanged re-run reads the frame back instead of bootstrapping and plotting again.
    primary = {c.name: c.primary for c in spec.checkpoints if c.primary is not None}
    primary.update({f"{b}+blind": primary[b] for b in spec.blind if b in primary})  # blind rows follow their row
    key = render_key([unit_scores, clusters, spec.ci, spec.correction, primary], spec.baseline, spec.bootstrap,
                     spec.seed, title)
    df = read_render_cache(spec.out_dir, key)
    from harness.report.viewer import leaderboard_pages

    viewed = {k: v for k, v in viewed.items() if k[1] in unit_scores.get(k[0], {})}  # judged runs have no cell
    links = leaderboard_pages(spec.out_dir, viewed, spec.baseline, unit_scores)
    if df is None:
        from harness.stats.board import leaderboard_frame

        n_tasks = len({t for columns in unit_scores.values() for t in columns})
        with progress_bar() as progress:
            stats_task = progress.add_task(f"bootstrap ({spec.bootstrap} resamples)", total=n_tasks)
            df = leaderboard_frame(unit_scores, spec.baseline, B=spec.bootstrap, seed=spec.seed, ci=spec.ci,
                                   correction=spec.correction, clusters=clusters,
                                   on_task=lambda _: progress.advance(stats_task, 1), primary=primary)
        spec.out_dir.mkdir(parents=True, exist_ok=True)
        plot = spec.out_dir / "forest.png"
        report.forest_plot(df, plot)
        report.write_csv(df, spec.out_dir / "leaderboard.csv")
        report.write_markdown(df, spec.out_dir / "leaderboard.md", title)
        report.write_html(df, spec.out_dir / "leaderboard.html", title, plot_png=plot, links=links)
        write_render_cache(spec.out_dir, key, df)
    Console().print(report.rich_table(df))
    return df


def build_checkpoints(spec: LeaderboardSpec, build_recipe: Callable[[CheckpointSpec], None] | None,
                      data_fingerprint: Callable[[dict], Any] | None = None) -> None:
    """Train the recipe checkpoints whose folder does not exist yet (one per seed of a seeds row);
    check the others are current."""
    builds = [b for c in spec.checkpoints if c.runs is None for b in c.builds()]
    for c in builds:
        if c.recipe is None:
            continue
        if Path(c.ckpt).exists():
            check_recipe_current(c, data_fingerprint)
            continue
        if build_recipe is None:
            raise HarnessError(f"checkpoint {c.name} needs training (recipe) but no trainer is available")
        build_recipe(c)
        for other in builds:  # rows one build made (self_train's iterations) share its stamp
            if other.recipe == c.recipe and Path(other.ckpt).is_dir():
                stamp_recipe(other, data_fingerprint)


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


RENDERED = ("leaderboard.csv", "leaderboard.md", "leaderboard.html", "forest.png")
RENDER_CACHE = ".render-cache.json"


def scored_records(c: CheckpointSpec, task: Any, item_map: dict) -> list[dict[str, Any]]:
    """The sample rows of a scored-runs row: <runs>/<task run folder>/samples.jsonl (as `harness
    eval` names it), else <runs>/<task name>/samples.jsonl; only the rows of the task's items."""
    from harness.core.runner import run_name
    from harness.core.store import read_sample_lines

    if getattr(task, "judged", False):
        raise HarnessError(f"checkpoint {c.name}: judged task {task.name} needs a model; drop it or give the row a checkpoint")
    root = Path(c.runs or "")
    found = [d for d in (root / run_name(task, False), root / task.name) if (d / "samples.jsonl").is_file()]
    if not found:
        raise HarnessError(f"scored runs: {root / task.name / 'samples.jsonl'} not found; run `harness eval` or "
                           f"`harness score --task {task.name} --out {root / task.name}` first, or drop the task")
    return [r for r in read_sample_lines(found[0] / "samples.jsonl") if r["id"] in item_map]


def scored_units(task: Any, item_map: dict, records: list[dict[str, Any]]) -> list:
    """A scored-runs row's units, aggregated by the task like a fresh run."""
    from collections import defaultdict

    per_item: dict[str, list[float]] = defaultdict(list)
    for r in records:
        per_item[r["id"]].append(float(r["score"]))
    return task.units(item_map, dict(per_item))


def render_key(unit_scores: Any, baseline: str, bootstrap: int, seed: int, title: str) -> str:
    """Hash of everything the statistics and renders depend on, the code that makes them included."""
    import hashlib
    import json

    order = [[label, list(columns)] for label, columns in unit_scores[0].items()]  # row order of the frame
    h = hashlib.sha256(json.dumps([unit_scores, order, baseline, bootstrap, seed, title], sort_keys=True).encode())
    for module in ("stats/ci.py", "stats/board.py", "report/render.py", "report/leaderboard.py",
                   "report/viewer.py"):  # viewer: the links
        h.update((Path(__file__).parents[1] / module).read_bytes())
    return h.hexdigest()


def read_render_cache(out_dir: Path, key: str):
    """The cached leaderboard frame when `key` matches and every render is still there, else None."""
    import json

    path = out_dir / RENDER_CACHE
    if not path.is_file() or not all((out_dir / name).is_file() for name in RENDERED):
        return None
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") != key:
            return None
        import pandas as pd

        frame = cached["frame"]
        return pd.DataFrame({c: pd.Series(frame["data"][c], dtype=frame["dtypes"][c]) for c in frame["columns"]},
                            columns=frame["columns"])
    except (ValueError, KeyError, TypeError):  # a damaged cache is recomputed, never trusted
        return None


def write_render_cache(out_dir: Path, key: str, df) -> None:
    import json

    from harness.core.store import atomic_write_text

    # Column lists of Python scalars: json writes floats with repr, so the frame reads back exactly.
    frame = {"columns": [str(c) for c in df.columns], "dtypes": {str(c): str(t) for c, t in df.dtypes.items()},
             "data": {str(c): df[c].tolist() for c in df.columns}}
    atomic_write_text(out_dir / RENDER_CACHE, json.dumps({"key": key, "frame": frame}))
