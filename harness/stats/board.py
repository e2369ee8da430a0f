"""The statistics of a whole leaderboard, batched per task (rules: harness/stats/ci.py's docstring).

One matrix of resample counts is drawn per task (its stream depends on the seed and the task
name only) and every checkpoint's replicates are read from it, so CIs, paired deltas and rank
intervals share resamples, and no number depends on a checkpoint's name or row position.

Endpoints: a row may declare one primary task (`primary={row: task}`, or "none" for no
primary). Its comparison on that task is a primary endpoint; its other comparisons are
exploratory: unadjusted p and CI, never starred. A row with no declaration keeps every
comparison in the family (the behaviour before declarations existed). The correction runs over
the family only (`family_size`), so declaring targets gives each of them the power a board of
that many comparisons has. Seeded rows: harness/stats/seeds.py.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from harness.errors import HarnessError
from harness.stats.seeds import cluster_table

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

LEADERBOARD_COLUMNS = (
    "checkpoint", "task", "n", "score", "ci_low", "ci_high", "ci_method",
    "delta", "delta_ci_low", "delta_ci_high", "p_value", "p_adjusted", "a_only", "b_only", "mde",
    "endpoint", "family_size", "rank", "rank_low", "rank_high",
)
EXTRA_COLUMNS = ("delta_method", "correction", "mde_family", "seeds", "seed_min", "seed_max", "resamples",
                 "n_dropped")
PRIMARY, EXPLORATORY = "primary", "exploratory"
NO_PRIMARY = "none"  # `primary: none`: every comparison of the row is exploratory
SEEDED_METHOD = "seed-components"


@dataclass
class _Task:
    """One task's scores aligned on the units every checkpoint shares."""

    name: str
    names: list[str]
    x: dict[str, np.ndarray]  # checkpoint -> (seeds, n) scores; one row when not seeded
    seeded: dict[str, bool]
    cidx: np.ndarray | None
    n_units: int
    dropped: dict[str, int]

    def binary(self, name: str) -> bool:
        from harness.stats.ci import is_binary

        return is_binary(self.x[name])


def _align(task: str, per_ckpt: dict[str, Any], clusters: Mapping[str, str] | None) -> _Task:
    import numpy as np

    from harness.stats.ci import _by_id, cluster_index

    runs, seeded = {}, {}
    for name, value in per_ckpt.items():
        seeded[name] = not isinstance(value, Mapping)
        values = list(value) if seeded[name] else [value]
        if not values:
            raise HarnessError(f"{name}/{task}: no seed runs; give one score mapping per seed")
        runs[name] = [_by_id(list(v.values()), list(v), f"{name}/{task}") for v in values]
    common = sorted(set.intersection(*(set(t) for tables in runs.values() for t in tables)))
    if not common:
        raise HarnessError(f"task {task}: the checkpoints {', '.join(runs)} share no unit ids; "
                           "evaluate them on the same data")
    x = {name: np.array([[t[i] for i in common] for t in tables]) for name, tables in runs.items()}
    # Seeds in a canonical order (by their scores): listing them differently changes nothing.
    x = {name: v[sorted(range(len(v)), key=lambda s: v[s].tobytes())] for name, v in x.items()}
    cidx = cluster_index([clusters.get(i, i) for i in common], len(common)) if clusters else None
    n_units = len(common) if cidx is None else int(cidx.max()) + 1
    dropped = {name: max(len(t) - len(common) for t in tables) for name, tables in runs.items()}
    return _Task(task, list(per_ckpt), x, seeded, cidx, n_units, dropped)


def _replicates(t: _Task, name: str, w: np.ndarray, seed: int, B: int) -> np.ndarray:
    """(B,) replicate scores of one checkpoint: seeds resampled (stream keyed by its scores, not its
    name), then units (the task's shared counts `w`)."""
    import numpy as np

    from harness.stats.ci import replicate_means

    per_seed = np.column_stack([replicate_means(w, row, t.cidx) for row in t.x[name]])
    if not t.seeded[name] or per_seed.shape[1] == 1:
        return per_seed[:, 0]
    s = per_seed.shape[1]
    rng = np.random.default_rng([seed, zlib.crc32(t.name.encode()), zlib.crc32(t.x[name].tobytes())])
    seed_w = rng.multinomial(s, [1.0 / s] * s, size=B)
    return (seed_w * per_seed).sum(axis=1) / s


