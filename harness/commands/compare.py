"""`harness compare`: test-time scaling curves of answer-selection methods against n.

    harness compare majority-vote self-select --ckpt tiny --task geoqa --n 1..10
    harness compare majority-vote --task geoqa --predictions preds.jsonl --n 1..8 --out scored/

With --ckpt, K sampled chain-of-thought outputs per item (K = --samples, default the largest n)
are drawn once through the runner into <output-dir>/compare/<ckpt>/<task>/samples.jsonl and the
generation cache, so a re-run, or one with other n values or methods, reuses them. Methods:

  majority-vote  plurality of the extracted answers, the exact expectation over all C(K, n)
                 subsets of the K samples (harness.stats.selection.majority_at_n)
  self-select    R3V's test-time selection: the model reads the question and n candidates and
                 names the correct one; its reply is extracted and scored by the task. Averaged
                 over R random subsets per item (all subsets when C(K, n) <= R); the Monte Carlo
                 standard error of that average is reported (mc_se, points). Greedy replies.
  self-select-likelihood  the same prompts and subsets, the reply chosen among the subset's
                 distinct candidate answers by the model's likelihood (never past the candidates)
  max-likelihood the same subsets and choice, asked with the question alone (no candidate list):
                 the candidate answer the model itself finds likeliest; self-select-likelihood's control
  pass@n         oracle ceiling, the best of the n (always added)

A method is any object with `name`, `needs_model` and `curve(pool, ns, ctx)` (harness.stats.selection;
self-select, which asks the model, is harness/self_select.py);
pass your own to `compare()` (a critic-scored best-of-n is the natural next one).
Statistics per n: percentile-bootstrap 95% CI over items (items of a group resampled together)
and the paired difference of every method minus majority vote on the same resamples. Outputs in
the run folder (or --out): curve.csv (n, method, score, ci_low, ci_high, then delta,
delta_ci_low, delta_ci_high, p_value, mc_se, items), curve.md, curve.png, per_item.csv and
compare.json. The default sampling temperature, 0.7, is the low end of the 0.7-1.0 range of
R3V-style candidate sampling: diverse enough for samples to disagree, still mostly well formed.
"""
from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from harness.commands.common import add_model_flags, add_task_options, make_tasks, session_from_args
from harness.commands.flags import add_flags, from_args
from harness.errors import HarnessError
from harness.core.runner import Backend, EvalSettings, check_images, evaluate, run_name
from harness.self_select import ModelContext, SelfSelect
from harness.stats.selection import MajorityVote, Method, MethodCurve, PassAtN, SamplePool, parse_ns
from harness.core.files import atomic_write, atomic_write_json, atomic_write_text, csv_safe, csv_safe_frame
from harness.core.store import GenerationCache
from harness.core.task import Task
from harness.core.types import GenConfig, Item

if TYPE_CHECKING:  # heavy imports stay lazy so `harness --help` is fast
    import pandas as pd

REFERENCE = "majority-vote"  # deltas are "method minus majority vote"
METHOD_NAMES = ("majority-vote", "self-select", "self-select-likelihood", "max-likelihood", "pass@n")
CURVE_COLUMNS = ("n", "method", "score", "ci_low", "ci_high")  # the contract (DESIGN.md)
EXTRA_COLUMNS = ("delta", "delta_ci_low", "delta_ci_high", "p_value", "mc_se", "items")


# Where compare means a shared setting its own way: the K outputs are sampled (temperature 0.7).
SAMPLING_DEFAULTS = {"temperature": 0.7}
SAMPLING_HELP = {
    "limit": "use only the first N items",
    "temperature": "sampling temperature of the K outputs (R3V samples at 0.7-1.0)",
    "top_p": "nucleus sampling of the K outputs",
    "top_k": "top-k sampling of the K outputs (0: off)",
    "max_new_tokens": "reply budget; default the task's own",
    "seed": "seeds sampling, subset draws and the bootstrap",
}


