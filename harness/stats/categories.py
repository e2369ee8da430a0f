"""Paired differences per category (a task's question types), as `harness diff` prints them.

A treatment that targets a weak question type (data_engine) makes a claim about one category, not
the task's mean: this splits the statistics' units (Task.units: an item, or an MMBench circular
group) by their category and gives each category the paired difference the leaderboard gives the
whole task: with one run a side, `paired_delta` (McNemar's score interval for 0/1 units, the
bootstrap otherwise); with several seeds on either side, `seeded_delta` (seed and unit variance
components, harness/stats/seeds.py). Several categories are several comparisons: `p_adjusted` is
Holm over them. A category declared before the run (the base's weakest type on another split) is
one comparison: its raw p.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

from harness.errors import HarnessError

if TYPE_CHECKING:
    import numpy as np

    from harness.core.task import Unit

ALL = "(all)"


@dataclass(frozen=True)
class CategoryDifference:
    category: str  # ALL for the whole task
    n: int  # units (clusters where units are clustered)
    score_a: float  # points, mean over a's seeds
    score_b: float
    delta: float
    low: float
    high: float
    p_value: float
    p_adjusted: float  # Holm over the categories (the ALL row: its own p)
    method: str


def category_differences(a: Sequence[Sequence[Unit]], b: Sequence[Sequence[Unit]], level: float = 0.95,
                         B: int = 10_000, seed: int = 0) -> list[CategoryDifference]:
    """mean(a) - mean(b) per category over the units every run shares, in category name order,
    then ALL. `a` and `b` are one or more runs (seeds) of the same task, each a list of units."""
    import numpy as np

    from harness.stats.ci import adjust, cluster_index, paired_delta
    from harness.stats.seeds import cluster_table, seeded_delta

    if not a or not b:
        raise HarnessError("category differences: give at least one run on each side")
    first = {u.id: u for u in a[0]}
    common = set(first)
    for run in (*a, *b):
        common &= {u.id for u in run}
    if not common:
        raise HarnessError("category differences: the runs share no units; evaluate them on the same items")
    seeded = len(a) > 1 or len(b) > 1

    scores_a = [{u.id: u.score for u in run} for run in a]
    scores_b = [{u.id: u.score for u in run} for run in b]

    def table(runs: list[dict[str, float]], ids: list[str]) -> np.ndarray:
        return np.array([[score[i] for i in ids] for score in runs])

    def compare(name: str, ids: list[str]) -> CategoryDifference:
        xa, xb = table(scores_a, ids), table(scores_b, ids)
        clusters = [first[i].cluster for i in ids]
        # circular copies (Unit.cluster) are resampled together, as the leaderboard does
        cidx = cluster_index([c or i for c, i in zip(clusters, ids)], len(ids)) if any(clusters) else None
        if seeded:
            ta, tb = cluster_table(xa, cidx), cluster_table(xb, cidx)
            delta, low, high, p = seeded_delta(ta, tb, level)
            d = {"delta": 100 * delta, "low": 100 * low, "high": 100 * high, "p_value": p, "n": ta.shape[1],
                 "method": "seeds"}
        else:
            d = paired_delta(xa[0], xb[0], cidx, B, seed, level)
        return CategoryDifference(name, d["n"], 100 * float(xa.mean()), 100 * float(xb.mean()), d["delta"], d["low"],
                                  d["high"], d["p_value"], d["p_value"], d["method"])

    names = sorted({first[i].category or "" for i in common})
    rows = [compare(name, sorted(i for i in common if (first[i].category or "") == name)) for name in names]
    adjusted = adjust([r.p_value for r in rows], "holm")
    return [replace(r, p_adjusted=q) for r, q in zip(rows, adjusted)] + [compare(ALL, sorted(common))]
