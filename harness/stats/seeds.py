"""Multi-seed rows: a score or paired delta whose variance has a seed part and a unit (item) part.

A row built once per training seed gives a seeds x units table x[s, i] (fractions). Its estimate
is the mean over seeds and units. The variance of that mean has two parts (a two-way
variance-components model, units crossed with seeds):
- the seed means' variance Vsm = MS_seed / (n S), resting on S - 1 seeds; it holds the seed-to-
  seed variance and the units' residual noise r = MS_res / (n S), which rests on (S-1)(n-1) cells;
- the unit part Vu = var_i(d_i) / n of the per-unit values d_i (the seed mean, minus the
  baseline's for a delta), which holds r too and rests on n - 1 units.
The interval is estimate +- h (README "Statistics", simulation table in bench/stats_audit.py), with
a preliminary test for pooling (Paull 1950, "sometimes pool"):
- F = MS_seed / MS_res below twice the median of F(S-1, (S-1)(n-1)): the seeds differ no more than
  unit noise makes them, so the seed mean square is pooled into the residual and the interval is
  the units' t interval of the seed means, h^2 = t_{n-1}^2 Vu;
- otherwise Banerjee's interval, t on the seeds for all of Vsm: h^2 = t_{S-1}^2 Vsm + t_{n-1}^2 (Vu - r)
  (conservative for any seed variance, exact when the seeds dominate).
Measured (bench/stats_audit.py --only seeds): the seeds-then-units bootstrap counted the units'
noise twice (98.7% coverage with no seed variance) and under-covered when seeds dominate (89.8% at
3 seeds, seed sd 6 points); a Satterthwaite or Welch t with estimated df under-covered there too
(92-93%), its df being largest exactly when the seeds happen to agree; a blend of Banerjee's and the
components' interval weighted by the seed share of Vsm over-covered with no seed variance (96.6% at
3 seeds: a third of those draws spread by chance and got t_2). A side with one seed has no seed part.

Every function takes arrays with any leading batch shape (..., S, n), so the simulation audit runs
the same arithmetic vectorised over draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class SeedSide:
    """One side's seed part of h^2: t_{S-1}^2 x seed_var, less t_{n-1}^2 x moved (both 0 where pooled)."""

    seeds: int
    seed_var: np.ndarray  # Vsm where the seeds are kept apart, else 0
    moved: np.ndarray  # r: the residual noise Vsm holds, taken out of the unit part there


def cluster_table(x: np.ndarray, cidx: np.ndarray | None) -> np.ndarray:
    """(seeds, units) scores from (seeds, rows): rows in clusters become cluster sums over the mean
    cluster size, whose mean is still the mean over rows (None: every row is its own unit)."""
    import numpy as np

    if cidx is None:
        return x
    n_units = int(cidx.max()) + 1
    return np.stack([np.bincount(cidx, weights=row, minlength=n_units) for row in x]) / (x.shape[1] / n_units)


def pooling_threshold(seeds: int, units: int) -> float:
    """Paull's (1950) threshold on F = MS_seed / MS_res: twice the median of F(S-1, (S-1)(n-1))."""
    from scipy.stats import f

    return 2.0 * float(f.ppf(0.5, seeds - 1, (seeds - 1) * max(units - 1, 1)))


def _side(x: np.ndarray) -> SeedSide | None:
    """The seed part of one side's (..., S, n) table, None with a single seed."""
    import numpy as np

    S, n = x.shape[-2:]
    if S < 2:
        return None
    grand = x.mean(axis=(-2, -1), keepdims=True)
    seed_means = x.mean(axis=-1, keepdims=True)
    unit_means = x.mean(axis=-2, keepdims=True)
    ms_seed = n * ((seed_means - grand) ** 2).sum(axis=(-2, -1)) / (S - 1)
    ms_res = ((x - seed_means - unit_means + grand) ** 2).sum(axis=(-2, -1)) / ((S - 1) * max(n - 1, 1))
    vsm, r = ms_seed / (n * S), ms_res / (n * S)
    # kept apart where F > threshold (with no residual noise at all, wherever the seeds differ)
    apart = ms_seed > pooling_threshold(S, n) * ms_res
    return SeedSide(S, np.where(apart, vsm, 0.0), np.where(apart, r, 0.0))


def half_width(sides: Sequence[np.ndarray], d: np.ndarray, level: float) -> np.ndarray:
    """h of the interval around mean(d): `sides` are the (..., S, n) seed tables that d's seed
    means came from, d (..., n) the per-unit values (a seed mean, or a difference of two)."""
    import numpy as np
    from scipy.stats import t

    n = d.shape[-1]
    a = 1 - (1 - level) / 2
    t2_units = float(t.ppf(a, n - 1)) ** 2 if n > 1 else math.inf
    h2 = t2_units * d.var(axis=-1, ddof=1) / n if n > 1 else np.zeros(d.shape[:-1])
    for x in sides:
        side = _side(x)
        if side is not None:
            h2 = h2 + float(t.ppf(a, side.seeds - 1)) ** 2 * side.seed_var - t2_units * side.moved
    return np.sqrt(np.maximum(h2, 0.0))


def seeded_score(x: np.ndarray, level: float) -> tuple[float, float, float]:
    """(estimate, low, high) in fractions for one row's (S, n) table, clipped to [0, 1]."""
    est = float(x.mean())
    h = float(half_width([x], x.mean(axis=0), level))
    return est, max(0.0, est - h), min(1.0, est + h)


def seeded_delta(xa: np.ndarray, xb: np.ndarray, level: float) -> tuple[float, float, float, float]:
    """(delta, low, high, p) in fractions of mean(a) - mean(b), (Sa, n) and (Sb, n) tables on the
    same units. p is the level at which the interval just reaches 0, so p < alpha exactly when
    the (1 - alpha) interval excludes 0."""
    from scipy.optimize import brentq

    d = xa.mean(axis=0) - xb.mean(axis=0)
    delta = float(d.mean())
    h = float(half_width([xa, xb], d, level))
    if h == 0:  # no spread anywhere: every unit and seed differ by the same amount
        return delta, delta, delta, 1.0 if delta == 0 else 0.0
    reaches = lambda alpha: float(half_width([xa, xb], d, 1 - alpha)) - abs(delta)  # noqa: E731 - falls as alpha rises
    lo, hi = 1e-15, 1 - 1e-12
    if delta == 0 or reaches(hi) > 0:
        p = 1.0
    elif reaches(lo) < 0:
        p = lo
    else:
        p = float(brentq(reaches, lo, hi, xtol=1e-14, rtol=1e-10))
    return delta, delta - h, delta + h, p
