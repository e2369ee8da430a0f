"""harness.stats.board.leaderboard_frame: multiplicity (family-wise error by simulation), rank intervals
independent of names and order, seeds (variance components), MDE, clusters."""
from __future__ import annotations

import numpy as np
import pytest

from harness.stats import ci as stats
from harness.errors import HarnessError
from harness.stats.board import LEADERBOARD_COLUMNS, leaderboard_frame
from harness.stats.ci import paired_difference, score_ci

TASKS = ("t1", "t2", "t3", "t4", "t5", "t6")


def binary(n: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def _null_board(rng: np.random.Generator, checkpoints: int = 10, n: int = 300, partial: bool = False) -> dict:
    """Equal checkpoints: per item a difficulty, every checkpoint an independent draw from it."""
    ids = [f"q{i}" for i in range(n)]
    board: dict = {f"c{k}": {} for k in range(checkpoints)}
    for task in TASKS:
        difficulty = rng.beta(2, 1.5, size=n)
        for k in range(checkpoints):
            draws = rng.random((4, n)) < difficulty if partial else rng.random(n) < difficulty
            scores = draws.mean(axis=0) if partial else draws.astype(float)
            board[f"c{k}"][task] = dict(zip(ids, scores.tolist()))
    return board


def _any_star(df, alpha: float = 0.05) -> bool:
    return bool((df.p_adjusted < alpha).any())


def _fwer(boards: int, correction: str, seed: int, n: int = 300, partial: bool = False, B: int = 200) -> float:
    rng = np.random.default_rng(seed)
    hits = sum(_any_star(leaderboard_frame(_null_board(rng, n=n, partial=partial), "c0", B=B, correction=correction))
               for _ in range(boards))
    return hits / boards


@pytest.fixture
def no_forced_gc(monkeypatch: pytest.MonkeyPatch) -> None:
    # statsmodels' Holm branch calls gc.collect() on every call (~0.2 s in a big test process).
    import gc

    monkeypatch.setattr(gc, "collect", lambda *args: 0)


def test_family_wise_error_controlled_by_holm_fast(no_forced_gc: None) -> None:
    """10 equal checkpoints x 6 tasks (54 comparisons): with Holm a star on few boards (the target is
    5%; 80 boards allow 2 s.e. of noise), without a correction on most boards."""
    holm = _fwer(80, "holm", 1, n=100)
    none = _fwer(20, "none", 1, n=100)
    assert holm <= 0.05 + 2 * (0.05 * 0.95 / 80) ** 0.5 and none >= 0.5, (holm, none)


@pytest.mark.slow
def test_family_wise_error_full(no_forced_gc: None) -> None:
    holm = _fwer(300, "holm", 2)  # bench/stats_audit.py runs 600 boards: 3.2% [2.0, 4.9]
    assert holm <= 0.05 + 2 * (0.05 * 0.95 / 300) ** 0.5, holm  # within 2 s.e. of the target


@pytest.mark.slow
def test_family_wise_error_bootstrap_path(no_forced_gc: None) -> None:
    """Partial-credit scores go through the paired bootstrap (B raised for the correction)."""
    holm = _fwer(150, "holm", 3, partial=True, B=1_000)
    assert holm <= 0.05 + 2 * (0.05 * 0.95 / 150) ** 0.5, holm


def test_resamples_are_raised_when_the_correction_needs_them() -> None:
    rng = np.random.default_rng(0)
    df = leaderboard_frame(_null_board(rng, checkpoints=4, n=60, partial=True), "c0", B=200)
    m = 3 * len(TASKS)
    assert (df.resamples >= 2 * m / 0.05).all()
    assert df.p_value.dropna().min() > 0  # a finite B never claims p = 0


def test_star_follows_adjusted_p_and_correction_is_named() -> None:
    ids = [f"q{i}" for i in range(400)]
    base = binary(400, 0.5, 1)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:30]] = 1  # 30 vs 0 discordant: clearly better
    slight = base.copy()
    slight[np.flatnonzero(base == 0)[:6]] = 1  # 6 vs 0: exact p 0.031, not after Holm over 4
    board = {"base": {"a": dict(zip(ids, base)), "b": dict(zip(ids, base))},
             "better": {"a": dict(zip(ids, better)), "b": dict(zip(ids, base))},
             "slight": {"a": dict(zip(ids, slight)), "b": dict(zip(ids, base))}}
    df = leaderboard_frame(board, "base", B=500).set_index(["checkpoint", "task"])
    assert df.loc[("slight", "a"), "p_value"] == pytest.approx(2 * 0.5 ** 6)
    assert df.loc[("slight", "a"), "delta_method"] == "mcnemar-exact"
    assert df.loc[("slight", "a"), "p_adjusted"] > 0.05 and df.loc[("better", "a"), "p_adjusted"] < 0.05
    assert (df.loc[("slight", "a"), "a_only"], df.loc[("slight", "a"), "b_only"]) == (6, 0)
    assert set(df.correction.dropna()) - {""} == {"holm"}
    bh = leaderboard_frame(board, "base", B=500, correction="bh").set_index(["checkpoint", "task"])
    assert bh.loc[("slight", "a"), "p_adjusted"] <= df.loc[("slight", "a"), "p_adjusted"]


