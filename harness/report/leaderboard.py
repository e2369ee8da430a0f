"""Leaderboards: a YAML spec -> the run folders it needs -> statistics -> renders.

    harness leaderboard --spec leaderboards/default.yaml

Five steps, each a small function testable alone; only `run_board` loads a model, and everything
after it reads run folders (harness.core.rundir.read_run), so a scored-runs row and a freshly run
row are the same thing to the board:
  plan    spec -> the runs the board needs: one PlannedRun per (row, build, task, blind) with its folder
  run     build missing recipe checkpoints, evaluate every planned model run (cached, resumable),
          run lmms-eval columns and the judge over judged tasks; writes run folders, returns nothing
  read    every planned folder read back: samples re-scored by each task's current rule, scores
          checked, notes collected; unit scores per row and column
  board   statistics over the unit scores (harness.stats.board), cached by what they depend on
  render  CSV, Markdown, HTML with links to the sample viewer's pages, forest plot, terminal table

Spec keys (unknown keys are errors, so a typo never silently changes a leaderboard):
  name: default                  # output folder leaderboards/<name>/ (default: the file's stem)
  baseline: tiny                 # the checkpoint every other one is compared with
  checkpoints:                   # names (`tiny`), paths, or {name, path} / {name, recipe} / {name, runs} / {name, api}
    - tiny
    - {name: sft, recipe: {trainer: sft, base: tiny, task: geoqa, config: {}}}
    - {name: mpo, seeds: [0, 1, 2], recipe: {trainer: mpo, base: tiny, task: geoqa}}  # one build per seed
    - {name: theirs, runs: runs/theirs}   # scored runs: runs/theirs/<task>/samples.jsonl, no model loaded
    - {name: gpt4o, api: {model: gpt-4o, base_url: https://api.openai.com/v1}}  # served (key: $OPENAI_API_KEY)
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
mean over seeds with a CI from seed and item variance components (harness/stats/seeds.py) and the seed range.
Recipe checkpoints are built (trained) only when their folder does not exist yet. A recipe with
`out: DIR` trains DIR, a folder of several checkpoints, and the row's `path` is one of them: rows
sharing the recipe (self_train_iter1..K) share one build (trainers/recipes.py); with `seeds` each
seed's build writes <out>/seed<k>/ (its own iterations), and each row reads its path inside it.
Rows that run no model (scored runs only) never look at images.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from harness.core.task import Task
from harness.core.types import Item
from harness.errors import HarnessError
from harness.report.spec import (RECIPE_STAMP, CheckpointSpec, LeaderboardSpec, TaskSpec, build_checkpoints,  # noqa: F401
                                 check_recipe_current, load_spec, recipe_fingerprint, stamp_recipe)


# --- plan ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedRun:
    """One run folder the board reads: a model run (`build` set) or a scored-runs row's folder."""

    label: str  # the board's row: the spec row's name, or "<name>+blind"
    row: CheckpointSpec
    task: Task
    run_dir: Path
    build: CheckpointSpec | None = None  # the checkpoint evaluated (one seed of a seeds row); None: no model
    blind: bool = False

    @property
    def seeded(self) -> bool:
        return self.row.seeds is not None


@dataclass
class Plan:
    spec: LeaderboardSpec
    tasks: list[Task]  # the harness tasks, in the spec's order
    runs: list[PlannedRun]  # in the order they run: row by row, a build's blind run right after it
    lmms: list[tuple[str, TaskSpec]] = field(default_factory=list)  # (column, spec entry) run by lmms-eval
    lmms_rows: dict[str, CheckpointSpec] = field(default_factory=dict)  # label -> checkpoint lmms-eval runs on

    @property
    def labels(self) -> list[str]:
        """The board's rows, in the spec's order (blind rows last)."""
        return [c.name for c in self.spec.checkpoints] + [f"{b}+blind" for b in self.spec.blind]

    def model_runs(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.build is not None]


def plan_board(spec: LeaderboardSpec, tasks: list[Task] | None = None) -> Plan:
    """Every run the board needs, checked before anything runs (scored-runs folders must exist;
    judged tasks need a model: a seeds row's judged cell averages its seeds' judged answers)."""
    from harness.core.task import get_task

    tasks = tasks if tasks is not None else [get_task(t.name, **t.options) for t in spec.tasks if t.engine == "harness"]
    output = Path(spec.output_dir)
    runs: list[PlannedRun] = []
    for c in spec.checkpoints:
        if c.runs is not None:
            runs += [PlannedRun(c.name, c, task, scored_run_dir(c, task)) for task in tasks]
            continue
        for b in c.builds():
            for blind in (False, True) if c.name in spec.blind else (False,):
                folder = output / (f"{c.name}/seed{b.seed}" if c.seeds is not None else c.name)
                for task in tasks:
                    label = f"{c.name}+blind" if blind else c.name
                    runs.append(PlannedRun(label, c, task, folder / _run_name(task, blind), b, blind))
    lmms = [(column, t) for t in spec.tasks if t.engine == "lmms-eval" for column in _lmms_columns(t)]
    rows = {c.name: c for c in spec.checkpoints if c.runs is None and c.seeds is None} if lmms else {}
    return Plan(spec, tasks, runs, lmms, rows)


