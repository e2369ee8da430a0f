"""harness.stats.ci: intervals against scipy and closed forms, coverage, clusters, paired tests, bands."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.errors import HarnessError
from harness.stats.ci import leaderboard_frame, paired_difference, rank_bands, score_ci


def binary(n: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


# --- score_ci ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["binary", "partial"])
def test_bootstrap_ci_close_to_scipy_percentile_bootstrap(kind: str) -> None:
    rng = np.random.default_rng(3)
    x = binary(200, 0.7, 1) if kind == "binary" else rng.beta(2, 3, size=200)
    ours = score_ci(x, method="bootstrap", B=10_000, seed=0)
    ref = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=10_000, rng=np.random.default_rng(99))
    assert ours.estimate == pytest.approx(100 * x.mean())
    # Independent Monte Carlo runs: the bounds agree to well within a point (SE ~0.1 point).
    assert ours.low == pytest.approx(100 * ref.confidence_interval.low, abs=0.75)
    assert ours.high == pytest.approx(100 * ref.confidence_interval.high, abs=0.75)
    assert ours.n == 200 and ours.method == "bootstrap"


def test_wilson_and_clopper_pearson_match_scipy_and_closed_forms() -> None:
    x = binary(157, 0.63, 2)
    k, n = int(x.sum()), x.size
    for level in (0.9, 0.95, 0.99):
        wilson = score_ci(x, method="wilson", level=level)
        exact = score_ci(x, method="clopper-pearson", level=level)
        ref_w = sps.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
        ref_e = sps.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
        assert (wilson.low, wilson.high) == (100 * ref_w.low, 100 * ref_w.high)
        assert (exact.low, exact.high) == (100 * ref_e.low, 100 * ref_e.high)
        # Independent check: Wilson's score interval and the beta-quantile Clopper-Pearson bounds.
        z = sps.norm.ppf(1 - (1 - level) / 2)
        phat = k / n
        centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
        assert wilson.low == pytest.approx(100 * (centre - half), abs=1e-9)
        assert wilson.high == pytest.approx(100 * (centre + half), abs=1e-9)
        alpha = 1 - level
        assert exact.low == pytest.approx(100 * sps.beta.ppf(alpha / 2, k, n - k + 1), abs=1e-9)
        assert exact.high == pytest.approx(100 * sps.beta.ppf(1 - alpha / 2, k + 1, n - k), abs=1e-9)


def test_binomial_methods_reject_partial_scores_and_bad_input() -> None:
    with pytest.raises(HarnessError, match="0/1"):
        score_ci([0.5, 1.0, 0.0], method="wilson")
    with pytest.raises(HarnessError, match="unknown CI method"):
        score_ci([1.0, 0.0], method="bca")
    with pytest.raises(HarnessError, match="no scores"):
        score_ci([])
    with pytest.raises(HarnessError, match="NaN"):
        score_ci([1.0, float("nan")])
    with pytest.raises(HarnessError, match="labels"):
        score_ci([1.0, 0.0], clusters=["a"])


def test_bootstrap_coverage_near_nominal() -> None:
    p, n, reps = 0.7, 200, 400
    rng = np.random.default_rng(2024)
    hits = 0
    for r in range(reps):
        x = (rng.random(n) < p).astype(float)
        ci = score_ci(x, B=1_000, seed=r)
        hits += ci.low <= 100 * p <= ci.high
    assert 0.92 <= hits / reps <= 0.98


def test_cluster_bootstrap_wider_when_clusters_perfectly_correlated() -> None:
    per_cluster = binary(50, 0.6, 5)
    scores = np.repeat(per_cluster, 4)  # 4 samples per item, all the same
    labels = np.repeat([f"c{i:03d}" for i in range(50)], 4)
    naive = score_ci(scores, seed=1)
    clustered = score_ci(scores, clusters=labels, seed=1)
    assert clustered.n == 50 and naive.n == 200
    assert clustered.estimate == pytest.approx(naive.estimate)
    # sqrt(4) = 2x wider in theory; demand clearly wider.
    assert clustered.high - clustered.low > 1.6 * (naive.high - naive.low)
    # Raw samples with labels resample exactly like the per-cluster means (Task.units' output).
    assert clustered == score_ci(per_cluster, seed=1)


def test_cluster_estimate_weighs_each_cluster_once() -> None:
    scores = [1.0, 1.0, 1.0, 0.0]  # cluster a: 3 samples all right, cluster b: one wrong
    ci = score_ci(scores, clusters=["a", "a", "a", "b"], method="wilson")
    assert ci.estimate == pytest.approx(50.0) and ci.n == 2


def test_fixed_seed_is_deterministic() -> None:
    x = np.random.default_rng(7).random(300)  # continuous, so bounds differ between seeds
    assert score_ci(x, seed=4) == score_ci(x, seed=4)
    assert score_ci(x, seed=4) != score_ci(x, seed=5)


# --- paired_difference ------------------------------------------------------------------------
def test_identical_vectors_give_zero_delta_and_p_one() -> None:
    x = binary(120, 0.5, 8)
    ids = [f"q{i}" for i in range(120)]
    res = paired_difference(x, x, ids, ids, B=2_000)
    assert res.delta == 0 and res.low == 0 and res.high == 0
    assert res.p_value == 1.0 and res.mcnemar_p == 1.0
    assert (res.a_only, res.b_only, res.dropped_a, res.dropped_b) == (0, 0, 0, 0)


def test_clear_improvement_is_significant_and_mcnemar_matches_binomtest() -> None:
    b = binary(400, 0.5, 9)
    a = b.copy()
    wrong = np.flatnonzero(b == 0)
    a[wrong[:40]] = 1  # a fixes 40 items b got wrong ...
    a[np.flatnonzero(b == 1)[:5]] = 0  # ... and breaks 5
    ids = [str(i) for i in range(400)]
    res = paired_difference(a, b, ids, ids, B=5_000)
    assert res.delta == pytest.approx(100 * (40 - 5) / 400)
    assert res.low > 0 and res.significant
    assert res.p_value < 0.01
    assert (res.a_only, res.b_only) == (40, 5)
    assert res.mcnemar_p == pytest.approx(sps.binomtest(40, 45, 0.5).pvalue, rel=1e-12)
    assert res.mcnemar_p < 1e-6
    # Swapping sides flips the sign, keeps the tests' p.
    rev = paired_difference(b, a, ids, ids, B=5_000)
    assert rev.delta == pytest.approx(-res.delta) and rev.high < 0
    assert rev.mcnemar_p == pytest.approx(res.mcnemar_p)


def test_partial_scores_have_no_mcnemar() -> None:
    x = np.linspace(0, 1, 50)
    ids = list(range(50))
    res = paired_difference(x, x[::-1], ids, ids, B=500)
    assert res.mcnemar_p is None and res.a_only is None


def test_different_item_sets_are_intersected_and_reported() -> None:
    a, b = binary(100, 0.6, 10), binary(100, 0.4, 11)
    ids_a = [f"q{i}" for i in range(100)]
    ids_b = [f"q{i}" for i in range(10, 110)]
    res = paired_difference(a, b, ids_a, ids_b, B=1_000)
    assert (res.n, res.dropped_a, res.dropped_b) == (90, 10, 10)
    assert res.delta == pytest.approx(100 * (a[10:].mean() - b[:90].mean()))
    assert res.score_a == pytest.approx(100 * a[10:].mean())
    # Order of ids does not matter: same numbers for shuffled input.
    perm = np.random.default_rng(0).permutation(100)
    shuffled = paired_difference(a[perm], b, [ids_a[i] for i in perm], ids_b, B=1_000)
    assert shuffled == res


def test_paired_difference_bad_ids() -> None:
    with pytest.raises(HarnessError, match="no item ids"):
        paired_difference([1.0], [0.0], ["x"], ["y"])
    with pytest.raises(HarnessError, match="more than once"):
        paired_difference([1.0, 0.0], [0.0, 1.0], ["x", "x"], ["x", "y"])
    with pytest.raises(HarnessError, match="one id per score"):
        paired_difference([1.0, 0.0], [0.0], ["x"], ["x"])


# --- rank bands -------------------------------------------------------------------------------
def matrices(names: list[str], separated: set[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Difference CIs: [1, 5] for the separated (higher, lower) pairs, [-2, 2] for all others."""
    k = len(names)
    low, high = np.full((k, k), -2.0), np.full((k, k), 2.0)
    for hi_name, lo_name in separated:
        i, j = names.index(hi_name), names.index(lo_name)
        low[i, j], high[i, j] = 1.0, 5.0
        low[j, i], high[j, i] = -5.0, -1.0
    return low, high


