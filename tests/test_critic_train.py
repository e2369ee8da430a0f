"""The critic's train split (tasks/synth/critic.py): a judge's training data of known quality, kept
apart from the bundled test questions."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tasks.synth import critic as synth
from tasks.synth.aokvqa import COLORS, SHAPES

BUNDLED = Path(__file__).resolve().parent.parent / "data"
WORDS = {*COLORS, *SHAPES, *(s + ("es" if s.endswith("s") else "s") for s in SHAPES), "two", "three", "four"}


def _attrs(text: str) -> list[str]:
    return [w.strip(".,").lower() for w in text.split() if w.strip(".,").lower() in WORDS]


def test_train_split_holds_candidates_of_known_quality(tmp_path: Path) -> None:
    synth.build(tmp_path, "train", 40, seed=2)
    root = tmp_path / "critic"
    questions = {q["id"]: q for q in json.loads((root / "questions_train.json").read_text())}
    lines = [json.loads(line) for line in (root / synth.JUDGEMENTS).read_text().splitlines()]
    assert Counter(j["kind"] for j in lines) == {"pointwise": 160, "pairwise": 80}
    score = {}
    for j in lines:
        ref = questions[j["id"]]["reference"]
        if j["kind"] == "pointwise":
            assert j["score"] == synth.QUALITY_SCORES[j["quality"]] and j["reason"]
            score[(j["id"], j["answer"])] = j["score"]
            answer, want = _attrs(j["answer"]), _attrs(ref)
            if j["quality"] == "right":
                assert j["answer"] == ref
            elif j["quality"] == "partly right":  # exactly one colour / shape / number changed
                assert len(answer) == len(want) and sum(a != b for a, b in zip(answer, want)) == 1, (j, ref)
            elif j["quality"] == "wrong":  # nothing it names is in the image (a "One" stays one)
                assert not set(answer) & set(want), (j, ref)
        else:
            better = j["answer1"] if j["verdict"] == "Answer1" else j["answer2"]
            worse = j["answer2"] if j["verdict"] == "Answer1" else j["answer1"]
            assert score[(j["id"], better)] > score[(j["id"], worse)] and j["reason"].startswith(j["verdict"])
    assert Counter(j["verdict"] for j in lines if j["kind"] == "pairwise")["Answer1"] not in (0, 80)


def test_test_questions_stay_unseen_and_unchanged(tmp_path: Path) -> None:
    synth.build(tmp_path, "test", 60, seed=1)
    synth.build(tmp_path, "train", 20, seed=2)
    root = tmp_path / "critic"
    assert (root / "questions.json").read_bytes() == (BUNDLED / "critic" / "questions.json").read_bytes()
    test = json.loads((root / "questions.json").read_text())
    train = json.loads((root / "questions_train.json").read_text())
    assert not {q["id"] for q in test} & {q["id"] for q in train}
    judged = {json.loads(line)["id"] for line in (root / synth.JUDGEMENTS).read_text().splitlines()}
    assert judged == {q["id"] for q in train}
    test_images = {(root / "images" / f"{q['id']}.png").read_bytes() for q in test}
    assert not test_images & {(root / "images" / f"{q['id']}.png").read_bytes() for q in train}
