"""Confidence intervals, paired differences and rank bands for benchmark scores.

Scores come in as per-unit values in [0, 1] (a unit is what `Task.units` returns: an item, or a
group scored together); estimates and interval bounds go out in percent, differences in points.

The bootstrap is a hand-vectorised percentile bootstrap. One matrix of resample counts
(B x n units) is drawn per task and multiplied by the score matrix of every checkpoint at once,
so each checkpoint's CI and every paired difference use the same resamples (that is what makes
the differences paired) and a whole leaderboard costs a few matrix products
(`python bench/stats_speed.py` times 20 checkpoints x 6 tasks x 1,000 units at B = 10,000).
Its intervals agree with `scipy.stats.bootstrap(..., method="percentile")` (tests check it).

Rank bands (`rank_bands`): sort checkpoints by score, best first. The best opens band 1 and
leads it. Walking down, a checkpoint joins the current band unless the paired-difference CI
(leader minus it) excludes 0; then it opens the next band and leads it. So every band member is
statistically indistinguishable from its band's leader, and each leader is significantly below
the previous band's leader.

Every function with a fixed seed is deterministic, and independent of the order ids come in
(ids are sorted before resampling).
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator, Mapping, Sequence

from harness.errors import HarnessError

if TYPE_CHECKING:  # heavy imports stay lazy so `harness --help` is fast
    import numpy as np
    import pandas as pd

CI_METHODS = ("bootstrap", "wilson", "clopper-pearson")
_SCIPY_CI_METHOD = {"wilson": "wilson", "clopper-pearson": "exact"}
_CHUNK = 1000  # resamples drawn per block: bounds memory at _CHUNK x n counts


@dataclass(frozen=True)
class CI:
    """A score with its confidence interval, all in percent; n = units (clusters) used."""

    estimate: float
    low: float
    high: float
    method: str
    n: int
    level: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Paired:
    """mean(a) - mean(b) in points on the ids both sides share, with a paired bootstrap CI.

    `dropped_a` / `dropped_b` count ids present on one side only (left out, never silently).
    `mcnemar_p` (exact, binomial on discordant pairs) is set only when both sides are 0/1;
    `a_only` / `b_only` then count the items only a / only b got right.
    """

    delta: float
    low: float
    high: float
    p_value: float
    n: int
    dropped_a: int
    dropped_b: int
    score_a: float
    score_b: float
    mcnemar_p: float | None = None
    a_only: int | None = None
    b_only: int | None = None
    level: float = 0.95

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- input checks -------------------------------------------------------------------------------
def _as_scores(values: Sequence[float] | Any, what: str) -> np.ndarray:
    import numpy as np

    try:
        x = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        raise HarnessError(f"{what}: scores must be numbers; fix the scores passed in") from None
    if x.size == 0:
        raise HarnessError(f"{what}: no scores; evaluate at least one item")
    if not np.isfinite(x).all():
        raise HarnessError(f"{what}: scores contain NaN or infinity; re-score the samples")
    return x


def _check_level(level: float, B: int) -> None:
    if not 0 < level < 1:
        raise HarnessError(f"confidence level {level} must be between 0 and 1 (e.g. 0.95)")
    if B < 1:
        raise HarnessError(f"bootstrap resamples B={B} must be at least 1 (e.g. 10000)")


def _is_binary(x: np.ndarray) -> bool:
    import numpy as np

    return bool(np.isin(x, (0.0, 1.0)).all())


def _cluster_means(x: np.ndarray, clusters: Sequence[Hashable]) -> np.ndarray:
    """One value per cluster: the mean of its scores (each cluster weighs one, as Task.units)."""
    import numpy as np

    labels = [str(c) for c in clusters]
    if len(labels) != x.size:
        raise HarnessError(
            f"clusters has {len(labels)} labels for {x.size} scores; pass one label per score"
        )
    _, inverse = np.unique(np.asarray(labels), return_inverse=True)
    return np.bincount(inverse, weights=x) / np.bincount(inverse)


def _by_id(scores: Sequence[float], ids: Sequence[Hashable], what: str) -> dict[str, float]:
    x = _as_scores(scores, what)
    keys = [str(i) for i in ids]
    if len(keys) != x.size:
        raise HarnessError(f"{what}: {len(keys)} ids for {x.size} scores; pass one id per score")
    table = dict(zip(keys, x.tolist()))
    if len(table) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise HarnessError(
            f"{what}: id {dup!r} appears more than once; aggregate samples per item first (Task.units)"
        )
    return table


# --- the bootstrap engine ---------------------------------------------------------------------
def _resample_counts(rng: np.random.Generator, n: int, B: int) -> Iterator[np.ndarray]:
    """Blocks of multinomial resample counts: row b says how often each unit was drawn."""
    import numpy as np

    for start in range(0, B, _CHUNK):
        rows = min(_CHUNK, B - start)
        # int64 on purpose: bincount would copy narrower ints to intp anyway (measured slower).
        draws = rng.integers(0, n, size=(rows, n), dtype=np.int64)
        draws += (np.arange(rows, dtype=np.int64) * n)[:, None]  # row b's draws go to bins b*n..
        yield np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n)


def bootstrap_means(matrix: Any, B: int = 10_000, seed: int | Sequence[int] = 0) -> np.ndarray:
    """(B, K) bootstrap means of K score vectors over the same n units, resampled together.

    `matrix` is (K, n) or a single vector of n. Column k holds checkpoint k's resampled means
    (fractions, not percent); columns are paired because they share the resampled units.
    """
    import numpy as np

    x = np.atleast_2d(np.asarray(matrix, dtype=float))
    k, n = x.shape
    rng = np.random.default_rng(seed)
    out = np.empty((B, k))
    pos = 0
    for counts in _resample_counts(rng, n, B):
        out[pos : pos + len(counts)] = counts @ x.T
        pos += len(counts)
    return out / n


def _percentile_interval(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    alpha = (1 - level) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha], axis=0)
    return low, high


def _bootstrap_p(diffs: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p-value of "difference = 0", per column.

    Twice the smaller tail mass of the replicates at or beyond 0, with the +1 correction so a
    finite B never claims p = 0; ties at 0 count on both sides (conservative). Identical
    vectors give p = 1.
    """
    import numpy as np

    b = diffs.shape[0]
    at_or_below = (diffs <= 0).sum(axis=0)
    at_or_above = (diffs >= 0).sum(axis=0)
    return np.minimum(1.0, 2 * (np.minimum(at_or_below, at_or_above) + 1) / (b + 1))