@dataclass(frozen=True)
class CompareConfig:
    """The curve's own settings; the K outputs are an ordinary run with `settings` (EvalSettings,
    n_samples = K), so generation settings are written once, in GenConfig and EvalSettings."""

    ns: tuple[int, ...] = field(metadata={"help": "the n values of the curve (--n 1..10, 1,2,4,8 or 4)"})
    samples: int | None = field(default=None, metadata={"help": "K sampled outputs per item; default the largest n", "kind": "positive"})
    subsets: int = field(default=8, metadata={"help": "self-select: random n-subsets per item and n (all when fewer exist)", "kind": "positive"})
    bootstrap: int = field(default=10_000, metadata={"help": "bootstrap resamples for CIs and paired differences", "kind": "positive"})
    level: float = field(default=0.95, metadata={"help": "confidence level"})
    settings: EvalSettings = EvalSettings(gen=GenConfig(**SAMPLING_DEFAULTS))

    def __post_init__(self) -> None:
        if not self.ns or min(self.ns) < 1:
            raise HarnessError("--n must list positive integers, e.g. --n 1..10")
        if self.samples is not None and self.samples < max(self.ns):
            raise HarnessError(f"n={max(self.ns)} is larger than --samples K={self.samples}; raise --samples or lower --n")
        if self.subsets < 1:
            raise HarnessError("--subsets must be >= 1")
        if self.k > 1 and self.settings.gen.greedy:
            raise HarnessError("K > 1 samples need sampling: set --temperature > 0 (default 0.7)")
        if self.bootstrap < 1:
            raise HarnessError("--bootstrap must be >= 1")
        if not 0 < self.level < 1:
            raise HarnessError("confidence level must lie in (0, 1), e.g. 0.95")

    @property
    def k(self) -> int:
        return self.samples or max(self.ns)

    @property
    def seed(self) -> int:
        return self.settings.gen.seed

    @property
    def limit(self) -> int | None:
        return self.settings.limit

    def sampling(self) -> EvalSettings:
        """The K outputs' run settings (max_new_tokens None: the task's own budget)."""
        return replace(self.settings, n_samples=self.k)


def make_methods(names: Sequence[str], config: CompareConfig) -> list[Method]:
    """Methods by name, in the order given, pass@n appended as the ceiling; unknown names fail."""
    methods: list[Method] = []
    for name in dict.fromkeys(names):
        if name == "majority-vote":
            methods.append(MajorityVote())
        elif name == "self-select":
            methods.append(SelfSelect(subsets=config.subsets, seed=config.seed))
        elif name == "self-select-likelihood":
            methods.append(SelfSelect(subsets=config.subsets, seed=config.seed, name=name, likelihood=True))
        elif name == "max-likelihood":
            methods.append(SelfSelect(subsets=config.subsets, seed=config.seed, name=name, likelihood=True,
                                      show_candidates=False))
        elif name == "pass@n":
            methods.append(PassAtN())
        else:
            raise HarnessError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}")
    if not any(m.name == "pass@n" for m in methods):
        methods.append(PassAtN())
    return methods


# --- sampling and statistics ---------------------------------------------------------------------
def draw_samples(backend: Backend, task: Task, items: list[Item], config: CompareConfig, run_dir: Path,
                 cache: GenerationCache, data_dir: Path | None = None, progress: Any = None) -> SamplePool:
    """K samples per item through the runner (logged, cached, resumable)."""
    _require_generate(task)
    result = evaluate(backend, task, items, config.sampling(), run_dir, cache, data_dir=data_dir, progress=progress)
    return _pool(task, items, result.records)


def _require_generate(task: Task) -> None:
    if task.request_type != "generate":
        raise HarnessError(f"compare needs sampled outputs; task {task.name} ranks choices by likelihood (use its generate mode)")


def _pool(task: Task, items: list[Item], records) -> SamplePool:
    by_id = {it.id: it for it in items}
    samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["id"] in by_id:
            samples[r["id"]].append(r)
    if not samples:
        raise HarnessError(f"{task.name}: no samples to compare")
    return SamplePool(task, {i: by_id[i] for i in samples},
                      {i: sorted(rs, key=lambda r: r["sample"]) for i, rs in samples.items()})


