"""Leaderboards: a YAML spec -> evaluate every checkpoint x task (cached) -> statistics -> renders.

    harness leaderboard --spec leaderboards/default.yaml

Spec keys (unknown keys are errors, so a typo never silently changes a leaderboard):
  name: default                  # output folder leaderboards/<name>/ (default: the file's stem)
  baseline: tiny                 # the checkpoint every other one is compared with
  checkpoints:                   # names (`tiny`), paths, or {name, path} / {name, recipe}
    - tiny
    - {name: sft, recipe: {trainer: sft, base: tiny, task: geoqa, config: {}}}
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
Recipe checkpoints are built (trained) only when their folder does not exist yet. A recipe with
`out: DIR` trains DIR, a folder of several checkpoints, and the row's `path` is one of them: rows
sharing the recipe (self_train_iter1..K) share one build (trainers/recipes.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError

SPEC_KEYS = {"name", "baseline", "checkpoints", "blind", "tasks", "data_dir", "generation", "seed", "bootstrap", "output_dir", "limit",
             "judge"}
GEN_KEYS = {"temperature", "top_p", "top_k", "max_new_tokens", "batch_size"}


@dataclass
class CheckpointSpec:
    name: str
    ckpt: str  # what resolve_checkpoint takes: a name or a path
    recipe: dict[str, Any] | None = None


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
    ckpts = []
    for entry in raw["checkpoints"] or []:
        if isinstance(entry, str):
            ckpts.append(CheckpointSpec(Path(entry).name if "/" in entry else entry, entry))
        elif isinstance(entry, dict) and "name" in entry and ("path" in entry or "recipe" in entry):
            recipe = entry.get("recipe")
            if recipe is not None and not (isinstance(recipe, dict) and "trainer" in recipe):
                raise bad(f"checkpoint {entry['name']!r}: a recipe needs at least a 'trainer'")
            path_ = entry.get("path") or str(Path("checkpoints") / "built" / entry["name"])
            ckpts.append(CheckpointSpec(str(entry["name"]), path_, recipe))
        else:
            raise bad(f"checkpoint entry {entry!r}: give a name/path string, or {{name, path}} or {{name, recipe}}")
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
    gen = dict(raw.get("generation") or {})
    if set(gen) - GEN_KEYS:
        raise bad(f"unknown generation key(s) {', '.join(sorted(set(gen) - GEN_KEYS))}; allowed: {', '.join(sorted(GEN_KEYS))}")
    return LeaderboardSpec(
        path=path, name=str(raw.get("name") or path.stem), baseline=raw["baseline"], checkpoints=ckpts,
        tasks=tasks, blind=blind, data_dir=raw.get("data_dir"), generation=gen,
        seed=int(raw.get("seed", 0)), bootstrap=int(raw.get("bootstrap", 10_000)),
        output_dir=str(raw.get("output_dir") or "runs"), limit=_optional_positive(raw.get("limit"), "limit", bad),
        judge=str(raw.get("judge") or "tiny"),
    )


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

    from harness.core.runner import EvalSettings
    from harness.core.task import get_task
    from harness.core.types import GenConfig
    from harness.report import render as report
    from harness.session import Session

    g = spec.generation
    gen = GenConfig(max_new_tokens=g.get("max_new_tokens"), temperature=float(g.get("temperature", 0.0)),
                    top_p=float(g.get("top_p", 1.0)), top_k=int(g.get("top_k", 0)), seed=spec.seed)
    # At most one model is loaded at a time (a GPU never holds two checkpoints).
    with Session(spec.output_dir, spec.data_dir, device=device, one_model=True) as s:
        tasks = [get_task(t.name, **t.options) for t in spec.tasks if t.engine == "harness"]
        lmms_tasks = [t for t in spec.tasks if t.engine == "lmms-eval"]
        items = {task.name: s.load(task, spec.limit) for task in tasks}
        build_checkpoints(spec, build_recipe, data_fingerprint)
        refs = {c.name: s.checkpoint(c.ckpt) for c in spec.checkpoints}
        judge_ref = s.checkpoint(spec.judge) if any(getattr(t, "judged", False) for t in tasks) else None

        # A checkpoint's blind run follows its own run, so both use one model load. Rows keep the spec's order.
        runs = [(c.name, blind) for c in spec.checkpoints for blind in (False, True) if not blind or c.name in spec.blind]
        unit_scores: dict[str, dict[str, dict[str, float]]] = {
            label: {} for label in [c.name for c in spec.checkpoints] + [f"{b}+blind" for b in spec.blind]}
        judged = []  # (label, task, items, run_dir, result) of tasks a judge model scores (harness.judge)
        from harness.report.viewer import RunView

        viewed: dict[tuple[str, str], RunView] = {}  # the sample viewer's pages, linked from each cell
        for name, blind in runs:
            lmms_cols = {}
            if lmms_tasks and not blind:  # lmms-eval loads its own model: before ours, not beside it
                from harness.bridges.lmms import leaderboard_columns as lmms_columns

                s.release_models()
                lmms_cols = lmms_columns(name, refs[name], lmms_tasks, spec, gen, device)
            backend = s.backend(refs[name])
            settings = EvalSettings(gen=gen, batch_size=int(g.get("batch_size", 16)), blind=blind)
            label = f"{name}+blind" if blind else name
            for task in tasks:
                run_dir = s.run_dir(name, task, blind)
                result = s.evaluate(backend, task, items[task.name], settings, run_dir)
                viewed[(label, task.name)] = RunView(label, task, {it.id: it for it in items[task.name]}, result.records)
                if getattr(task, "judged", False):
                    judged.append((label, task, {it.id: it for it in items[task.name]}, run_dir, result))
                else:
                    unit_scores[label][task.name] = result.unit_scores
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
    key = render_key(unit_scores, spec.baseline, spec.bootstrap, spec.seed, title)
    df = read_render_cache(spec.out_dir, key)
    from harness.report.viewer import leaderboard_pages

    viewed = {k: v for k, v in viewed.items() if k[1] in unit_scores.get(k[0], {})}  # judged runs have no cell
    links = leaderboard_pages(spec.out_dir, viewed, spec.baseline, unit_scores)
    if df is None:
        from harness.stats.ci import leaderboard_frame

        df = leaderboard_frame(unit_scores, spec.baseline, B=spec.bootstrap, seed=spec.seed)
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
    """Train the recipe checkpoints whose folder does not exist yet; check the others are current."""
    for c in spec.checkpoints:
        if c.recipe is None:
            continue
        if Path(c.ckpt).exists():
            check_recipe_current(c, data_fingerprint)
            continue
        if build_recipe is None:
            raise HarnessError(f"checkpoint {c.name} needs training (recipe) but no trainer is available")
        build_recipe(c)
        for other in spec.checkpoints:  # rows one build made (self_train's iterations) share its stamp
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


def render_key(unit_scores: dict, baseline: str, bootstrap: int, seed: int, title: str) -> str:
    """Hash of everything the statistics and renders depend on, the code that makes them included."""
    import hashlib
    import json

    order = [[label, list(columns)] for label, columns in unit_scores.items()]  # row order of the frame
    h = hashlib.sha256(json.dumps([unit_scores, order, baseline, bootstrap, seed, title], sort_keys=True).encode())
    for module in ("stats/ci.py", "report/render.py", "report/leaderboard.py", "report/viewer.py"):  # viewer: the links
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