def _mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """Exact McNemar: discordant pairs are Binomial(a_only + b_only, 1/2) under no difference."""
    from scipy.stats import binomtest

    a_only = int(((a == 1) & (b == 0)).sum())
    b_only = int(((a == 0) & (b == 1)).sum())
    if a_only + b_only == 0:
        return 1.0, 0, 0
    return float(binomtest(a_only, a_only + b_only, 0.5).pvalue), a_only, b_only


# --- public API -------------------------------------------------------------------------------
def score_ci(
    scores: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    method: str = "bootstrap",
    B: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> CI:
    """Mean score (percent) with a confidence interval.

    method: "bootstrap" (percentile bootstrap over units), "wilson" or "clopper-pearson" (exact;
    both need 0/1 scores). With `clusters` (one label per score, e.g. the item id of each of
    several samples) the scores are first averaged per cluster and whole clusters are resampled,
    so n is the number of clusters.
    """
    _check_level(level, B)
    x = _as_scores(scores, "score_ci")
    if clusters is not None:
        x = _cluster_means(x, clusters)
    n = int(x.size)
    estimate = 100.0 * float(x.mean())
    if method == "bootstrap":
        low, high = _percentile_interval(bootstrap_means(x, B, seed)[:, 0], level)
        return CI(estimate, 100.0 * float(low), 100.0 * float(high), method, n, level)
    if method in _SCIPY_CI_METHOD:
        from scipy.stats import binomtest

        if not _is_binary(x):
            raise HarnessError(
                f"score_ci: method {method!r} needs 0/1 scores (per cluster when clustered); "
                "use method='bootstrap' for partial-credit scores"
            )
        ci = binomtest(int(x.sum()), n).proportion_ci(
            confidence_level=level, method=_SCIPY_CI_METHOD[method]
        )
        return CI(estimate, 100.0 * ci.low, 100.0 * ci.high, method, n, level)
    raise HarnessError(f"unknown CI method {method!r}; choose one of {', '.join(CI_METHODS)}")


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    ids_a: Sequence[Hashable],
    ids_b: Sequence[Hashable],
    B: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> Paired:
    """mean(a) - mean(b) in points over the shared ids, paired bootstrap CI and p, McNemar."""
    import numpy as np

    _check_level(level, B)
    table_a = _by_id(a, ids_a, "paired_difference a")
    table_b = _by_id(b, ids_b, "paired_difference b")
    common = sorted(table_a.keys() & table_b.keys())
    if not common:
        raise HarnessError(
            "paired_difference: the two score sets share no item ids; evaluate both on the same items"
        )
    xa = np.array([table_a[i] for i in common])
    xb = np.array([table_b[i] for i in common])
    reps = bootstrap_means(np.vstack([xa, xb]), B, seed)
    diffs = 100.0 * (reps[:, 0] - reps[:, 1])
    low, high = _percentile_interval(diffs, level)
    mcnemar_p = a_only = b_only = None
    if _is_binary(xa) and _is_binary(xb):
        mcnemar_p, a_only, b_only = _mcnemar(xa, xb)
    return Paired(
        delta=100.0 * float(xa.mean() - xb.mean()),
        low=float(low),
        high=float(high),
        p_value=float(_bootstrap_p(diffs)),
        n=len(common),
        dropped_a=len(table_a) - len(common),
        dropped_b=len(table_b) - len(common),
        score_a=100.0 * float(xa.mean()),
        score_b=100.0 * float(xb.mean()),
        mcnemar_p=mcnemar_p,
        a_only=a_only,
        b_only=b_only,
        level=level,
    )


def _band_walk(names: Sequence[str], scores: Sequence[float], separated: Callable[[int, int], bool]) -> dict[str, int]:
    """The band rule of the module docstring; `separated(i, j)`: is i - j significant?"""
    if len(set(names)) != len(names):
        raise HarnessError("rank_bands: checkpoint names must be unique")
    if len(scores) != len(names):
        raise HarnessError(f"rank_bands: {len(scores)} scores for {len(names)} names")
    # Best first; ties broken by name so the bands never depend on input order.
    order = sorted(range(len(names)), key=lambda i: (-scores[i], names[i]))
    bands: dict[str, int] = {}
    band, leader = 0, None
    for i in order:
        if leader is None or separated(leader, i):
            band, leader = band + 1, i
        bands[names[i]] = band
    return bands


def rank_bands(names: Sequence[str], scores: Sequence[float], diff_low: Any, diff_high: Any) -> dict[str, int]:
    """Band per checkpoint (1 = best); see the module docstring for the rule.

    diff_low[i][j], diff_high[i][j]: CI of score_i - score_j (paired), indices as in `names`.
    A pair is separated when that CI excludes 0.
    """
    import numpy as np

    low, high = np.asarray(diff_low, dtype=float), np.asarray(diff_high, dtype=float)
    k = len(names)
    if low.shape != (k, k) or high.shape != (k, k):
        raise HarnessError(f"rank_bands: difference CIs must be {k}x{k} matrices, one row per name")
    return _band_walk(list(names), list(scores), lambda i, j: bool(low[i, j] > 0 or high[i, j] < 0))


def _task_seed(seed: int, task: str) -> list[int]:
    # A stable per-task stream: adding or reordering tasks never changes another task's numbers.
    return [seed, zlib.crc32(task.encode("utf-8"))]


LEADERBOARD_COLUMNS = (
    "checkpoint", "task", "n", "score", "ci_low", "ci_high",
    "delta", "delta_ci_low", "delta_ci_high", "p_value", "rank_band",
)


def leaderboard_frame(
    unit_scores: Mapping[str, Mapping[str, Mapping[str, float]]],
    baseline: str,
    B: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """All CIs, paired deltas vs the baseline and rank bands of a leaderboard, batched.

    unit_scores: checkpoint -> task -> {unit id: score in [0, 1]} (Task.units' id and score).
    Within a task every checkpoint is scored on the unit ids all of them share, so the column
    compares like with like; `n_dropped` counts each checkpoint's units left out. Returns one row
    per checkpoint x task with LEADERBOARD_COLUMNS, then `mcnemar_p` (0/1 scores only) and
    `n_dropped`; the delta columns are empty (NaN) for the baseline and where it lacks the task.
    """
    import numpy as np
    import pandas as pd

    _check_level(level, B)
    if baseline not in unit_scores:
        raise HarnessError(
            f"baseline {baseline!r} is not among the checkpoints ({', '.join(unit_scores)}); "
            "name one of them as the baseline"
        )
    tasks: list[str] = []
    for per_task in unit_scores.values():
        tasks += [t for t in per_task if t not in tasks]
    rows: list[dict[str, Any]] = []
    for task in tasks:
        names = [c for c in unit_scores if task in unit_scores[c]]
        tables = {c: _by_id(list(unit_scores[c][task].values()), list(unit_scores[c][task]), f"{c}/{task}") for c in names}
        common = sorted(set.intersection(*(set(t) for t in tables.values())))
        if not common:
            raise HarnessError(
                f"task {task}: the checkpoints {', '.join(names)} share no unit ids; "
                "evaluate them on the same data"
            )
        x = np.array([[tables[c][i] for i in common] for c in names])
        reps = bootstrap_means(x, B, _task_seed(seed, task))
        low, high = _percentile_interval(reps, level)
        means = x.mean(axis=1)

        def diff_ci(i: int, j: int) -> tuple[float, float]:
            lo, hi = _percentile_interval(reps[:, i] - reps[:, j], level)
            return float(lo), float(hi)

        bands = _band_walk(names, means.tolist(), lambda i, j: _excludes_zero(diff_ci(i, j)))
        base = names.index(baseline) if baseline in names else None
        for k, name in enumerate(names):
            row: dict[str, Any] = {
                "checkpoint": name, "task": task, "n": len(common),
                "score": 100.0 * means[k], "ci_low": 100.0 * low[k], "ci_high": 100.0 * high[k],
                "delta": np.nan, "delta_ci_low": np.nan, "delta_ci_high": np.nan,
                "p_value": np.nan, "rank_band": bands[name], "mcnemar_p": np.nan,
                "n_dropped": len(tables[name]) - len(common),
            }
            if base is not None and k != base:
                diffs = 100.0 * (reps[:, k] - reps[:, base])
                d_low, d_high = _percentile_interval(diffs, level)
                row.update(
                    delta=100.0 * (means[k] - means[base]), delta_ci_low=float(d_low),
                    delta_ci_high=float(d_high), p_value=float(_bootstrap_p(diffs)),
                )
                if _is_binary(x[k]) and _is_binary(x[base]):
                    row["mcnemar_p"] = _mcnemar(x[k], x[base])[0]
            rows.append(row)
    return pd.DataFrame(rows, columns=[*LEADERBOARD_COLUMNS, "mcnemar_p", "n_dropped"])


def _excludes_zero(ci: tuple[float, float]) -> bool:
    return ci[0] > 0 or ci[1] < 0