def compare(pool: SamplePool, methods: Sequence[Method], config: CompareConfig,
            ctx: ModelContext | None = None) -> tuple[pd.DataFrame, dict[str, dict[int, MethodCurve]]]:
    """Run every method at every n; return the curve table and the per-item results."""
    for m in methods:
        if m.needs_model and ctx is None:
            raise HarnessError(f"{m.name} needs a model: pass --ckpt instead of --predictions")
    results = {m.name: m.curve(pool, config.ns, ctx) for m in methods}
    return curve_frame(results, pool.items, config), results


def _units(curve: MethodCurve, items: dict[str, Item]) -> tuple[list[str], list[float], float]:
    """Scores per unit (an item, or the mean of a group's items) and the Monte Carlo variance of their mean."""
    groups: dict[str, list[str]] = defaultdict(list)
    for item_id in curve.scores:
        groups[items[item_id].cluster].append(item_id)
    ids = sorted(groups)
    values = [sum(curve.scores[i] for i in groups[g]) / len(groups[g]) for g in ids]
    var = sum(sum(curve.mc_var.get(i, 0.0) for i in groups[g]) / len(groups[g]) ** 2 for g in ids) / len(ids) ** 2
    return ids, values, var


def curve_frame(results: dict[str, dict[int, MethodCurve]], items: dict[str, Item], config: CompareConfig) -> pd.DataFrame:
    import pandas as pd

    from harness.stats.ci import paired_difference, score_ci

    rows = []
    for n in config.ns:
        ref = _units(results[REFERENCE][n], items) if REFERENCE in results else None
        for name, curves in results.items():
            ids, values, var = _units(curves[n], items)
            # Same seed and units: every CI and difference of this n uses the same resamples.
            ci = score_ci(values, B=config.bootstrap, seed=config.seed, level=config.level)
            row = {"n": n, "method": name, "score": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
                   "delta": math.nan, "delta_ci_low": math.nan, "delta_ci_high": math.nan, "p_value": math.nan,
                   "mc_se": 100.0 * math.sqrt(var), "items": len(curves[n].scores)}
            if ref is not None and name != REFERENCE:
                d = paired_difference(values, ref[1], ids, ref[0], B=config.bootstrap, seed=config.seed, level=config.level)
                row.update(delta=d.delta, delta_ci_low=d.low, delta_ci_high=d.high, p_value=d.p_value)
            rows.append(row)
    return pd.DataFrame(rows, columns=[*CURVE_COLUMNS, *EXTRA_COLUMNS])


# --- outputs --------------------------------------------------------------------------------------
def _fmt(x: float, spec: str = ".1f") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _cells(row: dict[str, Any]) -> list[str]:
    delta = "" if math.isnan(row["delta"]) else f"{row['delta']:+.1f} [{row['delta_ci_low']:+.1f}, {row['delta_ci_high']:+.1f}]"
    return [str(row["n"]), row["method"], f"{row['score']:.1f}", f"[{row['ci_low']:.1f}, {row['ci_high']:.1f}]",
            delta, _fmt(row["p_value"], ".3g"), _fmt(row["mc_se"], ".2f") if row["mc_se"] else ""]


HEADERS = ("n", "method", "score", "95% CI", f"Δ vs {REFERENCE} [95% CI]", "p", "MC s.e.")
NOTE = (f"Scores in percent; CI: Wilson where every unit scores 0 or 1, else Wilson on the effective sample size "
        f"(wilson-effective); Δ: paired difference from {REFERENCE} in points, p and its CI from one procedure (McNemar for 0/1 "
        "units, else the paired bootstrap; harness/stats/ci.py); MC s.e.: Monte Carlo standard error "
        "of self-select's average over sampled candidate subsets (blank: exact). pass@n is an oracle ceiling.")


def write_markdown(df: pd.DataFrame, path: Path, title: str) -> None:
    def md(text: str) -> str:
        return " ".join(str(text).split()).replace("|", "\\|")

    lines = [f"# {md(title)}", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(md(c) for c in _cells(row)) + " |" for row in df.to_dict("records")]
    atomic_write_text(path, "\n".join([*lines, "", NOTE]) + "\n")