def _unit_diffs(t: _Task, a: str, b: str) -> np.ndarray:
    """Per-unit paired differences (seed means); per cluster, scaled by the mean cluster size."""
    return cluster_table(t.x[a].mean(axis=0, keepdims=True) - t.x[b].mean(axis=0, keepdims=True), t.cidx)[0]


def _mde(t: _Task, baseline: str | None, alpha: float, family: int) -> tuple[float, float]:
    """(one comparison, the family's first-step threshold alpha / family) MDEs of the task."""
    import numpy as np

    from harness.stats.ci import mde

    others = [c for c in t.names if c != baseline] if baseline in t.names else []
    # The median comparison: one far-off row (a blind run) must not set the whole task's MDE.
    s2 = float(np.median([np.mean(_unit_diffs(t, c, baseline) ** 2) for c in others])) if others else 0.0
    if s2 == 0:  # no comparison, or no disagreement seen: two models with independent errors
        ref = t.x[baseline if baseline in t.names else t.names[0]].mean(axis=0)
        if t.cidx is not None:
            ref = np.bincount(t.cidx, weights=ref) / np.bincount(t.cidx)
        s2 = 2 * float(np.var(ref))
    if s2 <= 0:
        return math.nan, math.nan
    return mde(s2, t.n_units, alpha), mde(s2, t.n_units, alpha / family) if family else math.nan


