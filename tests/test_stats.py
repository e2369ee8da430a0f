"""harness.stats.ci: intervals against scipy and closed forms, coverage by simulation with known truth,
clusters, and one significance rule for paired differences (p, CI and star agree)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.stats import ci as stats
from harness.errors import HarnessError
from harness.stats.ci import mcnemar_test, paired_difference, score_ci

NS = (30, 100, 1000)
PS = (0.02, 0.1, 0.5, 0.9)


def binary(n: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


# --- score_ci: methods --------------------------------------------------------------------------
def test_auto_is_wilson_for_01_clustered_wilson_for_grouped_and_effective_wilson_for_partial() -> None:
    x = binary(80, 0.3, 1)
    assert score_ci(x).method == "wilson" and score_ci(x) == score_ci(x, method="wilson")
    assert score_ci(np.linspace(0, 1, 80)).method == "wilson-effective"
    assert score_ci(np.linspace(0, 1, 80), method="bootstrap").method == "bootstrap"
    assert score_ci(x, groups=np.arange(80) // 4).method == "wilson-clustered"
    assert score_ci(x, groups=np.arange(80) // 4, method="bootstrap").method == "bootstrap"
    assert score_ci(np.linspace(0, 1, 80), groups=np.arange(80) // 4).method == "bootstrap"


def test_clustered_wilson_runs_between_row_wilson_and_cluster_wilson() -> None:
    """Design effect 1 (copies disagree as much as independent rows would) gives Wilson over the
    rows; copies answered alike (design effect = copies) give Wilson over the questions; both with
    t_{G-1} for z (statsmodels' proportion_confint at the matching alpha)."""
    from statsmodels.stats.proportion import proportion_confint

    G = 50
    alpha = 2 * sps.norm.sf(sps.t.ppf(0.975, G - 1))
    alike = np.repeat(binary(G, 0.4, 3), 4)
    ci = score_ci(alike, groups=np.repeat(np.arange(G), 4))
    k = alike.reshape(G, 4)[:, 0].sum()
    assert (ci.low, ci.high) == pytest.approx([100 * b for b in proportion_confint(k, G, alpha, "wilson")])
    mixed = np.tile([1.0, 0.0, 0.0, 1.0], G)  # every question 2 of 4: no spread between questions
    ci = score_ci(mixed, groups=np.repeat(np.arange(G), 4))
    assert (ci.low, ci.high) == pytest.approx([100 * b for b in proportion_confint(2 * G, 4 * G, alpha, "wilson")])
    zero = score_ci(np.zeros(4 * G), groups=np.repeat(np.arange(G), 4))  # 0%: as wide as whole questions
    assert zero.low == 0 and zero.high == pytest.approx(100 * proportion_confint(0, G, alpha, "wilson")[1])


def test_clustered_wilson_needs_two_clusters_with_the_minority_outcome() -> None:
    """One right row (or right rows in one question only) says nothing about clustering: the
    design effect takes its upper end, so the interval is Wilson's over whole questions. With a
    second question holding a right row the estimate is used (here: design effect 1, all rows)."""
    from statsmodels.stats.proportion import proportion_confint

    G = 100
    alpha = 2 * sps.norm.sf(sps.t.ppf(0.975, G - 1))
    groups = np.repeat(np.arange(G), 4)
    for right in ([5], [5, 6, 7], [4, 5, 6, 7]):  # 1, 3 or 4 right copies, all of question 1
        x = np.zeros(4 * G)
        x[right] = 1.0
        ci = score_ci(x, groups=groups)
        assert (ci.low, ci.high) == pytest.approx([100 * b for b in proportion_confint(len(right) / 4, G, alpha, "wilson")])
    two = np.zeros(4 * G)
    two[[0, 4]] = 1.0  # questions 0 and 1
    ci = score_ci(two, groups=groups)
    assert (ci.low, ci.high) == pytest.approx([100 * b for b in proportion_confint(2, 4 * G, alpha, "wilson")])
    # The same rule for the wrong rows near 100%: symmetric.
    flip = score_ci(1 - two, groups=groups)
    assert (flip.low, flip.high) == pytest.approx([100 - ci.high, 100 - ci.low])


def test_effective_wilson_is_wilson_on_kish_effective_n_with_t() -> None:
    from statsmodels.stats.proportion import proportion_confint

    x = np.random.default_rng(4).beta(0.4, 1.6, size=40)  # skewed partial credit
    m, s2, n = x.mean(), x.var(ddof=1), x.size
    n_eff = n * m * (1 - m) / s2
    alpha = 2 * sps.norm.sf(sps.t.ppf(0.975, n - 1))
    ci = score_ci(x)
    assert ci.method == "wilson-effective" and ci.n == n
    assert (ci.low, ci.high) == pytest.approx([100 * b for b in proportion_confint(m * n_eff, n_eff, alpha, "wilson")])
    assert ci.low > 0  # Wilson's asymmetry: a skewed mean near 0 gets a longer upper arm
    assert ci.high - 100 * m > 100 * m - ci.low
    flat = score_ci(np.full(30, 0.5))  # no spread: Wilson over the 30 units, never zero width
    assert flat.high - flat.low > 10


@pytest.mark.parametrize("method", stats.CI_METHODS)
@pytest.mark.parametrize("value", [0.0, 1.0])
def test_no_zero_width_interval_at_0_or_100_percent(method: str, value: float) -> None:
    for x, groups in [(np.full(30, value), None), (np.full(120, value), np.arange(120) // 4)]:
        if groups is not None and method in ("wilson", "jeffreys", "clopper-pearson"):
            continue  # closed forms refuse grouped units (tested below)
        ci = score_ci(x, method=method, B=500, groups=groups)
        assert ci.high - ci.low > 1.0, (method, value, ci)
        assert ci.low <= 100 * value <= ci.high


def test_closed_forms_match_scipy_and_textbook_formulas() -> None:
    x = binary(157, 0.63, 2)
    k, n = int(x.sum()), x.size
    for level in (0.9, 0.95, 0.99):
        wilson = score_ci(x, method="wilson", level=level)
        exact = score_ci(x, method="clopper-pearson", level=level)
        jeffreys = score_ci(x, method="jeffreys", level=level)
        ref_w = sps.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
        assert (wilson.low, wilson.high) == (100 * ref_w.low, 100 * ref_w.high)
        z = sps.norm.ppf(1 - (1 - level) / 2)
        phat = k / n
        centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
        assert wilson.low == pytest.approx(100 * (centre - half), abs=1e-9)
        alpha = 1 - level
        assert exact.low == pytest.approx(100 * sps.beta.ppf(alpha / 2, k, n - k + 1), abs=1e-9)
        assert exact.high == pytest.approx(100 * sps.beta.ppf(1 - alpha / 2, k + 1, n - k), abs=1e-9)
        assert jeffreys.low == pytest.approx(100 * sps.beta.ppf(alpha / 2, k + 0.5, n - k + 0.5), abs=1e-9)


def test_bootstrap_is_scipys_percentile_bootstrap_at_the_expanded_level() -> None:
    x = np.random.default_rng(3).beta(2, 3, size=60)
    ours = score_ci(x, method="bootstrap", B=20_000, seed=0)
    # Hesterberg's expansion: percentiles at Phi(-sqrt(n/(n-1)) t_{n-1, 0.975}) instead of 2.5%.
    tail = sps.norm.cdf(-math.sqrt(60 / 59) * sps.t.ppf(0.975, 59))
    assert 0.02 < tail < 0.025
    ref = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=20_000, confidence_level=1 - 2 * tail,
                        rng=np.random.default_rng(99))
    assert ours.low == pytest.approx(100 * ref.confidence_interval.low, abs=0.5)
    assert ours.high == pytest.approx(100 * ref.confidence_interval.high, abs=0.5)


def test_bad_input_is_refused() -> None:
    with pytest.raises(HarnessError, match="0/1"):
        score_ci([0.5, 1.0, 0.0], method="wilson")
    with pytest.raises(HarnessError, match="groups"):
        score_ci([1.0, 0.0], method="wilson", groups=["a", "a"])
    with pytest.raises(HarnessError, match="unknown CI method"):
        score_ci([1.0, 0.0], method="bca")
    with pytest.raises(HarnessError, match="no scores"):
        score_ci([])
    with pytest.raises(HarnessError, match="NaN"):
        score_ci([1.0, float("nan")])
    with pytest.raises(HarnessError, match="labels"):
        score_ci([1.0, 0.0], clusters=["a"])


def test_clusters_average_first_groups_keep_row_weights() -> None:
    scores = [1.0, 1.0, 1.0, 0.0]  # cluster a: 3 samples all right, cluster b: one wrong
    per_item = score_ci(scores, clusters=["a", "a", "a", "b"])
    assert per_item.estimate == pytest.approx(50.0) and per_item.n == 2
    rows = score_ci(scores, groups=["a", "a", "a", "b"], B=500)
    assert rows.estimate == pytest.approx(75.0) and rows.n == 2


def test_grouped_bootstrap_is_wider_when_copies_agree() -> None:
    per_question = binary(100, 0.6, 5)
    rows = np.repeat(per_question, 4)  # 4 circular copies answered alike
    naive = score_ci(rows, method="bootstrap", seed=1)
    grouped = score_ci(rows, groups=np.repeat(np.arange(100), 4), method="bootstrap", seed=1)
    assert grouped.n == 100 and naive.n == 400 and grouped.estimate == naive.estimate
    assert grouped.high - grouped.low > 1.7 * (naive.high - naive.low)  # sqrt(4) = 2 in theory


def test_fixed_seed_is_deterministic_and_order_free() -> None:
    x = np.random.default_rng(7).random(300)
    assert score_ci(x, method="bootstrap", seed=4) == score_ci(x, method="bootstrap", seed=4)
    assert score_ci(x, method="bootstrap", seed=4) != score_ci(x, method="bootstrap", seed=5)
    assert score_ci(x[::-1]) == score_ci(x)


# --- coverage with known truth -----------------------------------------------------------------
def _neighbourhood(p: float, draws: int, rng: np.random.Generator) -> np.ndarray:
    """True proportions within 20% of p (towards 1/2 for p > 1/2): coverage away from lattice spikes."""
    spread = 0.2 * min(p, 1 - p)
    return rng.uniform(p - spread, p + spread, size=draws)


def _coverage(n: int, truths: np.ndarray, rng: np.random.Generator) -> float:
    k = rng.binomial(n, truths)
    bounds = {j: score_ci([1.0] * j + [0.0] * (n - j)) for j in np.unique(k)}  # the default method
    low = np.array([bounds[j].low for j in k]) / 100
    high = np.array([bounds[j].high for j in k]) / 100
    return float(np.mean((low <= truths) & (truths <= high)))


def _exact_coverage(n: int, p: float) -> float:
    k = np.arange(n + 1)
    ci = [stats.proportion_ci(int(j), n, "wilson", 0.95) for j in k]
    inside = np.array([lo <= p <= hi for lo, hi in ci])
    return float(sps.binom.pmf(k, n, p)[inside].sum())


def test_default_interval_covers_95_percent_fast() -> None:
    """Seeded draws of k ~ Binomial(n, p') with p' near p: coverage of the default (Wilson)."""
    rng = np.random.default_rng(15)
    for n in NS:
        for p in PS:
            cov = _coverage(n, _neighbourhood(p, 6_000, rng), rng)
            assert 0.930 <= cov <= 0.970, (n, p, cov)  # 6,000 draws: s.e. 0.3 points
    # Exactly at p (no simulation noise): never below 93.5% on the grid.
    assert min(_exact_coverage(n, p) for n in NS for p in PS) >= 0.935


@pytest.mark.slow
def test_default_interval_covers_95_percent_full_grid() -> None:
    rng = np.random.default_rng(16)
    for n in NS:
        for p in PS:
            cov = _coverage(n, _neighbourhood(p, 60_000, rng), rng)
            assert 0.935 <= cov <= 0.965, (n, p, cov)


def _grouped_coverage(G: int, p: float, reps: int, seed: int, method: str = "auto", copies: int = 4,
                      concentration: float = 2.0) -> float:
    """`copies` circular copies per question; question difficulty q ~ Beta with mean p (copies of
    one question share q, so they are correlated: intra-cluster correlation 1/(1 + concentration),
    1/3 by default). The truth is p, the mean over questions."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(G), copies)
    hits = 0
    for r in range(reps):
        q = rng.beta(concentration * p, concentration * (1 - p), size=G)
        x = (rng.random((G, copies)) < q[:, None]).astype(float).ravel()
        ci = score_ci(x, groups=groups, method=method, B=1_000, seed=r)
        hits += ci.low <= 100 * p <= ci.high
    return hits / reps


def test_grouped_coverage_fast() -> None:
    # 30 questions, where the percentile bootstrap fell short (92.7% at p = 0.9); 2,000 draws: s.e. 0.5.
    for p in (0.1, 0.5, 0.9):
        assert 0.93 <= _grouped_coverage(30, p, 2_000, 7) <= 0.97, p
    # 100 questions at p = 0.02: a handful of right rows, the design effect from one question
    # covered 92.2% (10,000 draws) before the two-cluster rule; 4,000 draws: s.e. 0.35.
    assert 0.935 <= _grouped_coverage(100, 0.02, 4_000, 8) <= 0.965


@pytest.mark.slow
@pytest.mark.parametrize("G", [30, 100, 1000])
@pytest.mark.parametrize("p", [0.02, 0.1, 0.5, 0.9])
def test_grouped_coverage_grid(G: int, p: float) -> None:
    # The draws of bench/stats_audit.py (10,000 per cell, 5,000 at 1,000 questions: s.e. 0.2-0.3;
    # at p = 0.02 10x (4x at 1,000): 30 questions sit at 96.3-96.4%, 100 at 93.9%).
    reps = (10_000 if G < 1000 else 5_000) * (1 if p > 0.05 else 4 if G == 1000 else 10)
    assert 0.935 <= _grouped_coverage(G, p, reps, G) <= 0.965


@pytest.mark.slow
@pytest.mark.parametrize("copies, concentration", [(4, 0.5), (4, 10.0), (8, 2.0), (2, 2.0)])
def test_grouped_coverage_other_clustering(copies: int, concentration: float) -> None:
    """README's "other clustering" table at 100 questions (every cell in band) and at 30 questions
    (in band except the measured lattice cells: 2 copies at p = 0.1 / 0.9 over-cover, 8 copies under)."""
    for G in (30, 100):
        for p in (0.1, 0.5, 0.9):
            cov = _grouped_coverage(G, p, 10_000, G, copies=copies, concentration=concentration)
            if G == 30 and copies in (2, 8) and p != 0.5:  # the measured exceptions, within 2 points
                assert 0.925 <= cov <= 0.98, (G, copies, p, cov)
            else:
                assert 0.935 <= cov <= 0.965, (G, copies, concentration, p, cov)


def _partial(shape: str, n: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """Partial-credit unit scores with mean p: the share of a question's 4 (2) copies right with
    difficulty ~ Beta(2p, 2(1-p)), Beta-distributed scores (concentration 2 or 10), or "mixed":
    half the units 0/1, half Beta(2p, 2(1-p))."""
    if shape == "mixed":
        return np.where(rng.random(n) < 0.5, (rng.random(n) < p).astype(float), rng.beta(2 * p, 2 * (1 - p), size=n))
    if shape.startswith("share"):
        return rng.binomial(int(shape[-1]), rng.beta(2 * p, 2 * (1 - p), size=n)) / int(shape[-1])
    c = float(shape[4:])
    return rng.beta(c * p, c * (1 - p), size=n)


def _partial_coverage(shape: str, n: int, p: float, reps: int, seed: int, method: str = "auto") -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for r in range(reps):
        ci = score_ci(_partial(shape, n, p, rng), method=method, B=1_000, seed=r)
        hits += ci.low <= 100 * p <= ci.high
    return hits / reps


def test_partial_credit_coverage_fast() -> None:
    """30 units of the share of 4 copies right: the expanded percentile bootstrap covered 93.3% at
    p = 0.9 (1,500 draws); the default (wilson-effective) 94.4-95.6% (40,000). 3,000 draws: s.e. 0.4."""
    for p in (0.1, 0.5, 0.9):
        cov = _partial_coverage("share4", 30, p, 3_000, 30)
        assert 0.935 <= cov <= 0.965, (p, cov)


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["share4", "share2", "beta10", "beta2"])
@pytest.mark.parametrize("n", [30, 100, 1000])
def test_partial_credit_coverage_grid(shape: str, n: int) -> None:
    for p in (0.1, 0.5, 0.9):
        cov = _partial_coverage(shape, n, p, 10_000 if n < 1000 else 2_500, n)
        if shape == "beta2" and n == 30 and p != 0.5:
            assert 0.92 <= cov <= 0.965, (p, cov)  # README: highly skewed scores at 30 units, 93.0-93.2%
        else:
            assert 0.935 <= cov <= 0.965, (shape, n, p, cov)


# --- paired differences: one rule -------------------------------------------------------------
def test_few_discordant_pairs_use_exact_mcnemar_issue_cases() -> None:
    # The default board starred 0 vs 5 and 0 vs 4 discordant pairs: exact McNemar says no.
    for b_only, p in [(5, 0.0625), (4, 0.125)]:
        pv, low, high, method = mcnemar_test(0, b_only, 300)
        assert method == "mcnemar-exact" and pv == pytest.approx(p)
        assert low < 0 < high
    pv, low, high, method = mcnemar_test(0, 0, 300)
    assert pv == 1.0 and low < 0 < high  # no discordance: still not zero width


def test_exact_p_matches_binomtest_and_score_p_matches_mcnemar_z() -> None:
    assert mcnemar_test(3, 17, 200)[0] == pytest.approx(sps.binomtest(3, 20, 0.5).pvalue, rel=1e-12)
    p, low, high, method = mcnemar_test(40, 20, 300)
    assert method == "mcnemar-score"
    assert p == pytest.approx(2 * sps.norm.sf(20 / math.sqrt(60)), rel=1e-9)
    # Tango's interval is the inversion of the score test: its statistic is +-z at the bounds.
    z = sps.norm.ppf(0.975)
    assert stats._tango_z(40, 20, 300, low) == pytest.approx(z, abs=1e-6)
    assert stats._tango_z(40, 20, 300, high) == pytest.approx(-z, abs=1e-6)


def test_tango_restricted_mle_maximises_the_likelihood() -> None:
    from scipy.optimize import minimize_scalar

    b, c, n, d0 = 30, 10, 300, 0.02
    r = n - b - c
    nll = lambda q: -(b * np.log(q + d0) + c * np.log(q) + r * np.log(1 - 2 * q - d0))  # noqa: E731
    q = minimize_scalar(nll, bounds=(1e-9, (1 - d0) / 2 - 1e-9), method="bounded").x
    assert stats._tango_z(b, c, n, d0) == pytest.approx((b - c - n * d0) / math.sqrt(n * (2 * q + d0 * (1 - d0))), rel=1e-5)


def test_star_p_and_ci_agree_for_every_table() -> None:
    rng = np.random.default_rng(0)
    for _ in range(400):
        n = int(rng.integers(20, 400))
        b = int(rng.integers(0, n // 2))
        c = int(rng.integers(0, n - b))
        p, low, high, _ = mcnemar_test(b, c, n)
        assert (p < 0.05) == (low > 0 or high < 0), (b, c, n, p, low, high)
        assert low <= (b - c) / n <= high


def test_bootstrap_p_and_ci_agree() -> None:
    rng = np.random.default_rng(1)
    ids = list(range(60))
    for shift in np.linspace(0, 0.2, 25):
        a = rng.random(60)
        res = paired_difference(a + shift * rng.random(60), a, ids, ids, B=2_000, seed=int(shift * 1000))
        assert res.method == "bootstrap"
        assert (res.p_value < 0.05) == (res.low > 0 or res.high < 0), res


def test_paired_difference_for_01_scores_is_mcnemar() -> None:
    b = binary(400, 0.5, 9)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:40]] = 1  # a fixes 40 items b got wrong ...
    a[np.flatnonzero(b == 1)[:5]] = 0  # ... and breaks 5
    ids = [str(i) for i in range(400)]
    res = paired_difference(a, b, ids, ids)
    assert res.delta == pytest.approx(100 * 35 / 400) and (res.a_only, res.b_only) == (40, 5)
    assert res.method == "mcnemar-score" and res.significant and res.low > 0
    rev = paired_difference(b, a, ids, ids)
    assert rev.delta == -res.delta and rev.p_value == res.p_value and rev.high == pytest.approx(-res.low)


def test_paired_delta_ci_covers_with_known_truth() -> None:
    """0/1 pairs with P(a only) = 0.09, P(b only) = 0.04: the truth is +5 points."""
    rng = np.random.default_rng(5)
    hits, reps = 0, 1_000
    for n in (60, 300):
        for _ in range(reps // 2):
            b, c, _ = rng.multinomial(n, [0.09, 0.04, 0.87])
            _, low, high, _ = mcnemar_test(int(b), int(c), n)
            hits += low <= 0.05 <= high
    assert 0.93 <= hits / reps <= 0.99


def test_different_item_sets_are_intersected_and_reported() -> None:
    a, b = binary(100, 0.6, 10), binary(100, 0.4, 11)
    ids_a = [f"q{i}" for i in range(100)]
    ids_b = [f"q{i}" for i in range(10, 110)]
    res = paired_difference(a, b, ids_a, ids_b)
    assert (res.n, res.dropped_a, res.dropped_b) == (90, 10, 10)
    assert res.delta == pytest.approx(100 * (a[10:].mean() - b[:90].mean()))
    perm = np.random.default_rng(0).permutation(100)
    assert paired_difference(a[perm], b, [ids_a[i] for i in perm], ids_b) == res


def test_paired_difference_bad_ids() -> None:
    with pytest.raises(HarnessError, match="no item ids"):
        paired_difference([1.0], [0.0], ["x"], ["y"])
    with pytest.raises(HarnessError, match="more than once"):
        paired_difference([1.0, 0.0], [0.0, 1.0], ["x", "x"], ["x", "y"])


# --- corrections and power ----------------------------------------------------------------------
def test_adjust_is_statsmodels_holm_and_bh_with_nans_kept() -> None:
    from statsmodels.stats.multitest import multipletests

    p = [0.01, float("nan"), 0.04, 0.03, 0.2]
    holm = stats.adjust(p, "holm")
    assert math.isnan(holm[1])
    assert [holm[i] for i in (0, 2, 3, 4)] == pytest.approx(multipletests([0.01, 0.04, 0.03, 0.2], method="holm")[1])
    bh = stats.adjust(p, "bh")
    assert [bh[i] for i in (0, 2, 3, 4)] == pytest.approx(sps.false_discovery_control([0.01, 0.04, 0.03, 0.2]))
    assert stats.adjust(p, "none")[2] == 0.04
    with pytest.raises(HarnessError, match="unknown correction"):
        stats.adjust(p, "bonferroni-ish")


def test_resamples_raised_so_holm_can_reject() -> None:
    # 2/B must fall below alpha / m for Holm's first step to be reachable.
    assert stats.resamples_for(54, 1_000) >= 2 * 54 / 0.05
    assert stats.resamples_for(3, 10_000) == 10_000


def test_mde_gives_80_percent_power_in_simulation() -> None:
    """Simulate pairs at the MDE for n = 300 and discordance 0.3; the exact rule should reject ~80%."""
    n, s = 300, 0.3
    delta = stats.mde(s, n) / 100
    assert stats.n_for(100 * delta, s) == pytest.approx(n, abs=1)
    rng = np.random.default_rng(8)
    p10, p01 = (s + delta) / 2, (s - delta) / 2
    rejected = 0
    for _ in range(1_000):
        b, c, _ = rng.multinomial(n, [p10, p01, 1 - s])
        rejected += mcnemar_test(int(b), int(c), n)[0] < 0.05
    assert 0.75 <= rejected / 1_000 <= 0.86
