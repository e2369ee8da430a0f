"""Primary endpoints (harness/stats/board.py) and seeded rows (harness/stats/seeds.py), checked by
simulation with known truth; bench/stats_audit.py prints the full tables the README quotes."""
from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.stats.board import EXPLORATORY, NO_PRIMARY, PRIMARY, leaderboard_frame
from harness.stats.seeds import half_width, seeded_delta, seeded_score

ROWS, TASKS, DISCORDANT, EFFECT = 10, ("t1", "t2", "t3", "t4", "t5"), 0.35, 0.10


# --- primary endpoints --------------------------------------------------------------------------
def _design_outcomes(rng: np.random.Generator, boards: int, effects: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """(boards, tasks, n) baseline and (boards, rows, tasks, n) row outcomes: 10 rows x 5 tasks,
    baseline 50% right, each pair discordant with probability 0.35; the first `effects` rows are 10
    points better on their primary task (row k's is task k % 5), every other comparison is null."""
    base = rng.random((boards, len(TASKS), n)) < 0.5
    delta = np.zeros((ROWS, len(TASKS)))
    for k in range(effects):
        delta[k, k % len(TASKS)] = EFFECT
    # P(a only) = (0.35 + delta) / 2, P(b only) = (0.35 - delta) / 2: half of the items each way
    gain, loss = (DISCORDANT + delta)[None, :, :, None], (DISCORDANT - delta)[None, :, :, None]
    u = rng.random((boards, ROWS, len(TASKS), n))
    return base, np.where(base[:, None], u >= loss, u < gain)


def _mcnemar_p(a_only: np.ndarray, b_only: np.ndarray) -> np.ndarray:
    """The frame's McNemar p (harness/stats/ci.py: exact below 25 discordant pairs, else the score
    test), vectorised; test_design_replica_matches_the_frame checks it against leaderboard_frame."""
    from scipy.stats import binom, chi2

    d = a_only + b_only
    score = chi2.sf((a_only - b_only) ** 2 / np.maximum(d, 1), 1)
    exact = np.minimum(1.0, 2 * binom.cdf(np.minimum(a_only, b_only), d, 0.5))
    return np.where(d == 0, 1.0, np.where(d < 25, exact, score))


def _design(boards: int, effects: int, seed: int, n: int = 300) -> dict[str, float]:
    """Family-wise error (a star on a null comparison) and power (the share of true effects starred)
    with Holm over one primary per row and Holm over every comparison (harness.stats.ci.adjust)."""
    from harness.stats.ci import adjust

    base, rows = _design_outcomes(np.random.default_rng(seed), boards, effects, n)
    p = _mcnemar_p((rows & ~base[:, None]).sum(-1), (~rows & base[:, None]).sum(-1))  # (boards, rows, tasks)
    primary = np.zeros((ROWS, len(TASKS)), bool)
    primary[np.arange(ROWS), np.arange(ROWS) % len(TASKS)] = True
    true = np.zeros_like(primary)
    true[:effects] = primary[:effects]
    out = {}
    for design, family in (("primary", primary), ("all", np.ones_like(primary))):
        starred = np.zeros(p.shape, bool)
        for b in range(boards):
            starred[b][family] = np.asarray(adjust(p[b][family].tolist(), "holm")) < 0.05
        out[f"fwer_{design}"] = float((starred & ~true).any(axis=(1, 2)).mean())
        out[f"power_{design}"] = float((starred & true).sum(axis=(1, 2)).mean() / effects) if effects else 0.0
    return out


def _frame_of(base: np.ndarray, rows: np.ndarray) -> dict:
    ids = [f"q{i}" for i in range(base.shape[-1])]
    board = {"base": {t: dict(zip(ids, base[j].astype(float))) for j, t in enumerate(TASKS)}}
    for k in range(ROWS):
        board[f"r{k}"] = {t: dict(zip(ids, rows[k, j].astype(float))) for j, t in enumerate(TASKS)}
    return board


def test_design_replica_matches_the_frame(no_forced_gc: None) -> None:
    """The vectorised design above gives the frame's p-values and stars, on a board with effects."""
    from harness.stats.ci import adjust

    base, rows = _design_outcomes(np.random.default_rng(9), 1, 4, n=120)
    primary = {f"r{k}": TASKS[k % len(TASKS)] for k in range(ROWS)}
    df = leaderboard_frame(_frame_of(base[0], rows[0]), "base", B=100, primary=primary)
    df = df.set_index(["checkpoint", "task"])
    p = _mcnemar_p((rows[0] & ~base[0][None]).sum(-1), (~rows[0] & base[0][None]).sum(-1))
    got = np.array([[df.loc[(f"r{k}", t), "p_value"] for t in TASKS] for k in range(ROWS)])
    assert np.allclose(got, p, rtol=1e-9, atol=0)
    family = [p[k, k % len(TASKS)] for k in range(ROWS)]
    assert np.allclose([df.loc[(f"r{k}", primary[f"r{k}"]), "p_adjusted"] for k in range(ROWS)], adjust(family, "holm"))


@pytest.fixture
def no_forced_gc(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc  # statsmodels' Holm branch calls gc.collect() on every call

    monkeypatch.setattr(gc, "collect", lambda *args: 0)


def test_primary_family_holds_fwer_and_stars_more_true_effects(no_forced_gc: None) -> None:
    null = _design(600, 0, seed=1)
    assert null["fwer_primary"] <= 0.05 + 2 * (0.05 * 0.95 / 600) ** 0.5, null
    alt = _design(300, 10, seed=2)
    # Known truth: 10 effects of +10 points; the primary family (10 comparisons) stars clearly more
    # of them than Holm over all 50 (full table: bench/stats_audit.py --only primary).
    assert alt["power_primary"] > alt["power_all"] + 0.1, alt
    assert alt["fwer_primary"] == 0.0  # exploratory cells are never starred


def _two_task_board() -> dict:
    rng = np.random.default_rng(3)
    ids = [f"q{i}" for i in range(300)]
    base = (rng.random(300) < 0.5).astype(float)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:45]] = 1  # +15 points, p < 1e-9 anywhere
    return {"base": {t: dict(zip(ids, base)) for t in ("a", "b")},
            "x": {t: dict(zip(ids, better)) for t in ("a", "b")},
            "y": {t: dict(zip(ids, better)) for t in ("a", "b")},
            "z": {t: dict(zip(ids, better)) for t in ("a", "b")}}