def _run_name(task: Task, blind: bool) -> str:
    from harness.core.runner import run_name

    return run_name(task, blind)


def _lmms_columns(t: TaskSpec) -> list[str]:
    from harness.bridges.lmms import parse_task_specs

    return [f"lmms-{name}" for name in parse_task_specs([t.name])[0]]


def scored_run_dir(c: CheckpointSpec, task: Task) -> Path:
    """A scored-runs row's folder for `task`: <runs>/<task run folder> (as `harness eval` names it),
    else <runs>/<task name>."""
    if task.judged:
        raise HarnessError(f"checkpoint {c.name}: judged task {task.name} needs a model; drop it or give the row a checkpoint")
    root = Path(c.runs or "")
    found = [d for d in (root / _run_name(task, False), root / task.name) if (d / "samples.jsonl").is_file()]
    if not found:
        raise HarnessError(f"scored runs: {root / task.name / 'samples.jsonl'} not found; run `harness eval` or "
                           f"`harness score --task {task.name} --out {root / task.name}` first, or drop the task")
    return found[0]


# --- run -------------------------------------------------------------------------------------------
def run_board(plan: Plan, s: Any, items: dict[str, list[Item]], build_recipe: Callable[[CheckpointSpec], None] | None = None,
              data_fingerprint: Callable[[dict], Any] | None = None, device: str | None = None, jobs: int = 1) -> None:
    """Write every run folder the plan names: recipe checkpoints built, models evaluated (cached:
    an unchanged board loads no model), lmms-eval columns run, judged tasks judged. `s` is the
    Session; at most one model is loaded at a time."""
    from harness.core.runner import check_images

    spec = plan.spec
    models = plan.model_runs()
    for task in {r.task.name: r.task for r in models}.values():
        check_images(task, items[task.name])  # only tasks a model answers need their images
    build_checkpoints(spec, build_recipe, data_fingerprint, jobs)
    # Keyed by checkpoint and server: two served rows may name one model on different URLs.
    refs = {(r.build.ckpt, r.build.api_base): s.checkpoint(r.build.ckpt, api_base=r.build.api_base)
            for r in models if r.build is not None}
    judge_ref = s.checkpoint(spec.judge) if any(r.task.judged for r in models) else None
    lmms = dict(plan.lmms_rows)  # each row's lmms-eval columns run before its own runs
    for r in models:
        assert r.build is not None
        if r.label in lmms:
            row = lmms.pop(r.label)
            _run_lmms(plan, r.label, s, refs[row.ckpt, row.api_base], device)
        s.evaluate(s.backend(refs[r.build.ckpt, r.build.api_base]), r.task, items[r.task.name],
                   replace(spec.settings, blind=r.blind), r.run_dir)
    for label, row in lmms.items():  # a board of lmms-eval columns only
        _run_lmms(plan, label, s, s.checkpoint(row.ckpt), device)
    judged = [r for r in models if r.task.judged]
    if judged:
        from harness.judge.pipeline import Judge, JudgeSettings
        from harness.judge.runs import GOLD_VOTES, leaderboard_columns

        judge = Judge(s.backend(judge_ref), s.cache, JudgeSettings(seed=spec.seed), s.progress)
        leaderboard_columns(judge, [(r.label, _read(r, items)) for r in judged], spec.baseline)
        votes = Path(s.data_dir) / GOLD_VOTES
        if votes.is_file():  # the legend says how far the judge agrees with known verdicts
            from harness.core.task import task_class
            from harness.judge.pipeline import agreement

            agreement(judge, task_class("critic").read_votes(votes), judge_agreement_dir(spec),
                      {"votes_file": str(votes)})


def _run_lmms(plan: Plan, label: str, s: Any, ref: Any, device: str | None) -> None:
    from harness.bridges.lmms import LmmsRun, run_lmms_eval

    spec = plan.spec
    s.release_models()  # lmms-eval loads its own model
    for t in [t for i, (_, t) in enumerate(plan.lmms) if all(t is not u for _, u in plan.lmms[:i])]:
        run = LmmsRun(settings=replace(spec.settings, ci_method="bootstrap"), output_dir=Path(spec.output_dir),
                      label=label, device=device, metric=t.options.get("metric"))
        run_lmms_eval(ref, [t.name], run)