COLOURS = {"majority-vote": "#1f5fa8", "self-select": "#d9730d", "self-select-likelihood": "#2a9d5c",
           "max-likelihood": "#8e44ad", "pass@n": "#777777"}  # the same in every plot


def write_plot(df: pd.DataFrame, path: Path, title: str) -> None:
    """Score against n, one line per method with its CI band; pass@n dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(fig)  # Agg without touching pyplot's global backend
    ax = fig.subplots()
    for name, part in df.groupby("method", sort=False):
        part = part.sort_values("n")
        style = "--" if name == "pass@n" else "-"
        (line,) = ax.plot(part["n"], part["score"], style, marker="o", markersize=4, color=COLOURS.get(str(name)),
                          label=str(name).replace("$", r"\$"))
        ax.fill_between(part["n"], part["ci_low"], part["ci_high"], color=line.get_color(), alpha=0.18, linewidth=0)
    ax.set_xlabel("n (candidates)")
    ax.set_ylabel("accuracy (%) with 95% CI")
    ax.set_xticks(sorted(df["n"].unique()))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title.replace("$", r"\$"), fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(path, buf.getvalue())


def write_outputs(df: pd.DataFrame, results: dict[str, dict[int, MethodCurve]], out: Path, title: str,
                  meta: dict[str, Any]) -> None:
    import csv

    atomic_write_text(out / "curve.csv", csv_safe_frame(df).to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    per_item = io.StringIO()
    writer = csv.writer(per_item, lineterminator="\n")  # ids are data: quoted by csv, never by hand
    writer.writerow(["n", "method", "id", "score"])
    writer.writerows([n, csv_safe(name), csv_safe(str(item_id)), f"{score:.6g}"]
                     for name, curves in results.items() for n, c in curves.items()
                     for item_id, score in sorted(c.scores.items()))
    atomic_write_text(out / "per_item.csv", per_item.getvalue())
    write_markdown(df, out / "curve.md", title)
    write_plot(df, out / "curve.png", title)
    atomic_write_json(out / "compare.json", meta)


def print_table(df: pd.DataFrame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), caption=NOTE, caption_justify="left")
    for h in HEADERS:
        table.add_column(h, justify="left" if h == "method" else "right")
    for row in df.to_dict("records"):
        table.add_row(*(Text(c) for c in _cells(row)))  # Text: names are never read as markup
    Console().print(table)


# --- the command ----------------------------------------------------------------------------------
def run_compare(args: Any, task: Task, config: CompareConfig) -> pd.DataFrame:
    """`harness compare`: validate everything, sample (or read predictions), run methods, write."""
    from harness.core.task import resolve_data_dir

    methods = make_methods(args.methods, config)
    data_dir = resolve_data_dir(args.data_dir)
    items = task.load(data_dir, "test")
    if args.predictions and config.limit:
        raise HarnessError("--limit applies to --ckpt runs; with --predictions every id in the file is used")
    items = items[: config.limit]
    meta: dict[str, Any] = {"task": task.name, "options": task.opts, "ns": list(config.ns),
                            "methods": [m.name for m in methods], "subsets": config.subsets,
                            "seed": config.seed, "bootstrap": config.bootstrap, "level": config.level}
    if args.predictions:
        return _compare_predictions(args, task, config, methods, items, meta)
    _require_generate(task)
    with session_from_args(args, data_dir=data_dir) as s:
        check_images(task, items)
        backend = s.backend(s.checkpoint(args.ckpt, args.base))
        out = Path(args.out) if args.out else s.output_dir / "compare" / backend.name / run_name(task, False)
        pool = draw_samples(backend, task, items, config, out, s.cache, data_dir, s.progress)
        pool.check_ns(config.ns, str(out / "samples.jsonl"))
        ctx = ModelContext(backend, s.cache, out, gen=replace(config.settings.gen, temperature=0.0),
                           batch_size=config.settings.batch_size, data_dir=data_dir, progress=s.progress)
        df, results = compare(pool, methods, config, ctx)
    meta.update(checkpoint={"name": backend.name, "hash": backend.content_hash}, k=config.k, items=len(pool.items),
                missing=len(items) - len(pool.items), sampling=config.settings.gen_for(task).as_dict(),
                selection="greedy")
    title = f"{task.name} · {backend.name}: test-time selection, K={config.k} samples, {len(pool.items)} items"
    return _finish(df, results, out, title, meta)


def _compare_predictions(args, task, config, methods, items, meta) -> pd.DataFrame:
    from harness.core.store import read_predictions
    from harness.core.scoring import sample_record

    if args.out is None:
        raise HarnessError("--predictions needs --out DIR for curve.csv and the other outputs")
    if args.samples is not None:
        raise HarnessError("--samples applies to --ckpt runs; with --predictions K is the number of lines per id")
    for m in methods:
        if m.needs_model:
            raise HarnessError(f"{m.name} needs a model: pass --ckpt instead of --predictions")
    by_id = {it.id: it for it in items}
    preds = read_predictions(Path(args.predictions), by_id)
    pool = _pool(task, items, [sample_record(task, by_id[i], k, text) for i, k, text in preds])
    pool.check_ns(config.ns, args.predictions)
    df, results = compare(pool, methods, config)
    ks = sorted({len(rs) for rs in pool.samples.values()})
    meta.update(predictions=str(args.predictions), k=ks[0] if len(ks) == 1 else ks,
                items=len(pool.items), missing=len(items) - len(pool.items))
    k_text = str(ks[0]) if len(ks) == 1 else f"{ks[0]}-{ks[-1]}"
    title = f"{task.name} · {Path(args.predictions).name}: K={k_text} samples, {len(pool.items)} items"
    return _finish(df, results, Path(args.out), title, meta)


def _finish(df, results, out: Path, title: str, meta: dict[str, Any]) -> pd.DataFrame:
    write_outputs(df, results, out, title, meta)
    print_table(df, title)
    print(f"wrote {out}/curve.{{csv,md,png}}, per_item.csv and compare.json")
    return df


# --- the CLI adapter -----------------------------------------------------------------------------
def cmd_compare(args: Any) -> int:
    if args.ci_method not in ("auto", "bootstrap"):
        raise HarnessError("compare reports the default CIs only (Wilson, or wilson-effective for fractional per-item scores); drop --ci")
    settings = from_args(EvalSettings, args, gen=from_args(GenConfig, args))
    config = from_args(CompareConfig, args, ns=parse_ns(args.n, args.samples), settings=settings)
    (task,) = make_tasks([args.task], args)
    run_compare(args, task, config)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare", help="test-time scaling curves: majority vote vs self-select vs pass@n against n",
        description="Sample K outputs per item once, then score selection methods at each n with 95% CIs. "
                    "Methods: majority-vote, self-select, self-select-likelihood and max-likelihood (need --ckpt), pass@n (always added).",
    )
    p.add_argument("methods", nargs="+", metavar="METHOD", help="majority-vote, self-select, self-select-likelihood, max-likelihood, pass@n")
    p.add_argument("--task", required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="`tiny`, a local HF checkpoint dir, or a PEFT adapter dir")
    source.add_argument("--predictions", help='JSONL made elsewhere: {"id": ..., "output": "...", "sample": k} per line')
    p.add_argument("--n", required=True, help="n values: a range 1..10, a list 1,2,4,8 or one value")
    add_flags(p, CompareConfig, only=["samples", "subsets"])
    p.add_argument("--out", default=None, help="output folder (default: <output-dir>/compare/<ckpt>/<task>/)")
    p.add_argument("--output-dir", default="runs", help="root of runs and the generation cache (default: runs)")
    add_flags(p, EvalSettings, only=["limit", "batch_size"], helps=SAMPLING_HELP)
    add_flags(p, GenConfig, only=["temperature", "top_p", "top_k", "max_new_tokens", "seed"], defaults=SAMPLING_DEFAULTS,
              helps=SAMPLING_HELP)
    add_flags(p, CompareConfig, only=["bootstrap"])
    p.add_argument("--base", default=None, help="base checkpoint for an adapter (overrides adapter_config.json)")
    add_model_flags(p)
    add_task_options(p)
    p.set_defaults(func=cmd_compare)


__all__ = ["CompareConfig", "compare", "curve_frame", "draw_samples", "make_methods", "run_compare"]
