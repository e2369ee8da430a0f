"""bench/base_gates.py's geoqa split into the cells pretraining covers and the held-out outer angles
(README "The embedded default"): each figure is averaged over its own cell's items only, and the
copy ceiling is the share of 3-candidate subsets with a parsed candidate."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path


def _gates():
    spec = importlib.util.spec_from_file_location("base_gates", Path(__file__).parent.parent / "bench" / "base_gates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_geoqa_figures_are_split_by_cell_and_the_copy_ceiling_counts_subsets(tmp_path):
    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "compare"
    xs = {"1": 20, "2": 65, "3": 10, "4": 80}  # two pretrained angle values, two outer (held-out) ones
    _jsonl(data / "geoqa" / "test_meta.jsonl", [{"question_id": int(i), "x": x} for i, x in xs.items()])
    _jsonl(run / "geoqa" / "samples.jsonl", [{"id": i, "score": s} for i, s in zip(xs, (1.0, 0.0, 1.0, 0.0))])
    per_item = ["n,method,id,score"] + [f"3,majority-vote,{i},{s}" for i, s in zip(xs, (1, 1, 0, 0))] \
        + [f"2,majority-vote,{i},1" for i in xs]  # an n the gates do not read
    out.mkdir(parents=True)
    (out / "per_item.csv").write_text("\n".join(per_item) + "\n", encoding="utf-8")
    _jsonl(out / "self_select" / "samples.jsonl",
           [{"group": "1", "extracted": "A"}, {"group": "2", "extracted": None}, {"group": "3", "extracted": None}])
    # item 1: every sample parses; item 2: one of four; items 3 and 4: none
    parsed = {"1": [1, 1, 1, 1], "2": [1, 0, 0, 0], "3": [0, 0, 0, 0], "4": [0, 0, 0, 0]}
    _jsonl(out / "samples.jsonl", [{"id": i, "extracted": "A" if p else None} for i, ps in parsed.items() for p in ps])

    cells = _gates().geoqa_cells(data, run, out)

    pre, held = cells["pretrained"], cells["held_out"]
    assert pre["items"] == 2 and held["items"] == 2
    assert (pre["greedy"], held["greedy"]) == (50.0, 50.0)
    assert (pre["majority-vote@3"], held["majority-vote@3"]) == (100.0, 0.0)
    assert "majority-vote@2" not in pre
    assert (pre["select_parse_rate"], held["select_parse_rate"]) == (50.0, 0.0)
    # item 2: 3 of the 4 three-sample subsets hold its one parsed sample -> (100 + 75) / 2
    assert (pre["copy_ceiling"], held["copy_ceiling"]) == (87.5, 0.0)