# --- ranks ------------------------------------------------------------------------------------
def _rank_table(df) -> dict:
    return {(r.checkpoint, r.task): (r.rank, r.rank_low, r.rank_high) for r in df.itertuples()}


def test_rank_intervals_do_not_depend_on_names_or_order() -> None:
    rng = np.random.default_rng(4)
    ids = [f"q{i}" for i in range(150)]
    base = binary(150, 0.55, 2)
    board = {"tiny": {t: dict(zip(ids, base)) for t in ("geoqa", "mmbench")},
             "sft": {t: dict(zip(ids, base)) for t in ("geoqa", "mmbench")}}  # an exact tie with tiny
    for k in range(5):
        x = (rng.random(150) < 0.5 + 0.03 * k).astype(float)
        board[f"m{k}"] = {"geoqa": dict(zip(ids, x)), "mmbench": dict(zip(ids, np.roll(x, k)))}
    board["seeded"] = {t: [dict(zip(ids, binary(150, 0.6, 40 + s))) for s in range(3)] for t in ("geoqa", "mmbench")}
    df = leaderboard_frame(board, "tiny", B=1_000)
    # Rename everything (so no name sorts where it did) and reverse rows, tasks and item order.
    names = {c: f"{'zyxwvutsrq'[i]}-{c}" for i, c in enumerate(board)}
    renamed = {names[c]: {t: (v[::-1] if isinstance(v, list) else dict(reversed(list(v.items()))))
                          for t, v in reversed(list(board[c].items()))}
               for c in reversed(list(board))}
    df2 = leaderboard_frame(renamed, names["tiny"], B=1_000)
    back = {(c, t): v for (c, t), v in _rank_table(df).items()}
    assert {(next(k for k, n in names.items() if n == c), t): v for (c, t), v in _rank_table(df2).items()} == back
    tied = df.set_index(["checkpoint", "task"])
    assert (tied.loc[("tiny", "geoqa"), ["rank", "rank_low", "rank_high"]]
            == tied.loc[("sft", "geoqa"), ["rank", "rank_low", "rank_high"]]).all()


def test_rank_intervals_separate_clear_leaders_and_contain_the_rank() -> None:
    ids = [f"q{i}" for i in range(500)]
    board = {name: {"t": dict(zip(ids, binary(500, p, s)))} for s, (name, p) in
             enumerate([("low", 0.3), ("mid1", 0.6), ("mid2", 0.61), ("top", 0.9)])}
    df = leaderboard_frame(board, "low", B=2_000).set_index("checkpoint")
    assert tuple(df.loc["top", ["rank", "rank_low", "rank_high"]]) == (1, 1, 1)
    assert tuple(df.loc["low", ["rank", "rank_low", "rank_high"]]) == (4, 4, 4)
    assert df.loc["mid1", "rank_low"] == 2 and df.loc["mid1", "rank_high"] == 3
    assert ((df.rank_low <= df["rank"]) & (df["rank"] <= df.rank_high)).all()


# --- seeds --------------------------------------------------------------------------------------
def test_seeded_row_is_the_mean_over_seeds_with_the_seed_range() -> None:
    ids = [f"q{i}" for i in range(300)]
    base = binary(300, 0.6, 1)
    seeds = [binary(300, p, 10 + k) for k, p in enumerate((0.55, 0.65, 0.70))]
    board = {"base": {"t": dict(zip(ids, base))}, "mpo": {"t": [dict(zip(ids, s)) for s in seeds]},
             "one": {"t": dict(zip(ids, seeds[0]))}}
    df = leaderboard_frame(board, "base", B=2_000).set_index("checkpoint")
    mpo = df.loc["mpo"]
    assert mpo.score == pytest.approx(100 * np.mean([s.mean() for s in seeds]))
    assert (mpo.seeds, mpo.seed_min, mpo.seed_max) == (3, 100 * min(s.mean() for s in seeds),
                                                       100 * max(s.mean() for s in seeds))
    assert mpo.ci_method == mpo.delta_method == "seed-components"
    # Every seed enters the delta; seed spread widens the CI beyond the item noise of the seed mean.
    assert mpo.delta == pytest.approx(mpo.score - df.loc["base", "score"])
    assert mpo.delta_ci_low < mpo.delta < mpo.delta_ci_high
    items_only = score_ci(np.mean(seeds, axis=0), B=2_000)
    assert mpo.ci_high - mpo.ci_low > 1.2 * (items_only.high - items_only.low)
    assert np.isnan(df.loc["one", "seed_min"]) and df.loc["one", "ci_method"] == "wilson"