def test_rank_bands_split_where_significantly_below_band_leader() -> None:
    names = ["C", "A", "D", "B"]
    scores = [60.0, 80.0, 59.0, 78.0]
    low, high = matrices(names, {("A", "C"), ("A", "D"), ("B", "C"), ("B", "D")})
    assert rank_bands(names, scores, low, high) == {"A": 1, "B": 1, "C": 2, "D": 2}


def test_rank_bands_compare_with_band_leader_not_neighbour() -> None:
    # A-B and B-C are not significant, A-C is: C opens band 2 although it ties with B.
    names = ["A", "B", "C"]
    low, high = matrices(names, {("A", "C")})
    assert rank_bands(names, [80.0, 75.0, 70.0], low, high) == {"A": 1, "B": 1, "C": 2}
    # Nothing significant: one band.
    low, high = matrices(names, set())
    assert set(rank_bands(names, [80.0, 75.0, 70.0], low, high).values()) == {1}


def test_rank_bands_bad_input() -> None:
    with pytest.raises(HarnessError, match="unique"):
        rank_bands(["A", "A"], [1.0, 2.0], np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(HarnessError, match="2x2"):
        rank_bands(["A", "B"], [1.0, 2.0], np.zeros((3, 3)), np.zeros((3, 3)))


# --- batched leaderboard ----------------------------------------------------------------------
def test_leaderboard_frame_matches_pairwise_functions() -> None:
    ids = [f"q{i}" for i in range(300)]
    base = binary(300, 0.45, 12)
    strong = base.copy()
    strong[np.flatnonzero(base == 0)[:60]] = 1
    same = base.copy()
    board = {
        "base": {"t1": dict(zip(ids, base)), "t2": dict(zip(ids, base))},
        "strong": {"t1": dict(zip(ids, strong)), "t2": dict(zip(ids[:-7], strong[:-7]))},
        "same": {"t1": dict(zip(ids, same))},
    }
    df = leaderboard_frame(board, baseline="base", B=4_000, seed=0)
    assert list(df.columns[:11]) == [
        "checkpoint", "task", "n", "score", "ci_low", "ci_high",
        "delta", "delta_ci_low", "delta_ci_high", "p_value", "rank_band",
    ]
    assert len(df) == 5
    rows = {(r.checkpoint, r.task): r for r in df.itertuples()}
    assert np.isnan(rows["base", "t1"].delta) and np.isnan(rows["base", "t1"].p_value)
    ref = paired_difference(strong, base, ids, ids, B=4_000)
    got = rows["strong", "t1"]
    assert got.delta == pytest.approx(ref.delta)
    assert got.delta_ci_low == pytest.approx(ref.low, abs=1.0)
    assert got.mcnemar_p == pytest.approx(ref.mcnemar_p)
    assert got.p_value < 0.01
    assert (got.rank_band, rows["base", "t1"].rank_band, rows["same", "t1"].rank_band) == (1, 2, 2)
    assert rows["same", "t1"].delta == 0 and rows["same", "t1"].p_value == 1.0
    single = score_ci(base, B=4_000)
    assert rows["base", "t1"].score == pytest.approx(single.estimate)
    assert rows["base", "t1"].ci_low == pytest.approx(single.low, abs=1.0)
    # t2: the checkpoints are compared on the 293 shared ids, base reports its 7 left out.
    assert rows["base", "t2"].n == 293 and rows["base", "t2"].n_dropped == 7
    assert rows["strong", "t2"].n_dropped == 0
    assert rows["base", "t2"].score == pytest.approx(100 * base[:-7].mean())
    # Deterministic with a fixed seed.
    again = leaderboard_frame(board, baseline="base", B=4_000, seed=0)
    assert again.equals(df)


def test_leaderboard_frame_errors() -> None:
    with pytest.raises(HarnessError, match="baseline"):
        leaderboard_frame({"a": {"t": {"q": 1.0}}}, baseline="b", B=10)
    with pytest.raises(HarnessError, match="share no unit ids"):
        leaderboard_frame({"a": {"t": {"q": 1.0}}, "b": {"t": {"r": 1.0}}}, baseline="a", B=10)