# --- read ------------------------------------------------------------------------------------------
@dataclass
class BoardInput:
    """What the statistics and pages read: unit scores per row and column, clusters, the runs behind cells."""

    unit_scores: dict[str, dict[str, Any]]  # label -> column -> {unit id: score}, or one such mapping per seed
    clusters: dict[str, dict[str, str]]  # column -> {unit id: cluster} where units are clustered
    views: dict[tuple[str, str], Any]  # (label, column) -> the run a cell links to (not for seeds rows)
    notes: list[str] = field(default_factory=list)  # warnings about the runs read
    legend: list[str] = field(default_factory=list)  # lines every render shows beside the statistics' legend


def read_board(plan: Plan, items: dict[str, list[Item]]) -> BoardInput:
    """Every planned run folder read back (re-scored, checked), in the board's row and column order:
    a row's harness tasks, then its lmms-eval columns, then its judged columns."""
    from harness.core.rundir import Run

    spec = plan.spec
    scores: dict[str, dict[str, Any]] = {label: {} for label in plan.labels}
    clusters: dict[str, dict[str, str]] = {}
    views: dict[tuple[str, str], Run] = {}
    notes: list[str] = []
    legend: list[str] = []
    for r in plan.runs:
        run = _read(r, items, allow_torn=spec.allow_missing and r.build is None)
        notes += run.notes()
        if not r.seeded:
            views[(r.label, r.task.name)] = run
        if r.task.judged:
            continue
        units = run.units()
        clusters_of = {u.id: u.cluster for u in units if u.cluster is not None}
        if clusters_of:
            clusters.setdefault(r.task.name, {}).update(clusters_of)
        unit_scores = {u.id: u.score for u in units}
        if r.seeded:
            scores[r.label].setdefault(r.task.name, []).append(unit_scores)
        else:
            scores[r.label][r.task.name] = unit_scores
    for label in plan.lmms_rows:
        for column, run in _read_lmms(plan, label).items():
            scores[label][column] = {u.id: u.score for u in run.units()}
            notes += run.notes()
    judged = [r for r in plan.model_runs() if r.task.judged]
    if judged:
        from harness.judge.runs import read_judged_columns

        for label, columns in read_judged_columns([(r.label, r.task, r.run_dir, r.seeded) for r in judged],
                                                  spec.baseline).items():
            scores[label].update(columns)
        legend.append(judge_note(spec))
    return BoardInput({label: columns for label, columns in scores.items() if columns}, clusters, views, notes, legend)


def judge_agreement_dir(spec: LeaderboardSpec) -> Path:
    return Path(spec.output_dir) / "judge-agreement" / Path(spec.judge).name


def judge_note(spec: LeaderboardSpec) -> str:
    """The legend's line on the judge: which checkpoint, and its agreement with known verdicts."""
    import json

    from harness.judge.runs import GOLD_VOTES

    path = judge_agreement_dir(spec) / "judged.json"
    if not path.is_file():
        return f"judged columns: judge {spec.judge}; its agreement was not measured (no {GOLD_VOTES} in the data dir)"
    s = json.loads(path.read_text(encoding="utf-8"))
    agree, (low, high) = s.get("agreement"), s.get("agreement_ci") or (None, None)
    shown = "n/a" if agree is None else f"{agree:.1f}% [{low:.1f}, {high:.1f}]"
    consistency = s.get("position_consistency")
    consistency = "n/a" if consistency is None else f"{consistency:.1f}%"
    return (f"judged columns: judge {spec.judge}, agreement with {s.get('votes')} gold verdicts {shown} "
            f"({s.get('missing')} unparsable), position consistency {consistency}")


def _read(r: PlannedRun, items: dict[str, list[Item]], allow_torn: bool = False):
    from harness.core.rundir import read_run

    item_map = {it.id: it for it in items[r.task.name]}
    return read_run(r.run_dir, r.task, item_map, allow_torn=allow_torn, unknown_ids="skip" if r.build is None else "error")


def _read_lmms(plan: Plan, label: str) -> dict[str, Any]:
    from harness.bridges.lmms import read_lmms_run

    return {column: read_lmms_run(Path(plan.spec.output_dir) / label / column) for column, _ in plan.lmms}