def leaderboard_frame(
    unit_scores: Mapping[str, Mapping[str, Any]],
    baseline: str,
    B: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    ci: str = "auto",
    correction: str = "holm",
    clusters: Mapping[str, Mapping[str, str]] | None = None,
    on_task: Callable[[str], None] | None = None,
    primary: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """All CIs, paired deltas vs the baseline, adjusted p-values, MDEs and rank intervals.

    unit_scores: checkpoint -> task -> {unit id: score in [0, 1]}, or a list of such mappings, one
    per training seed. clusters: task -> {unit id: cluster label} for clustered tasks. Within a
    task every checkpoint is scored on the unit ids all of them (and all their seeds) share;
    `n_dropped` counts each checkpoint's units left out. primary: checkpoint -> its primary task
    (or NO_PRIMARY); see the module docstring. One row per checkpoint x task with
    LEADERBOARD_COLUMNS then EXTRA_COLUMNS; delta columns are NaN for the baseline.
    `on_task(task)` is called as each task's statistics finish (progress in logs).
    """
    import numpy as np
    import pandas as pd

    from harness.stats import ci as stats

    stats._check_level(level, B)
    stats._check_method(ci)
    alpha = 1 - level
    if baseline not in unit_scores:
        raise HarnessError(f"baseline {baseline!r} is not among the checkpoints ({', '.join(unit_scores)}); "
                           "name one of them as the baseline")
    order: list[str] = []
    for per_task in unit_scores.values():
        order += [t for t in per_task if t not in order]
    tasks = [_align(task, {c: unit_scores[c][task] for c in unit_scores if task in unit_scores[c]},
                    (clusters or {}).get(task)) for task in order]
    in_family = _endpoints(primary or {}, order)
    family = sum(in_family(c, t.name) for t in tasks if baseline in t.names for c in t.names if c != baseline)
    resampled = any(t.cidx is not None or not all(map(t.binary, t.names)) for t in tasks)
    B_used = stats.resamples_for(family, B, alpha) if resampled and correction != "none" else B

    rows: list[dict[str, Any]] = []
    for t in tasks:
        w = stats.resample_weights(t.n_units, B_used, stats.task_seed(seed, t.name))
        reps = {c: _replicates(t, c, w, seed, B_used) for c in t.names}
        means = {c: float(t.x[c].mean()) for c in t.names}
        rank_low, rank_high = stats.rank_interval(np.column_stack([reps[c] for c in t.names]), level)
        ranks = stats.point_ranks([means[c] for c in t.names])
        # The family's strictest threshold: alpha / family (Holm's and BH's first step; none: alpha)
        task_mde, family_mde = _mde(t, baseline, alpha, family if correction != "none" else min(family, 1))
        for k, c in enumerate(t.names):
            if t.seeded[c]:
                low, high, method = _seeded_ci(t, c, level)
            else:
                low, high, method = stats.cell_ci(t.x[c][0], t.cidx, ci, reps[c], level, t.n_units)
            per_seed = 100.0 * t.x[c].mean(axis=1)
            compared = baseline in t.names and c != baseline
            row: dict[str, Any] = {
                "checkpoint": c, "task": t.name, "n": t.n_units, "score": 100.0 * means[c],
                "ci_low": 100.0 * low, "ci_high": 100.0 * high, "ci_method": method,
                "delta": np.nan, "delta_ci_low": np.nan, "delta_ci_high": np.nan, "p_value": np.nan,
                "p_adjusted": np.nan, "a_only": np.nan, "b_only": np.nan, "mde": task_mde,
                "endpoint": "" if not compared else PRIMARY if in_family(c, t.name) else EXPLORATORY,
                "family_size": family if compared and in_family(c, t.name) else np.nan,
                "rank": ranks[k], "rank_low": int(rank_low[k]), "rank_high": int(rank_high[k]),
                "delta_method": "", "correction": "", "mde_family": family_mde,
                "seeds": len(per_seed) if t.seeded[c] else np.nan,
                "seed_min": float(per_seed.min()) if t.seeded[c] else np.nan,
                "seed_max": float(per_seed.max()) if t.seeded[c] else np.nan,
                "resamples": B_used, "n_dropped": t.dropped[c],
            }
            if compared:
                row.update(_delta(t, c, baseline, reps, B_used, seed, level))
            rows.append(row)
        if on_task is not None:
            on_task(t.name)
    df = pd.DataFrame(rows, columns=[*LEADERBOARD_COLUMNS, *EXTRA_COLUMNS])
    tested = (df["endpoint"] == PRIMARY).to_numpy()
    df["p_adjusted"] = np.nan
    df.loc[tested, "p_adjusted"] = stats.adjust(df.loc[tested, "p_value"].tolist(), correction, alpha)
    df.loc[tested, "correction"] = correction
    return df


def _endpoints(primary: Mapping[str, str], tasks: list[str]) -> Callable[[str, str], bool]:
    """in_family(checkpoint, task): is this comparison in the corrected family?"""
    for name, task in primary.items():
        if task != NO_PRIMARY and task not in tasks:
            raise HarnessError(f"checkpoint {name}: primary task {task!r} is not on the board "
                               f"({', '.join(tasks)}); name one of them, or `none`")
    return lambda c, task: c not in primary or primary[c] == task


def _seeded_ci(t: _Task, c: str, level: float) -> tuple[float, float, str]:
    """(low, high, method) of a seeded row from its seed x unit components (harness/stats/seeds.py)."""
    from harness.stats import ci as stats
    from harness.stats.seeds import seeded_score

    mean, low, high = seeded_score(cluster_table(t.x[c], t.cidx), level)
    if high > low:
        return low, high, SEEDED_METHOD
    if mean in (0.0, 1.0):  # no spread at 0% or 100%: Wilson over the units is never zero-width
        return (*stats.proportion_ci(round(mean * t.n_units), t.n_units, "wilson", level), "wilson")
    return (*stats.wilson_t(mean, t.n_units, t.n_units - 1, level), "wilson")


def _delta(t: _Task, c: str, base: str, reps: dict[str, np.ndarray], B: int, seed: int, level: float) -> dict[str, Any]:
    from harness.stats import ci as stats

    if not t.seeded[c] and not t.seeded[base]:
        d = stats.paired_delta(t.x[c][0], t.x[base][0], t.cidx, B, seed, level, reps=(reps[c], reps[base]))
    else:  # every seed of both sides: seed and unit variance components
        from harness.stats.seeds import seeded_delta

        delta, low, high, pv = seeded_delta(cluster_table(t.x[c], t.cidx), cluster_table(t.x[base], t.cidx), level)
        d = {"delta": 100.0 * delta, "low": 100.0 * low, "high": 100.0 * high, "p_value": pv,
             "method": SEEDED_METHOD, "a_only": None, "b_only": None}
    nan = math.nan
    return {"delta": d["delta"], "delta_ci_low": d["low"], "delta_ci_high": d["high"], "p_value": d["p_value"],
            "a_only": nan if d["a_only"] is None else d["a_only"], "b_only": nan if d["b_only"] is None else d["b_only"],
            "delta_method": d["method"]}

