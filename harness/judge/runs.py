"""The judge over run folders: judged tasks (critic) in `harness eval` / `harness score`, `harness
critic agreement`, and the leaderboard's judged columns. The pipeline itself (prompts, parsing,
cached judge, passes over stored samples, summaries) is harness.judge.pipeline; this module wires it
to finished runs and the terminal (the commands build the judge and the runs from their flags).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.core.types import Item
from harness.errors import HarnessError
from harness.judge.pipeline import Judge, JudgeResult, judge_pairwise, judge_pointwise

# Known verdicts on the critic test questions (tasks/synth/critic.py writes them), relative to a data dir.
GOLD_VOTES = Path("critic") / "votes_gold.json"


def bootstrap_only(ci_method: str) -> str:
    """Judge scores are 0-100: the bootstrap (what `--ci auto`, the default, picks for them)."""
    if ci_method not in ("auto", "bootstrap"):
        raise HarnessError(f"--ci {ci_method} needs 0/1 scores; judge scores are 0-100, so use the bootstrap (drop --ci)")
    return "bootstrap"


def judge_runs(judge: Judge, task: Any, items: dict[str, Item], answers: Any, vs: Any = None, vs_name: str = "",
               vs_info: Any = None) -> JudgeResult:
    """Judge one task's answers (a finished run, harness.core.rundir.Run: `.records`, `.summary`,
    `.dir`) pointwise, or against `vs`'s answers (pairwise, both orders; written to
    <run>-vs-<vs_name>/, its judged.json naming `vs_info`, default the name)."""
    if vs is None:
        return judge_pointwise(judge, items, answers.records, answers.dir, answers.summary)
    pair_dir = answers.dir.parent / f"{answers.dir.name}-vs-{vs_name}"
    return judge_pairwise(judge, items, answers.records, vs.records, pair_dir,
                          {**answers.summary, "vs": vs_name if vs_info is None else vs_info})


def leaderboard_columns(judge: Judge, runs: list[tuple[str, Any]], baseline: str) -> dict[str, dict[str, dict[str, float]]]:
    """The leaderboard's judged columns: label -> {task: pointwise units, task-vs-baseline: preference units}.

    `runs` holds (label, run) of finished generation runs (harness.core.rundir.Run). A column
    whose every judge reply was unparsable is left out (the judged.json beside the samples says so).
    """
    columns: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    baseline_runs = {run.task.name: run for label, run in runs if label == baseline}
    for label, run in runs:
        columns.setdefault(label, {})  # every label appears, even when no judge reply could be parsed
        point = judge_runs(judge, run.task, run.items, run)
        if point.units:
            columns[label][run.task.name] = point.units
        if label != baseline and run.task.name in baseline_runs:
            pair = judge_runs(judge, run.task, run.items, run, baseline_runs[run.task.name], baseline)
            if pair.units:
                columns[label][f"{run.task.name}-vs-{baseline}"] = pair.units
    return dict(columns)


def read_judged_columns(runs: list[tuple[str, Any, Path, bool]], baseline: str) -> dict[str, dict[str, Any]]:
    """The judged columns read back from the judge's files: label -> {task: pointwise units,
    task-vs-baseline: preference units}. `runs` holds (label, task, run folder, seeded) of judged
    runs, as leaderboard_columns judged them; a seeds row's column is a list, one units mapping
    per seed (as the board's seeded cells). A column without one parsed reply is left out."""
    from harness.core.files import read_jsonl
    from harness.judge.pipeline import pairwise_units, pointwise_units

    def units(folder: Path, of) -> dict[str, float]:
        path = folder / "judgements.jsonl"
        if not path.is_file():
            raise HarnessError(f"{path} not found: the judge has not scored {folder}; run the board again")
        return of(read_jsonl(path))

    columns: dict[str, dict[str, Any]] = defaultdict(dict)

    def put(label: str, column: str, values: dict[str, float], seeded: bool) -> None:
        if not values:
            return
        if seeded:
            columns[label].setdefault(column, []).append(values)
        else:
            columns[label][column] = values

    baseline_tasks = {task.name for label, task, _, _ in runs if label == baseline}
    for label, task, run_dir, seeded in runs:
        columns.setdefault(label, {})
        put(label, task.name, units(run_dir, pointwise_units), seeded)
        if label != baseline and task.name in baseline_tasks:
            pair = units(run_dir.parent / f"{run_dir.name}-vs-{baseline}", pairwise_units)
            put(label, f"{task.name}-vs-{baseline}", pair, seeded)
    return dict(columns)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def print_judged(summaries: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    pairs = any(s["mode"] == "pairwise" for s in summaries)
    table = Table(title=title)
    for col in ("task", "mode", "n", "score", "95% CI", "missing") + (("W/T/L %", "consistent %") if pairs else ()):
        table.add_column(col, justify="left" if col in ("task", "mode") else "right", no_wrap=True)
    for s in summaries:
        row = [s.get("task", ""), s["mode"], str(s["n"]), _pct(s["score"]),
               f"[{_pct(s['ci_low'])}, {_pct(s['ci_high'])}]", f"{s['missing']}/{s['n_samples']}"]
        if s["mode"] == "pairwise":
            row += ["/".join(_pct(s[f"{o}_rate"]) for o in ("win", "tie", "loss")), _pct(s["position_consistency"])]
        table.add_row(*row)
    Console().print(table)
    for s in summaries:
        if s["score"] is None:
            Console(stderr=True).print(f"warning: {s.get('task')}: no judge reply could be parsed; see judgements.jsonl")


def print_agreement(s: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from harness.core.text import visible

    table = Table(title=title)
    table.add_column("measure (%)")
    table.add_column("value", justify="right", no_wrap=True)
    for name in ("agreement", "agreement_swapped", "agreement_decisive"):
        low, high = s[f"{name}_ci"]
        table.add_row(name, f"{_pct(s[name])} [{_pct(low)}, {_pct(high)}]")
    table.add_row("votes (unparsable replies)", f"{s['votes']} ({s['missing']})")
    for name in ("position_consistency", "first_slot_rate", "reference_consistency"):
        table.add_row(name.replace("position_", "judge position "), _pct(s[name]))
    for pair, a in s.get("agreement_by_pair", {}).items():
        table.add_row(f"agreement: {visible(pair)} (n {a['n']})", _pct(a["agreement"]))
    Console().print(table)


def print_judge_comparison(comparisons: list[dict[str, Any]]) -> None:
    """Each judge's agreement minus the first judge's on the same votes, paired over questions."""
    from rich.console import Console
    from rich.table import Table

    from harness.core.text import visible

    for votes in dict.fromkeys(c["votes_file"] for c in comparisons):
        table = Table(title=f"agreement with {visible(Path(votes).name)}, judge - vs (points; unparsable = disagree)")
        for col in ("judge", "vs", "n", "agree", "vs agree", "delta", "95% CI", "p"):
            table.add_column(col, justify="left" if col in ("judge", "vs") else "right", no_wrap=col != "judge")
        for c in (c for c in comparisons if c["votes_file"] == votes):
            table.add_row(visible(c["judge"]), visible(c["vs"]), str(c["n"]), _pct(c["score_a"]), _pct(c["score_b"]),
                          f"{c['delta']:+.1f}", f"[{c['low']:+.1f}, {c['high']:+.1f}]", f"{c['p_value']:.2g}")
        Console().print(table)
