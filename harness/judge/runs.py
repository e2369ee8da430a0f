"""The judge's commands: `harness eval` / `harness score` on judged tasks (critic), `harness critic
agreement`, and the leaderboard's judged columns. The pipeline itself (prompts, parsing, cached
judge, passes over stored samples, summaries) is harness.judge.pipeline; this module wires it to
checkpoints, run folders and the terminal.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from harness.core.store import atomic_write_jsonl, read_predictions
from harness.core.types import Item
from harness.errors import HarnessError
from harness.models.openai_backend import served_settings
from harness.judge.pipeline import Comparison, Judge, JudgeSettings, agreement, judge_pairwise, judge_pointwise


def _bootstrap_only(ci_method: str) -> str:
    """Judge scores are 0-100: the bootstrap (what `--ci auto`, the default, picks for them)."""
    if ci_method not in ("auto", "bootstrap"):
        raise HarnessError(f"--ci {ci_method} needs 0/1 scores; judge scores are 0-100, so use the bootstrap (drop --ci)")
    return "bootstrap"


def run_judged_eval(args: Any, tasks: list[Any]) -> list[dict[str, Any]]:
    """`harness eval` for judged tasks: generate answers (ordinary runs), then judge them.

    With --blind only the answering checkpoints see blanked images; the judge always sees them.
    """
    from harness.commands.common import settings_from_args
    from harness.session import Session

    _bootstrap_only(args.ci_method)
    settings = settings_from_args(args)
    with Session(args.output_dir, args.data_dir, device=args.device, dtype=args.dtype,
                 trust_remote_code=args.trust_remote_code, served=served_settings(args)) as s:
        loaded = [(task, s.load(task, settings.limit)) for task in tasks]  # fail fast: data and images before any model
        ref = s.checkpoint(args.ckpt, args.base)
        judge_ref = s.checkpoint(args.judge or "tiny")
        answerers = [ref]
        if args.vs:
            vs_ref = s.checkpoint(args.vs)
            if vs_ref.content_hash == ref.content_hash:
                raise HarnessError(f"--vs {args.vs} is the same checkpoint as --ckpt {args.ckpt}; compare two different ones")
            if vs_ref.name == ref.name:
                raise HarnessError(f"--ckpt and --vs are both named {ref.name!r}, so their runs would share a folder; rename one")
            answerers.append(vs_ref)
        judge = Judge(s.backend(judge_ref), s.cache, JudgeSettings(batch_size=args.batch_size, ci_method=_bootstrap_only(args.ci_method),
                      seed=args.seed), s.progress)
        summaries = []
        for task, items in loaded:
            item_map = {it.id: it for it in items}
            runs = [(s.run_dir(r.name, task, settings.blind), s.evaluate(s.backend(r), task, items, settings))
                    for r in answerers]
            (run_dir, answers), *rest = runs
            if not rest:
                result = judge_pointwise(judge, item_map, answers.records, run_dir, answers.summary)
            else:
                vs = rest[0][1]
                pair_dir = run_dir.parent / f"{run_dir.name}-vs-{answerers[1].name}"
                result = judge_pairwise(judge, item_map, answers.records, vs.records, pair_dir,
                                        {**answers.summary, "vs": vs.summary["checkpoint"]})
            summaries.append(result.summary)
    title = ref.name + (f" vs {answerers[1].name}" if args.vs else "") + f" (judge {judge_ref.name})"
    print_judged(summaries, title)
    return summaries


def run_judged_score(args: Any, task: Any) -> dict[str, Any]:
    """`harness score` for judged tasks: predictions made anywhere, scored by the judge."""
    from harness.core.scoring import sample_record
    from harness.session import Session

    _bootstrap_only(args.ci_method)
    out = Path(args.out)
    # The judge's replies are cached beside the scored samples (a re-score asks nothing again).
    with Session(out, args.data_dir, device=args.device, served=served_settings(args)) as s:
        items = {it.id: it for it in task.load(s.data_dir, "test")}
        preds = read_predictions(Path(args.predictions), items)
        records = [sample_record(task, items[i], k, text) for i, k, text in preds]
        judge_ref = s.checkpoint(args.judge or "tiny")
        atomic_write_jsonl(out / "samples.jsonl", records)
        judge = Judge(s.backend(judge_ref), s.cache, JudgeSettings(ci_method=_bootstrap_only(args.ci_method)))
        scored = {r["id"] for r in records}
        base = {"task": task.name, "options": task.opts, "predictions": str(args.predictions),
                "missing_predictions": len(items) - len(scored), "data": {"dir": str(s.data_dir)}}
        result = judge_pointwise(judge, {i: items[i] for i in scored}, records, out, base)
    print_judged([result.summary], f"{task.name} (scored from {Path(args.predictions).name}, judge {judge_ref.name})")
    return result.summary


def run_agreement(args: Any, comparisons: Sequence[Comparison]) -> dict[str, Any]:
    """`harness critic agreement`: the judge against reference verdicts."""
    from harness.session import Session

    comparisons = list(comparisons)[: args.limit]
    with Session(args.output_dir, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                 served=served_settings(args)) as s:
        judge_ref = s.checkpoint(args.judge)
        out_dir = Path(args.out) if args.out else s.output_dir / judge_ref.name / f"critic-agreement-{Path(args.votes).stem}"
        judge = Judge(s.backend(judge_ref), s.cache, JudgeSettings(batch_size=args.batch_size, ci_method=_bootstrap_only(args.ci_method),
                                                                   max_new_tokens=args.max_new_tokens), s.progress)
        summary = agreement(judge, comparisons, out_dir, {"votes_file": str(args.votes)})
    _print_agreement(summary, f"judge {judge_ref.name} vs {Path(args.votes).name}")
    print(f"wrote {out_dir}/judgements.jsonl and summary.json")
    return summary


def leaderboard_columns(judge: Judge, runs: list[tuple[str, Any, dict[str, Item], Path, Any]],
                        baseline: str) -> dict[str, dict[str, dict[str, float]]]:
    """The leaderboard's judged columns: label -> {task: pointwise units, task-vs-baseline: preference units}.

    `runs` holds (label, task, items, run_dir, EvalResult) of finished generation runs. A column
    whose every judge reply was unparsable is left out (the summary.json beside the samples says so).
    """
    columns: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    baseline_runs = {task.name: result for label, task, _, _, result in runs if label == baseline}
    for label, task, items, run_dir, result in runs:
        columns.setdefault(label, {})  # every label appears, even when no judge reply could be parsed
        point = judge_pointwise(judge, items, result.records, run_dir, result.summary)
        if point.units:
            columns[label][task.name] = point.units
        if label != baseline and task.name in baseline_runs:
            pair_dir = run_dir.parent / f"{run_dir.name}-vs-{baseline}"
            pair = judge_pairwise(judge, items, result.records, baseline_runs[task.name].records, pair_dir,
                                  {**result.summary, "vs": baseline})
            if pair.units:
                columns[label][f"{task.name}-vs-{baseline}"] = pair.units
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


def _print_agreement(s: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("measure (%)")
    table.add_column("value", justify="right", no_wrap=True)
    for name in ("agreement", "agreement_swapped", "agreement_decisive"):
        low, high = s[f"{name}_ci"]
        table.add_row(name, f"{_pct(s[name])} [{_pct(low)}, {_pct(high)}]")
    table.add_row("votes (unparsable replies)", f"{s['votes']} ({s['missing']})")
    for name in ("position_consistency", "first_slot_rate", "reference_consistency"):
        table.add_row(name.replace("position_", "judge position "), _pct(s[name]))
    Console().print(table)
