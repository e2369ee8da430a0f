"""Simulation audit of the statistics with known truth: `python bench/stats_audit.py [--quick] [--only T]`.

Prints Markdown tables: coverage of the default score CI (Wilson for 0/1 items) exactly at p and
over a neighbourhood of p; coverage of the grouped interval (wilson-clustered; 4 circular copies
per question, and other copy counts and correlations); coverage of the partial-credit interval
(wilson-effective and the expanded bootstrap) over score shapes; coverage of the paired-delta CI; family-wise error of the board's stars for 10 equal checkpoints x 6 tasks
(Holm, BH, none; 0/1 items and partial-credit items); primary endpoints (family-wise error and
power against Holm over everything, 10 rows x 5 tasks); seeded rows (coverage and the delta's
type-I error of the seed-components interval; the cells nearest the band's edges with more draws
and other item difficulties) and the seeds a row needs. Seeded: the same numbers
every run.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_stats import _coverage, _exact_coverage, _grouped_coverage, _neighbourhood, _partial_coverage  # noqa: E402
from test_stats_board import _fwer  # noqa: E402
from test_stats_endpoints import _design, _seed_audit  # noqa: E402

from harness.stats.ci import mcnemar_test, score_ci  # noqa: E402

NS, PS = (30, 100, 1000), (0.02, 0.1, 0.5, 0.9)


def wilson_table(draws: int) -> None:
    rng = np.random.default_rng(16)
    print(f"\nDefault CI (Wilson) coverage, % — exact at p / simulated over p' within 20% of p ({draws:,} draws)\n")
    print("| n | " + " | ".join(f"p={p}" for p in PS) + " |\n|---|" + "---|" * len(PS))
    for n in NS:
        cells = [f"{100 * _exact_coverage(n, p):.1f} / {100 * _coverage(n, _neighbourhood(p, draws, rng), rng):.1f}"
                 for p in PS]
        print(f"| {n} | " + " | ".join(cells) + " |")


def grouped_table(reps: int) -> None:
    print(f"\nGrouped 0/1 rows (4 copies per question) coverage of the default (wilson-clustered), %: {reps:,} "
          "draws per cell, half at 1,000 questions; at p = 0.02 (a few right rows, next to the band's edges) 10x, 4x at 1,000\n")
    print("| questions | " + " | ".join(f"p={p}" for p in PS) + " |\n|---|" + "---|" * len(PS))
    for G in NS:
        r = reps if G < 1000 else reps // 2
        print(f"| {G} | " + " | ".join(f"{100 * _grouped_coverage(G, p, r * (1 if p > 0.05 else 4 if G == 1000 else 10), G):.{1 if p > 0.05 else 2}f}"
                                       for p in PS) + " |", flush=True)
    print(f"\nwilson-clustered at other clustering ({reps:,} draws per cell)\n")
    print("| questions | copies | intra-question correlation | " + " / ".join(f"p={p}" for p in PS)
          + " |\n|---|---|---|---|")
    for G in (30, 100):
        for copies, conc in ((4, 0.5), (4, 10.0), (2, 2.0), (8, 2.0)):
            cov = " / ".join(f"{100 * _grouped_coverage(G, p, reps, G, copies=copies, concentration=conc):.1f}" for p in PS)
            print(f"| {G} | {copies} | {1 / (1 + conc):.2f} | {cov} |")


def partial_table(reps: int) -> None:
    """Partial-credit units: the default (wilson-effective) / the expanded percentile bootstrap."""
    boot = reps // 10
    print(f"\nPartial-credit units, coverage %: default (wilson-effective, {reps:,} draws per cell) / expanded "
          f"percentile bootstrap (B=1000, {boot:,} draws); a quarter of the draws at 1,000 units\n")
    ps = (0.1, 0.5, 0.9)
    print("| scores | units | " + " | ".join(f"p={p}" for p in ps) + " |\n|---|---|" + "---|" * len(ps))
    for shape in ("share4", "share2", "beta2", "beta10", "mixed"):
        for n in NS:
            r, b = (reps, boot) if n < 1000 else (reps // 4, boot // 4)
            cells = [f"{100 * _partial_coverage(shape, n, p, r, n):.1f} / "
                     f"{100 * _partial_coverage(shape, n, p, b, n, 'bootstrap'):.1f}" for p in ps]
            print(f"| {shape} | {n} | " + " | ".join(cells) + " |", flush=True)


def delta_table(reps: int) -> None:
    print(f"\nPaired delta CI (0/1 items) coverage, % ({reps} draws per cell)\n")
    cases = [(0.09, 0.04), (0.03, 0.01), (0.2, 0.1), (0.05, 0.05)]
    print("| n | " + " | ".join(f"P(a only)={a}, P(b only)={b}" for a, b in cases) + " |\n|---|" + "---|" * len(cases))
    rng = np.random.default_rng(5)
    for n in NS:
        cells = []
        for a, b in cases:
            hits = 0
            for _ in range(reps):
                x, y, _ = rng.multinomial(n, [a, b, 1 - a - b])
                _, low, high, _ = mcnemar_test(int(x), int(y), n)
                hits += low <= a - b <= high
            cells.append(f"{100 * hits / reps:.1f}")
        print(f"| {n} | " + " | ".join(cells) + " |")


def fwer_table(boards: int) -> None:
    gc.collect = lambda *a: 0  # statsmodels' Holm calls it on every call
    print(f"\nFamily-wise error: 10 equal checkpoints x 6 tasks, 54 comparisons, n = 300 (boards with any star)\n")
    print("| items | correction | boards | FWER % [95% CI] |\n|---|---|---|---|")
    for partial, corrections in ((False, ("holm", "bh", "none")), (True, ("holm",))):
        for correction in corrections:
            # Partial credit: more boards, its figure sits nearer the target (150 boards gave 6.7% [3.7, 11.8]).
            b = boards * 3 // 2 if partial else boards if correction == "holm" else boards // 3
            t0 = time.time()
            f = _fwer(b, correction, 5 if partial else 2, partial=partial, B=1_000)
            ci = sps.binomtest(round(f * b), b).proportion_ci(method="wilson")
            print(f"| {'partial credit (bootstrap)' if partial else '0/1 (McNemar)'} | {correction} | {b} | "
                  f"{100 * f:.1f} [{100 * ci.low:.1f}, {100 * ci.high:.1f}] |  <!-- {time.time() - t0:.0f}s -->")


def primary_table(boards: int) -> None:
    gc.collect = lambda *a: 0  # statsmodels' Holm calls it on every call
    print(f"\nPrimary endpoints: 10 rows x 5 tasks, n = 300, baseline 50%, 35% discordance, one primary per row; "
          f"k rows 10 points better on their primary, every other comparison null ({boards:,} boards per line)\n")
    print("| rows with a +10 effect | FWER %: Holm over the 10 primaries / over all 50 | "
          "power %: primaries / all 50 |\n|---|---|---|")
    for k in (0, 1, 3, 5, 10):
        r = _design(boards, k, seed=100 + k)
        power = f"{100 * r['power_primary']:.1f} / {100 * r['power_all']:.1f}" if k else "-"
        print(f"| {k} | {100 * r['fwer_primary']:.1f} / {100 * r['fwer_all']:.1f} | {power} |", flush=True)


def seeds_table(draws: int) -> None:
    print(f"\nSeeded rows (seed-components): coverage of the row's 95% CI / type-I error of its delta, % "
          f"({draws:,} draws per cell, half at n = 1000; truth 50%, delta 0)\n")
    sds = (0.0, 0.03, 0.06)
    print("| seeds | n | " + " | ".join(f"seed sd {round(100 * sd)}" for sd in sds) + " |\n|---|---|" + "---|" * len(sds))
    for seeds in (3, 5):
        for n in (300, 1000):
            cells = [_seed_audit(draws if n == 300 else draws // 2, seeds, n, sd, seed=7) for sd in sds]
            print(f"| {seeds} | {n} | " + " | ".join(f"{100 * c:.1f} / {100 * t:.1f}" for c, t in cells) + " |", flush=True)


def seeds_edges(draws: int) -> None:
    """The cells nearest the band's edges with more draws on another stream, and item difficulties
    other than Beta(1, 1): concentrated near 50% (Beta(4, 4)) and U-shaped (Beta(0.25, 0.25))."""
    print(f"\nSeeded rows near the edges: coverage / type-I error, % ({draws:,} draws, half at n = 1000; stream 31)\n")
    print("| seeds | n | seed sd | difficulty | coverage / type-I |\n|---|---|---|---|---|")
    cells = [(3, 300, 0.0, 2.0), (3, 1000, 0.03, 2.0), (3, 1000, 0.06, 2.0)]
    cells += [(s, 300, sd, c) for c in (8.0, 0.5) for s, sd in ((3, 0.0), (3, 0.03), (3, 0.06), (5, 0.0), (5, 0.06))]
    for seeds, n, sd, conc in cells:
        share = draws if conc == 2.0 else draws // 5
        c, t = _seed_audit(share if n == 300 else share // 2, seeds, n, sd, seed=31, concentration=conc)
        print(f"| {seeds} | {n} | {round(100 * sd)} | Beta({conc / 2:g}, {conc / 2:g}) | {100 * c:.1f} / {100 * t:.1f} |",
              flush=True)


def seeds_needed() -> None:
    """Expected delta MDE (80% power) of a seeded row: t_{S-1} on the seed part, z on the items."""
    from scipy.stats import norm, t

    print("\nExpected MDE of a seeded row's delta, points (n = 300, 35% discordance; 80% power, two-sided 5%): "
          "sqrt(q_S^2 sd^2 / S + z^2 s2 / n), q_S = t_{S-1,0.975} + t_{S-1,0.8}\n")
    S_list = (1, 2, 3, 5, 10)
    print("| seed sd (points) | " + " | ".join(f"{S} seed{'s' if S > 1 else ''}" for S in S_list) + " |\n|---|" + "---|" * len(S_list))
    z = norm.ppf(0.975) + norm.ppf(0.8)
    item = z * (0.35 / 300) ** 0.5 * 100
    for sd in (0, 1, 2, 3, 4, 6):
        cells = []
        for S in S_list:
            if S == 1:
                cells.append(f"{item:.1f}" if sd == 0 else "-")
                continue
            q = t.ppf(0.975, S - 1) + t.ppf(0.8, S - 1)
            cells.append(f"{(q ** 2 * sd ** 2 / S + item ** 2) ** 0.5:.1f}")
        print(f"| {sd} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer draws (a few minutes)")
    parser.add_argument("--only", choices=("wilson", "grouped", "partial", "delta", "fwer", "primary", "seeds", "seeds-edges"),
                        help="one table")
    args = parser.parse_args()
    q = args.quick
    tables = {"wilson": lambda: wilson_table(6_000 if q else 60_000), "grouped": lambda: grouped_table(2_000 if q else 10_000),
              "partial": lambda: partial_table(1_000 if q else 10_000), "delta": lambda: delta_table(1_000 if q else 4_000),
              "fwer": lambda: fwer_table(120 if q else 600), "primary": lambda: primary_table(1_000 if q else 10_000),
              "seeds": lambda: (seeds_table(2_000 if q else 20_000), seeds_needed()),
              "seeds-edges": lambda: seeds_edges(10_000 if q else 100_000)}
    for name, table in tables.items():
        if args.only in (None, name):
            table()


if __name__ == "__main__":
    main()
