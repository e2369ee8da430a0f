"""The gates a base must pass before any recipe is tuned on it (issue 26), on the held-out set.

    make heldout && .venv/bin/python bench/base_gates.py --ckpt tiny

Everything runs through the `harness` commands a user has, on `data/heldout` (`make heldout`: the
test layout, generator seed 77, ids disjoint from the test ids; never a test split):
  greedy    `harness eval` on every bundled task; OCR must be above 15%
  sampling  `harness compare` on geoqa: pass@4 well above pass@1 (room for the sampling treatments),
            self-select@3 replies that parse (>= 95%) and score at least greedy (majority@1 here)
  judging   `harness critic agreement` on the held-out critic questions' gold verdicts: > 65%
Writes bench/results/base_gates.json (the figures and which gate held), and the geoqa figures split
into the cells pretraining covers and the held-out outer angles (`cells`): a model that only copies
a candidate cannot parse where none of its candidates parses (`copy_ceiling`), and on the outer
angles a base that never saw them writes values among no choice.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TASKS = "geoqa,aokvqa_mc,aokvqa_da,mmbench,ocrbench"


def harness(*args: str) -> None:
    cmd = [str(Path(sys.executable).with_name("harness")), *args]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def curve(out: Path) -> dict[tuple[str, int], float]:
    import csv

    rows = csv.DictReader((out / "curve.csv").open(encoding="utf-8"))
    return {(r["method"], int(r["n"])): float(r["score"]) for r in rows}


def parse_rate(out: Path) -> float:
    """Share of self-select replies that name a candidate (the selection run's `extracted`)."""
    rows = [json.loads(line) for p in (out / "self_select").rglob("samples.jsonl") for line in p.open(encoding="utf-8")]
    return 100.0 * sum(r.get("extracted") is not None for r in rows) / max(1, len(rows))


def geoqa_cells(data_dir: Path, run: Path, out: Path) -> dict[str, dict[str, float]]:
    """geoqa per cell ("pretrained": x in PRETRAIN_X_VALUES, "held_out": the outer angles): greedy,
    the compare curve's methods (per_item.csv), the self-select parse rate, and the share of n = 3
    subsets with at least one parsed candidate, the most a reply copied from a candidate can parse."""
    import csv
    from collections import defaultdict
    from itertools import combinations

    from tasks.synth.geoqa import PRETRAIN_X_VALUES

    meta = [json.loads(line) for line in (data_dir / "geoqa" / "test_meta.jsonl").open(encoding="utf-8")]
    cell = {str(m["question_id"]): "pretrained" if m["x"] in PRETRAIN_X_VALUES else "held_out" for m in meta}
    sums: dict[tuple[str, str], list[float]] = defaultdict(list)
    for line in (run / "geoqa" / "samples.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        sums[(cell[str(r["id"])], "greedy")].append(float(r["score"]))
    for r in csv.DictReader((out / "per_item.csv").open(encoding="utf-8")):
        if r["n"] in ("1", "3", "4"):
            sums[(cell[r["id"]], f"{r['method']}@{r['n']}")].append(float(r["score"]))
    for line in (out / "self_select" / "samples.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        sums[(cell[str(r["group"])], "select_parse_rate")].append(float(r.get("extracted") is not None))
    parsed: dict[str, list[bool]] = defaultdict(list)
    for line in (out / "samples.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        parsed[str(r["id"])].append(r.get("extracted") is not None)
    for item, flags in parsed.items():
        subsets = list(combinations(flags, 3))
        sums[(cell[item], "copy_ceiling")].append(sum(map(any, subsets)) / max(1, len(subsets)))
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for (name, figure), xs in sorted(sums.items()):
        table[name][figure] = round(100.0 * sum(xs) / len(xs), 1)
    for name in table:
        table[name]["items"] = len(sums[(name, "greedy")])
    return dict(table)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="tiny")
    p.add_argument("--data-dir", default="data/heldout")
    p.add_argument("--limit", type=int, default=None, help="items per task (quick looks)")
    p.add_argument("--output-dir", default="runs-gates")
    p.add_argument("--json", default="bench/results/base_gates.json")
    args = p.parse_args(argv)
    if not Path(args.data_dir).is_dir():
        raise SystemExit(f"error: {args.data_dir} not found; build it with `make heldout`")
    common = ["--data-dir", args.data_dir, "--output-dir", args.output_dir] + (["--limit", str(args.limit)] if args.limit else [])
    harness("eval", "--ckpt", args.ckpt, "--tasks", TASKS, *common)
    name = Path(args.ckpt).name
    greedy = {t: json.loads((Path(args.output_dir) / name / t / "summary.json").read_text())["score"]
              for t in TASKS.split(",")}
    out = Path(args.output_dir) / "compare" / name
    harness("compare", "majority-vote", "self-select", "self-select-likelihood", "--task", "geoqa", "--ckpt", args.ckpt, "--n", "1,3,4",
            "--temperature", "1.0", "--out", str(out), *common)
    c = curve(out)
    judge = Path(args.output_dir) / "agreement"
    harness("critic", "agreement", "--judge", args.ckpt, "--out", str(judge), "--data-dir", args.data_dir)
    agreement = json.loads((judge / "judged.json").read_text())
    figures = {"greedy": greedy, "pass@1": c[("pass@n", 1)], "pass@4": c[("pass@n", 4)],
               "majority@3": c[("majority-vote", 3)], "self-select@3": c[("self-select", 3)],
               # not a gate: the pick held to the candidates' answers (the written format taken away)
               "self-select-likelihood@3": c[("self-select-likelihood", 3)],
               "select_parse_rate": parse_rate(out), "pairwise_agreement": agreement["agreement"]}
    gates = {
        "pass@4 well above pass@1 (>= 1.5x)": figures["pass@4"] >= 1.5 * figures["pass@1"],
        "self-select replies parse (>= 95%)": figures["select_parse_rate"] >= 95.0,
        "self-select@3 >= greedy geoqa": figures["self-select@3"] >= greedy["geoqa"],
        "pairwise agreement with gold > 65%": (figures["pairwise_agreement"] or 0) > 65.0,
        "OCR > 15%": greedy["ocrbench"] > 15.0,
    }
    cells = geoqa_cells(Path(args.data_dir), Path(args.output_dir) / name, out)
    report = {"ckpt": args.ckpt, "data_dir": args.data_dir, "limit": args.limit, "figures": figures, "gates": gates,
              "cells": cells}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    print(json.dumps(cells, indent=1))
    for gate, held in gates.items():
        print(f"{'PASS' if held else 'FAIL'}  {gate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
