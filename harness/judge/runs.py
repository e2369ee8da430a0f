"""The judge's commands: `harness eval` / `harness score` on judged tasks (critic), `harness critic
agreement`, and the leaderboard's judged columns. The pipeline itself (prompts, parsing, cached
judge, passes over stored samples, summaries) is harness.judge; this module wires it to
checkpoints, run folders and the terminal.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from harness.errors import HarnessError
from harness.judge.pipeline import Comparison, Judge, JudgeSettings, agreement, judge_pairwise, judge_pointwise
from harness.core.store import GenerationCache, atomic_write_jsonl
from harness.core.types import GenConfig, Item

def _backends(kwargs: dict[str, Any]):
    """One lazily loaded backend per checkpoint content: the judge may also be a checkpoint under test."""
    from harness.report.leaderboard import LazyBackend

    loaded: dict[str, Any] = {}
    return lambda ref: loaded.setdefault(ref.content_hash, LazyBackend(ref, **kwargs))


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)


def _bootstrap_only(ci_method: str) -> None:
    if ci_method != "bootstrap":
        raise HarnessError(f"--ci {ci_method} needs 0/1 scores; judge scores are 0-100, so use the bootstrap (drop --ci)")


def run_judged_eval(args: Any, tasks: list[Any]) -> list[dict[str, Any]]:
    """`harness eval` for judged tasks: generate answers (ordinary runs), then judge them.

    With --blind only the answering checkpoints see blanked images; the judge always sees them.
    """
    from harness.models.checkpoints import resolve_checkpoint
    from harness.core.runner import EvalSettings, check_images, evaluate, run_name
    from harness.core.store import read_sample_lines
    from harness.core.task import resolve_data_dir

    _bootstrap_only(args.ci_method)
    settings = EvalSettings(
        gen=GenConfig(max_new_tokens=args.max_new_tokens or GenConfig().max_new_tokens, temperature=args.temperature,
                      top_p=args.top_p, top_k=args.top_k, seed=args.seed),
        n_samples=args.n_samples, batch_size=args.batch_size, blind=args.blind, limit=args.limit,
        ci_method=args.ci_method,
    )
    data_dir = resolve_data_dir(args.data_dir)
    loaded = []
    for task in tasks:  # fail fast: data and images before any model
        items = task.load(data_dir, "test")[: settings.limit]
        check_images(task, items)
        loaded.append((task, items))
    trust = args.trust_remote_code
    ref = resolve_checkpoint(args.ckpt, base=args.base, trust_remote_code=trust)
    judge_ref = resolve_checkpoint(args.judge or "tiny", trust_remote_code=trust)
    answerers = [ref]
    if args.vs:
        vs_ref = resolve_checkpoint(args.vs, trust_remote_code=trust)
        if vs_ref.content_hash == ref.content_hash:
            raise HarnessError(f"--vs {args.vs} is the same checkpoint as --ckpt {args.ckpt}; compare two different ones")
        if vs_ref.name == ref.name:
            raise HarnessError(f"--ckpt and --vs are both named {ref.name!r}, so their runs would share a folder; rename one")
        answerers.append(vs_ref)
    backend_for = _backends({"device": args.device, "dtype": args.dtype, "trust_remote_code": trust})
    out = Path(args.output_dir)
    cache = GenerationCache(out / ".cache" / "generations.sqlite")
    summaries = []
    try:
        with _progress() as progress:
            judge = Judge(backend_for(judge_ref), cache, JudgeSettings(batch_size=args.batch_size,
                          ci_method=args.ci_method, seed=args.seed), progress)
            for task, items in loaded:
                item_map = {it.id: it for it in items}
                runs = []
                for r in answerers:
                    run_dir = out / r.name / run_name(task, settings.blind)
                    base = evaluate(backend_for(r), task, items, settings, run_dir, cache, data_dir=data_dir,
                                    progress=progress)
                    runs.append((run_dir, base, list(read_sample_lines(run_dir / "samples.jsonl"))))
                (run_dir, base, samples), *rest = runs
                if not rest:
                    result = judge_pointwise(judge, item_map, samples, run_dir, base)
                else:
                    _, vs_base, vs_samples = rest[0]
                    pair_dir = run_dir.parent / f"{run_dir.name}-vs-{answerers[1].name}"
                    result = judge_pairwise(judge, item_map, samples, vs_samples, pair_dir,
                                            {**base, "vs": vs_base["checkpoint"]})
                summaries.append(result.summary)
    finally:
        cache.close()
    title = ref.name + (f" vs {answerers[1].name}" if args.vs else "") + f" (judge {judge_ref.name})"
    print_judged(summaries, title)
    return summaries


def run_judged_score(args: Any, task: Any) -> dict[str, Any]:
    """`harness score` for judged tasks: predictions made anywhere, scored by the judge."""
    from harness.models.checkpoints import resolve_checkpoint
    from harness.commands.eval import read_predictions
    from harness.core.scoring import sample_record
    from harness.core.task import resolve_data_dir

    _bootstrap_only(args.ci_method)
    data_dir = resolve_data_dir(args.data_dir)
    items = {it.id: it for it in task.load(data_dir, "test")}
    preds = read_predictions(Path(args.predictions), items)
    records = [sample_record(task, items[i], k, text) for i, k, text in preds]
    judge_ref = resolve_checkpoint(args.judge or "tiny")
    out = Path(args.out)
    atomic_write_jsonl(out / "samples.jsonl", records)
    cache = GenerationCache(out / ".cache" / "generations.sqlite")
    try:
        judge = Judge(_backends({"device": args.device})(judge_ref), cache, JudgeSettings(ci_method=args.ci_method))
        scored = {r["id"] for r in records}
        base = {"task": task.name, "options": task.opts, "predictions": str(args.predictions),
                "missing_predictions": len(items) - len(scored), "data": {"dir": str(data_dir)}}
        result = judge_pointwise(judge, {i: items[i] for i in scored}, records, out, base)
    finally:
        cache.close()
    print_judged([result.summary], f"{task.name} (scored from {Path(args.predictions).name}, judge {judge_ref.name})")
    return result.summary


def run_agreement(args: Any, comparisons: Sequence[Comparison]) -> dict[str, Any]:
    """`harness critic agreement`: the judge against reference verdicts."""
    from harness.models.checkpoints import resolve_checkpoint

    comparisons = list(comparisons)[: args.limit]
    judge_ref = resolve_checkpoint(args.judge, trust_remote_code=args.trust_remote_code)
    out_dir = Path(args.out) if args.out else Path(args.output_dir) / judge_ref.name / f"critic-agreement-{Path(args.votes).stem}"
    backend = _backends({"device": args.device, "dtype": args.dtype, "trust_remote_code": args.trust_remote_code})(judge_ref)
    cache = GenerationCache(Path(args.output_dir) / ".cache" / "generations.sqlite")
    try:
        with _progress() as progress:
            judge = Judge(backend, cache, JudgeSettings(batch_size=args.batch_size, ci_method=args.ci_method,
                                                        max_new_tokens=args.max_new_tokens), progress)
            summary = agreement(judge, comparisons, out_dir, {"votes_file": str(args.votes)})
    finally:
        cache.close()
    _print_agreement(summary, f"judge {judge_ref.name} vs {Path(args.votes).name}")
    print(f"wrote {out_dir}/judgements.jsonl and summary.json")
    return summary


def leaderboard_columns(judge_backend: Any, runs: list[tuple[str, Any, dict[str, Item], Path]], baseline: str,
                        cache: GenerationCache, progress: Any = None, seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """The leaderboard's judged columns: label -> {task: pointwise units, task-vs-baseline: preference units}.

    `runs` holds (label, task, items, run_dir) of finished generation runs. A column whose every
    judge reply was unparsable is left out (the summary.json beside the samples says so).
    """
    from harness.core.store import read_sample_lines

    judge = Judge(judge_backend, cache, JudgeSettings(seed=seed), progress)
    columns: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    baseline_dirs = {task.name: run_dir for label, task, _, run_dir in runs if label == baseline}
    for label, task, items, run_dir in runs:
        columns.setdefault(label, {})  # every label appears, even when no judge reply could be parsed
        samples = list(read_sample_lines(run_dir / "samples.jsonl"))
        base = _read_summary(run_dir)
        point = judge_pointwise(judge, items, samples, run_dir, base)
        if point.units:
            columns[label][task.name] = point.units
        if label != baseline and task.name in baseline_dirs:
            base_samples = list(read_sample_lines(baseline_dirs[task.name] / "samples.jsonl"))
            pair_dir = run_dir.parent / f"{run_dir.name}-vs-{baseline}"
            pair = judge_pairwise(judge, items, samples, base_samples, pair_dir, {**base, "vs": baseline})
            if pair.units:
                columns[label][f"{task.name}-vs-{baseline}"] = pair.units
    return dict(columns)


def _read_summary(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


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