def test_primary_family_is_the_declared_targets_and_the_rest_is_exploratory() -> None:
    board = _two_task_board()
    plain = leaderboard_frame(board, "base", B=200)
    same = leaderboard_frame(board, "base", B=200, primary={})
    assert plain.equals(same)  # no declaration: today's family, every comparison in it
    assert set(plain.endpoint[plain.delta.notna()]) == {PRIMARY} and (plain.family_size.dropna() == 6).all()
    df = leaderboard_frame(board, "base", B=200, primary={"x": "a", "y": NO_PRIMARY}).set_index(["checkpoint", "task"])
    # x: its target is primary, its other task exploratory; y: all exploratory; z (undeclared): all primary
    assert [df.loc[(c, t), "endpoint"] for c, t in (("x", "a"), ("x", "b"), ("y", "a"), ("y", "b"), ("z", "a"), ("z", "b"))] \
        == [PRIMARY, EXPLORATORY, EXPLORATORY, EXPLORATORY, PRIMARY, PRIMARY]
    assert df.loc[("base", "a"), "endpoint"] == "" and np.isnan(df.loc[("base", "a"), "family_size"])
    family = df[df.endpoint == PRIMARY]
    assert (family.family_size == 3).all() and (family.p_adjusted < 0.05).all()
    explored = df[df.endpoint == EXPLORATORY]
    # exploratory: the same unadjusted p and CI as alone, no adjusted p (so never a star)
    assert explored.p_adjusted.isna().all() and (explored.p_value < 1e-6).all()
    assert (explored.correction == "").all() and (family.correction == "holm").all()
    assert df.loc[("y", "a"), "delta_ci_low"] == df.loc[("x", "a"), "delta_ci_low"]