# --- board -----------------------------------------------------------------------------------------
def board_frame(spec: LeaderboardSpec, data: BoardInput, title: str):
    """The statistics (harness.stats.board.leaderboard_frame), or the cached frame when nothing
    they depend on changed and every render is still there."""
    from harness.core.progress import progress_bar

    primary = {c.name: c.primary for c in spec.checkpoints if c.primary is not None}
    primary.update({f"{b}+blind": primary[b] for b in spec.blind if b in primary})  # blind rows follow their row
    key = render_key([data.unit_scores, data.clusters, spec.ci, spec.correction, primary, data.legend], spec.baseline,
                     spec.bootstrap, spec.seed, title)
    df = read_render_cache(spec.out_dir, key)
    if df is not None:
        return df, key, True
    from harness.stats.board import leaderboard_frame

    n_tasks = len({t for columns in data.unit_scores.values() for t in columns})
    with progress_bar() as progress:
        stats_task = progress.add_task(f"bootstrap ({spec.bootstrap} resamples)", total=n_tasks)
        df = leaderboard_frame(data.unit_scores, spec.baseline, B=spec.bootstrap, seed=spec.seed, ci=spec.ci,
                               correction=spec.correction, clusters=data.clusters,
                               on_task=lambda _: progress.advance(stats_task, 1), primary=primary)
    return df, key, False


# --- render ----------------------------------------------------------------------------------------
def render_board(spec: LeaderboardSpec, data: BoardInput, df, key: str, cached: bool, title: str) -> None:
    """The sample viewer's pages (every cell links to its run's page), then the board's files
    (unless the cached frame's files are all there) and the terminal table."""
    from rich.console import Console

    from harness.report import render as report
    from harness.report.viewer import RunView, leaderboard_pages

    views = {k: RunView(k[0], run.task, run.items, run.records) for k, run in data.views.items()
             if k[1] in data.unit_scores.get(k[0], {})}  # judged runs' answers have no cell of their own
    links = leaderboard_pages(spec.out_dir, views, spec.baseline, data.unit_scores)
    if not cached:
        spec.out_dir.mkdir(parents=True, exist_ok=True)
        plot = spec.out_dir / "forest.png"
        report.forest_plot(df, plot)
        report.write_csv(df, spec.out_dir / "leaderboard.csv")
        report.write_markdown(df, spec.out_dir / "leaderboard.md", title, data.legend)
        report.write_html(df, spec.out_dir / "leaderboard.html", title, plot_png=plot, links=links, legend_lines=data.legend)
        write_render_cache(spec.out_dir, key, df)
    Console().print(report.rich_table(df, data.legend))


# --- the five steps --------------------------------------------------------------------------------
def run_leaderboard(spec: LeaderboardSpec, build_recipe: Callable[[CheckpointSpec], None] | None = None,
                    device: str | None = None, data_fingerprint: Callable[[dict], Any] | None = None, jobs: int = 1):
    """plan -> run -> read -> board -> render; returns the board's frame. `build_recipe` trains a
    recipe row's checkpoint (trainers.recipes); `data_fingerprint(recipe)` hashes the data files a
    recipe names, so a built row whose files changed is stale like one whose recipe changed; `jobs`
    builds run at once."""
    from harness.core.outputs import check_output_folder
    from harness.session import Session

    check_output_folder(spec.out_dir, "leaderboard", flag="leaderboard folder")  # before any work
    plan = plan_board(spec)
    with Session(spec.output_dir, spec.data_dir, device=device, one_model=True) as s:
        items = {task.name: s.load(task, spec.limit, check_images=False) for task in plan.tasks}
        run_board(plan, s, items, build_recipe, data_fingerprint, device, jobs)
    data = read_board(plan, items)
    for note in dict.fromkeys(data.notes):
        print(f"warning: {note}", file=sys.stderr)
    title = f"Leaderboard: {spec.name} (baseline {spec.baseline})"
    df, key, cached = board_frame(spec, data, title)
    render_board(spec, data, df, key, cached, title)
    return df


# --- the render cache ------------------------------------------------------------------------------
RENDERED = ("leaderboard.csv", "leaderboard.md", "leaderboard.html", "forest.png")
RENDER_CACHE = ".render-cache.json"


def render_key(unit_scores: Any, baseline: str, bootstrap: int, seed: int, title: str) -> str:
    """Hash of everything the statistics and renders depend on, the code that makes them included."""
    import hashlib
    import json

    order = [[label, list(columns)] for label, columns in unit_scores[0].items()]  # row order of the frame
    h = hashlib.sha256(json.dumps([unit_scores, order, baseline, bootstrap, seed, title], sort_keys=True).encode())
    for module in render_code():
        h.update(module.read_bytes())
    return h.hexdigest()


def render_code() -> list[Path]:
    """Every module of the statistics and the renders (a changed interval method, e.g. stats/seeds.py,
    must re-render a board whose samples did not change)."""
    root = Path(__file__).parents[1]
    return sorted([*(root / "stats").glob("*.py"), *(root / "report").glob("*.py")])


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