def test_seeded_ci_sees_seed_variance() -> None:
    """Seeds that differ only by a constant shift: all spread is between seeds. The seeded CI must be
    far wider than the items-only CI of the pooled scores."""
    ids = [f"q{i}" for i in range(2000)]
    rng = np.random.default_rng(3)
    difficulty = rng.random(2000)
    runs = [(difficulty < 0.4 + 0.1 * k).astype(float) for k in range(4)]  # 40, 50, 60, 70%
    board = {"base": {"t": dict(zip(ids, runs[1]))}, "s": {"t": [dict(zip(ids, r)) for r in runs]}}
    row = leaderboard_frame(board, "base", B=2_000).set_index("checkpoint").loc["s"]
    pooled = score_ci(np.mean(runs, axis=0), B=2_000)
    assert row.ci_high - row.ci_low > 4 * (pooled.high - pooled.low)


# --- the frame as a whole ---------------------------------------------------------------------
def test_leaderboard_frame_matches_pairwise_functions() -> None:
    ids = [f"q{i}" for i in range(300)]
    base = binary(300, 0.45, 12)
    strong = base.copy()
    strong[np.flatnonzero(base == 0)[:60]] = 1
    board = {
        "base": {"t1": dict(zip(ids, base)), "t2": dict(zip(ids, base))},
        "strong": {"t1": dict(zip(ids, strong)), "t2": dict(zip(ids[:-7], strong[:-7]))},
        "same": {"t1": dict(zip(ids, base))},
    }
    df = leaderboard_frame(board, baseline="base", B=2_000)
    assert tuple(df.columns[: len(LEADERBOARD_COLUMNS)]) == LEADERBOARD_COLUMNS
    rows = {(r.checkpoint, r.task): r for r in df.itertuples()}
    assert np.isnan(rows["base", "t1"].delta) and np.isnan(rows["base", "t1"].p_adjusted)
    ref = paired_difference(strong, base, ids, ids)
    got = rows["strong", "t1"]
    assert (got.delta, got.delta_ci_low, got.delta_ci_high, got.p_value) == (ref.delta, ref.low, ref.high, ref.p_value)
    assert (got.a_only, got.b_only) == (60, 0)
    single = score_ci(base)
    assert (rows["base", "t1"].ci_low, rows["base", "t1"].ci_method) == (single.low, "wilson")
    assert rows["same", "t1"].delta == 0 and rows["same", "t1"].p_value == 1.0
    assert rows["base", "t2"].n == 293 and rows["base", "t2"].n_dropped == 7
    # MDE: one value per task, from the discordance with the baseline.
    s2 = np.median([np.mean((strong - base) ** 2), np.mean((base - base) ** 2)])
    assert rows["base", "t1"].mde == rows["strong", "t1"].mde == pytest.approx(stats.mde(s2, 300))
    assert leaderboard_frame(board, baseline="base", B=2_000).equals(df)


def test_clustered_task_resamples_questions() -> None:
    q = binary(150, 0.6, 2)
    rows = np.repeat(q, 4)
    ids = [f"{g + 1_000_000 * j}" for g in range(150) for j in range(4)]
    clusters = {"mc": {i: str(int(i) % 1_000_000) for i in ids}}
    board = {"a": {"mc": dict(zip(ids, rows))}, "b": {"mc": dict(zip(ids, np.roll(rows, 4)))}}
    grouped = leaderboard_frame(board, "a", B=2_000, clusters=clusters).set_index("checkpoint")
    flat = leaderboard_frame(board, "a", B=2_000).set_index("checkpoint")
    assert grouped.loc["a", "n"] == 150 and grouped.loc["a", "ci_method"] == "wilson-clustered"
    assert grouped.loc["a", "score"] == flat.loc["a", "score"]
    width = lambda r: r.ci_high - r.ci_low  # noqa: E731
    assert width(grouped.loc["a"]) > 1.7 * width(flat.loc["a"])
    assert grouped.loc["b", "delta_method"] == "bootstrap"


def test_ci_choice_applies_where_valid() -> None:
    ids = [f"q{i}" for i in range(100)]
    board = {"a": {"bin": dict(zip(ids, binary(100, 0.5, 1))), "part": dict(zip(ids, np.linspace(0, 1, 100)))}}
    df = leaderboard_frame(board, "a", B=500, ci="jeffreys").set_index("task")
    assert (df.loc["bin", "ci_method"], df.loc["part", "ci_method"]) == ("jeffreys", "bootstrap")


def test_leaderboard_frame_errors() -> None:
    with pytest.raises(HarnessError, match="baseline"):
        leaderboard_frame({"a": {"t": {"q": 1.0}}}, baseline="b")
    with pytest.raises(HarnessError, match="share no unit ids"):
        leaderboard_frame({"a": {"t": {"q": 1.0}}, "b": {"t": {"r": 1.0}}}, baseline="a")
    with pytest.raises(HarnessError, match="unknown CI method"):
        leaderboard_frame({"a": {"t": {"q": 1.0}}}, baseline="a", ci="bca")