def test_family_mde_is_the_mde_at_alpha_over_the_family() -> None:
    from harness.stats.ci import mde

    board = _two_task_board()
    df = leaderboard_frame(board, "base", B=200, primary={"x": "a", "y": "a", "z": "b"})
    one, fam = df.mde.iloc[0], df.mde_family.iloc[0]
    s2 = (one / mde(1.0, 300)) ** 2  # mde scales with sqrt(s2)
    assert fam == pytest.approx(mde(s2, 300, 0.05 / 3)) and fam > one
    none = leaderboard_frame(board, "base", B=200, correction="none", primary={"x": "a"})
    assert none.mde_family.iloc[0] == pytest.approx(none.mde.iloc[0])


def test_primary_naming_a_task_not_on_the_board_is_refused() -> None:
    with pytest.raises(HarnessError, match="primary task 'geoqa' is not on the board"):
        leaderboard_frame(_two_task_board(), "base", B=200, primary={"x": "geoqa"})


# --- seeded rows ------------------------------------------------------------------------------
def _seed_draws(rng: np.random.Generator, draws: int, seeds: int, n: int, sd: float,
                concentration: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(draws, seeds, n) seeded-row outcomes and (draws, 1, n) baseline outcomes. Per item a
    difficulty p_i ~ Beta(c/2, c/2) shared by every model; each seed shifts every item's chance by
    u_s ~ N(0, sd) (clipped to [0, 1]). The truth is 50% for both, and a delta of 0: the clipped
    shift is odd about 50% and the difficulties symmetric."""
    p = rng.beta(concentration / 2, concentration / 2, size=(draws, 1, n))
    u = rng.normal(0.0, sd, size=(draws, seeds, 1))
    row = (rng.random((draws, seeds, n)) < np.clip(p + u, 0, 1)).astype(float)
    base = (rng.random((draws, 1, n)) < p).astype(float)
    return row, base


def _seed_audit(draws: int, seeds: int, n: int, sd: float, seed: int, chunk: int = 1000,
                concentration: float = 2.0) -> tuple[float, float]:
    """(coverage of the row's 95% CI, type-I error of its delta vs the baseline) over `draws`, with
    the board's arithmetic (seeds.half_width) vectorised over draws; difficulties Beta(c/2, c/2)."""
    rng = np.random.default_rng([seed, seeds, n, round(1000 * sd)])
    covered = rejected = 0
    for start in range(0, draws, chunk):
        row, base = _seed_draws(rng, min(chunk, draws - start), seeds, n, sd, concentration)
        m = row.mean(axis=1)
        covered += int((np.abs(m.mean(-1) - 0.5) <= half_width([row], m, 0.95)).sum())
        d = m - base[:, 0]
        rejected += int((np.abs(d.mean(-1)) > half_width([row, base], d, 0.95)).sum())
    return covered / draws, rejected / draws


@pytest.mark.parametrize("sd", [0.0, 0.06])
def test_seeded_intervals_cover_and_hold_type_one_error_fast(sd: float) -> None:
    """3 seeds, n = 300, no seed variance and seed sd 6 points (the cells nearest the band's edges;
    2,000 draws, s.e. 0.5): in the 93.5-96.5 band within noise, type-I error at most 5% + 2 s.e."""
    cover, type_one = _seed_audit(2_000, 3, 300, sd, seed=1)
    assert 0.925 <= cover <= 0.975 and type_one <= 0.05 + 2 * (0.05 * 0.95 / 2_000) ** 0.5, (cover, type_one)


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("n", [300, 1000])
@pytest.mark.parametrize("sd", [0.0, 0.03, 0.06])
def test_seeded_intervals_grid(seeds: int, n: int, sd: float) -> None:
    draws = 8_000 if n == 300 else 4_000
    cover, type_one = _seed_audit(draws, seeds, n, sd, seed=2)
    se = (0.05 * 0.95 / draws) ** 0.5
    assert 0.935 - 2 * se <= cover <= 0.965 + 2 * se and type_one <= 0.05 + 2 * se, (cover, type_one)


def test_seed_components_against_the_old_bootstrap_failures() -> None:
    """No seed variance: when the seed means agree no more than item noise lets them (most draws)
    the interval is exactly the items-only t interval of the seed-mean scores (the seeds-then-items
    bootstrap was wider: 98.7% coverage); seeds that differ by a constant: as wide as t_{S-1} on the
    seed means, what the data say."""
    from scipy.stats import t

    rng = np.random.default_rng(4)
    row, _ = _seed_draws(rng, 200, 3, 1000, 0.0)
    m = row.mean(axis=1)
    items = t.ppf(0.975, 999) * m.std(axis=-1, ddof=1) / 1000 ** 0.5
    ratio = half_width([row], m, 0.95) / items
    assert np.median(ratio) == pytest.approx(1.0) and (ratio >= 1 - 1e-12).all()
    difficulty = rng.random(2000)
    shifted = np.array([(difficulty < 0.4 + 0.1 * k).astype(float) for k in range(4)])  # 40, 50, 60, 70%
    _, low, high = seeded_score(shifted, 0.95)
    seed_means = shifted.mean(axis=1)
    exact = t.ppf(0.975, 3) * seed_means.std(ddof=1) / 2
    assert (high - low) / 2 == pytest.approx(exact, rel=0.05)


def test_seeds_are_pooled_below_paulls_threshold_and_kept_apart_above() -> None:
    """Below twice the median of F(S-1, (S-1)(n-1)) the interval is the units' t interval of the seed
    means; above, Banerjee's: t_{S-1} on the seed means' whole variance, t_{n-1} on the units' rest."""
    from scipy.stats import f, t

    from harness.stats.seeds import pooling_threshold

    assert pooling_threshold(3, 300) == pytest.approx(2 * f.median(2, 598))
    rng = np.random.default_rng(12)
    row, _ = _seed_draws(rng, 400, 3, 200, 0.01)
    seen = set()
    for x in row:  # one draw at a time, with a two-way ANOVA written out here
        S, n = x.shape
        seed_means, unit_means = x.mean(axis=1), x.mean(axis=0)
        ms_seed = n * seed_means.var(ddof=1)
        resid = x - seed_means[:, None] - unit_means[None, :] + x.mean()
        ms_res = (resid ** 2).sum() / ((S - 1) * (n - 1))
        vu = unit_means.var(ddof=1) / n
        t_units, t_seeds = t.ppf(0.975, n - 1), t.ppf(0.975, S - 1)
        apart = ms_seed / ms_res > pooling_threshold(S, n)
        seen.add(bool(apart))
        want = (t_seeds ** 2 * ms_seed / (n * S) + t_units ** 2 * (vu - ms_res / (n * S))) ** 0.5 if apart else t_units * vu ** 0.5
        assert half_width([x], unit_means, 0.95) == pytest.approx(want, rel=1e-9)
    assert seen == {True, False}


def test_seeded_delta_p_and_interval_agree() -> None:
    rng = np.random.default_rng(6)
    for k in range(20):
        row, base = _seed_draws(rng, 1, 2 + k % 4, 200, 0.03 * (k % 3))
        row[0, :, : k * 3] = 1.0  # a range of effects
        delta, low, high, p = seeded_delta(row[0], base[0], 0.95)
        assert low < delta < high and (p < 0.05) == (low > 0 or high < 0)
        _, low_p, high_p, _ = seeded_delta(row[0], base[0], 1 - p)
        assert min(abs(low_p), abs(high_p)) == pytest.approx(0, abs=1e-9)


def test_board_uses_seed_components_for_seeded_rows_and_clusters() -> None:
    rng = np.random.default_rng(8)
    row, base = _seed_draws(rng, 1, 3, 240, 0.04)
    ids = [f"{g + 1_000_000 * j}" for g in range(60) for j in range(4)]  # 60 questions x 4 copies
    board = {"base": {"t": dict(zip(ids, base[0, 0]))}, "s": {"t": [dict(zip(ids, r)) for r in row[0]]}}
    flat = leaderboard_frame(board, "base", B=200).set_index("checkpoint").loc["s"]
    _, low, high = seeded_score(row[0], 0.95)
    assert (flat.ci_method, flat.delta_method) == ("seed-components", "seed-components")
    assert (flat.ci_low, flat.ci_high) == pytest.approx((100 * low, 100 * high))
    delta, dlow, dhigh, p = seeded_delta(row[0], base[0], 0.95)
    assert (flat.delta, flat.delta_ci_low, flat.delta_ci_high, flat.p_value) == pytest.approx(
        (100 * delta, 100 * dlow, 100 * dhigh, p))
    clusters = {"t": {i: str(int(i) % 1_000_000) for i in ids}}
    grouped = leaderboard_frame(board, "base", B=200, clusters=clusters).set_index("checkpoint").loc["s"]
    assert grouped.n == 60 and grouped.score == pytest.approx(flat.score)
    assert grouped.ci_high - grouped.ci_low != pytest.approx(flat.ci_high - flat.ci_low)


# --- the spec key ---------------------------------------------------------------------------------
def test_spec_rows_declare_primary_and_the_board_follows(tmp_path, random_tiny) -> None:
    import csv

    from harness.report.leaderboard import load_spec, run_leaderboard

    spec_path = tmp_path / "lb.yaml"
    text = f"""
name: small
baseline: base
checkpoints:
  - {{name: base, path: {random_tiny}, primary: mmbench}}
  - {{name: same, path: {random_tiny}, primary: geoqa}}
  - {{name: other, path: {random_tiny}, primary: none}}
blind: [base]
tasks: [geoqa, mmbench]
output_dir: {tmp_path / 'runs'}
limit: 6
bootstrap: 200
"""
    spec_path.write_text(text)
    spec = load_spec(spec_path)
    assert [c.primary for c in spec.checkpoints] == ["mmbench", "geoqa", "none"]
    run_leaderboard(spec)
    with (tmp_path / "small" / "leaderboard.csv").open(newline="") as f:
        rows = {(r["checkpoint"], r["task"]): r for r in csv.DictReader(f)}
    assert [rows[("same", t)]["endpoint"] for t in ("geoqa", "mmbench")] == [PRIMARY, EXPLORATORY]
    assert rows[("same", "geoqa")]["family_size"] == "2" and rows[("other", "geoqa")]["endpoint"] == EXPLORATORY
    # the baseline's declaration is its blind row's
    assert [rows[("base+blind", t)]["endpoint"] for t in ("geoqa", "mmbench")] == [EXPLORATORY, PRIMARY]
    assert "exploratory" in (tmp_path / "small" / "leaderboard.md").read_text(encoding="utf-8")
    # A changed declaration is a changed board: the render cache must not serve the old one.
    spec_path.write_text(text.replace("primary: none", "primary: mmbench"))
    run_leaderboard(load_spec(spec_path))
    with (tmp_path / "small" / "leaderboard.csv").open(newline="") as f:
        rows = {(r["checkpoint"], r["task"]): r for r in csv.DictReader(f)}
    assert rows[("other", "mmbench")]["endpoint"] == PRIMARY and rows[("other", "mmbench")]["family_size"] == "3"
    spec_path.write_text(text.replace("primary: none", "primary: [geoqa]"))
    with pytest.raises(HarnessError, match="primary must be a task name or none"):
        load_spec(spec_path)
