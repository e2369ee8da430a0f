"""Bundled critic mini-set: open-ended questions about coloured shapes, in MLLM-Bench's layout.

    python -m tasks.synth.critic --out data          # rewrites data/critic only
    from tasks.synth import critic; critic.build(Path("data"), "test", 60, seed=1)

Writes `critic/questions.json` (split "test"; "train" -> `questions_train.json`), a list of
{id, image_path: "./data/images/<id>.png", question, meta: {level, capability, question type}}
rows as in the real file, plus `reference` (a short correct answer, the training target; the
real file has none and the judge never sees it), and 128x128 PNGs under `critic/images/`.
The colours and shapes are A-OKVQA mini-set's (tasks/synth/aokvqa.py), so a model trained there
has seen them. One template per MLLM-Bench level, cycled so each level gets the same count.

The train split also writes `critic/judgements_train.jsonl`, a judge's training data in the style
of LLaVA-Critic: per question four candidate answers of known quality (right: the reference;
partly right: one colour, shape or number changed; wrong: every one changed; malformed: cut off,
repeated or off-format), each with a pointwise 0-100 score and a short reason, and two pairwise
verdicts (Answer1 / Answer2, order drawn at random) with a short reason. The test split's
questions, ids and images never enter it (different ids, seeds and images).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError
from tasks.synth.aokvqa import BACKGROUNDS, COLORS, SHAPES

SIZE = 128
Shape = tuple[str, str, int, int, int]  # kind, colour, centre x, centre y, size
Question = tuple[str, str, str, str, list[Shape]]  # level, capability, question, reference, shapes
_FILES = {"test": "questions.json", "train": "questions_train.json"}
JUDGEMENTS = "judgements_train.jsonl"
GOLD_VOTES = "votes_gold.json"  # MLLM-Bench pairwise-votes layout, read by `harness critic agreement`
QUALITY_SCORES = {"right": 90, "partly right": 50, "wrong": 10, "malformed": 0}  # pointwise 0-100, best first
_NUMBERS = {1: "One", 2: "Two", 3: "Three", 4: "Four"}


def _one(rng: random.Random) -> Question:
    kind, color = rng.choice(SHAPES), rng.choice(list(COLORS))
    shape = (kind, color, 64 + rng.randint(-12, 12), 64 + rng.randint(-12, 12), rng.randint(46, 60))
    return ("Perception/Remembering", "General Object Recognition", "Describe the object in the image.",
            f"A {color} {kind}.", [shape])


def _pair(rng: random.Random) -> list[Shape]:
    """Two different shapes of different colours, one in each half (left first)."""
    kinds, colors = rng.sample(SHAPES, 2), rng.sample(list(COLORS), 2)
    return [(kinds[i], colors[i], 34 + 60 * i + rng.randint(-4, 4), 64 + rng.randint(-20, 20), rng.randint(36, 44))
            for i in range(2)]


def _colors(rng: random.Random) -> Question:
    shapes = _pair(rng)
    return ("Understanding", "Color Recognition", "What colors are the shapes in the image?",
            f"{shapes[0][1].capitalize()} and {shapes[1][1]}.", shapes)


def _count(rng: random.Random) -> Question:
    k, kind, color = rng.randint(1, 4), rng.choice(SHAPES), rng.choice(list(COLORS))
    cells = rng.sample([(34, 34), (94, 34), (34, 94), (94, 94)], k)
    shapes = [(kind, color, x + rng.randint(-3, 3), y + rng.randint(-3, 3), rng.randint(30, 38)) for x, y in cells]
    noun = kind if k == 1 else kind + ("es" if kind.endswith("s") else "s")
    return ("Applying", "Counting", "How many shapes are in the image, and what are they?",
            f"{_NUMBERS[k]} {color} {noun}.", shapes)


def _left(rng: random.Random) -> Question:
    shapes = _pair(rng)
    kind, color = shapes[0][:2]
    return ("Analyzing", "Spatial Relation", "Which shape is on the left, and what color is it?",
            f"The {kind} on the left is {color}.", shapes)


def _caption(rng: random.Random) -> Question:
    shapes = _pair(rng)
    (k1, c1), (k2, c2) = shapes[0][:2], shapes[1][:2]
    return ("Creating", "Captioning", "Write a short caption for this image.",
            f"A {c1} {k1} next to a {c2} {k2}.", shapes)


TEMPLATES: tuple[Callable[[random.Random], Question], ...] = (_one, _colors, _count, _left, _caption)


def _draw(shapes: list[Shape], background: tuple[int, int, int]):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(img)
    for kind, color, x, y, size in shapes:
        fill = COLORS[color]
        edge = tuple(int(c * 0.55) for c in fill)  # a dark rim keeps yellow visible on light grounds
        h = size / 2
        if kind == "circle":
            draw.ellipse((x - h, y - h, x + h, y + h), fill=fill, outline=edge, width=3)
        elif kind == "square":
            draw.rectangle((x - h * 0.88, y - h * 0.88, x + h * 0.88, y + h * 0.88), fill=fill, outline=edge, width=3)
        elif kind == "triangle":
            draw.polygon(((x, y - h), (x - h, y + h * 0.8), (x + h, y + h * 0.8)), fill=fill, outline=edge, width=3)
        else:  # cross
            a = h / 3  # arm half-width
            pts = ((x - a, y - h), (x + a, y - h), (x + a, y - a), (x + h, y - a), (x + h, y + a), (x + a, y + a),
                   (x + a, y + h), (x - a, y + h), (x - a, y + a), (x - h, y + a), (x - h, y - a), (x - a, y - a))
            draw.polygon(pts, fill=fill, outline=edge, width=3)
    return img


def build(out_dir: Path, split: str, n: int, seed: int, id_base: int | None = None) -> None:
    if split not in _FILES:
        raise HarnessError(f"critic synth: split must be test or train, not {split!r}")
    root = Path(out_dir) / "critic"
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"critic:{split}:{seed}")
    offset = id_base if id_base is not None else 0 if split == "test" else 100000  # train ids never collide with test ids
    rows = []
    for i in range(n):
        level, capability, question, reference, shapes = TEMPLATES[i % len(TEMPLATES)](rng)
        qid = offset + i
        _draw(shapes, rng.choice(BACKGROUNDS)).save(root / "images" / f"{qid}.png", "PNG", optimize=True)
        rows.append({
            "id": qid, "image_path": f"./data/images/{qid}.png", "question": question,
            "meta": {"level": level, "capability": capability,
                     "question type": "close-ended" if capability == "Counting" else "open-ended"},
            "reference": reference,
        })
    (root / _FILES[split]).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    if split == "test":  # the judge's own test: gold verdicts on the test questions (no judge trains on them)
        votes = gold_votes(rows, random.Random(f"critic:votes:{seed}"))
        (root / GOLD_VOTES).write_text(json.dumps(votes, indent=1) + "\n", encoding="utf-8")
    if split == "train":
        lines = [json.dumps(j) for row in rows for j in judgements(row["id"], row["reference"], rng)]
        (root / JUDGEMENTS).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- a critic's training data: candidate answers of known quality ---------------------------------
_PLURALS = {kind: kind + ("es" if kind.endswith("s") else "s") for kind in SHAPES}
_KINDS = {  # attribute kind -> its words as they appear in references
    "color": [c for c in COLORS], "shape": list(SHAPES), "shapes": list(_PLURALS.values()),
    "number": list(_NUMBERS.values()),
}


def _attributes(words: list[str]) -> list[tuple[int, str]]:
    """(word index, kind) of every colour, shape or number word in a reference; "One" is left
    alone (another number would need a plural noun)."""
    out = []
    for i, w in enumerate(words):
        bare = w.strip(".,").lower()
        for kind, values in _KINDS.items():
            if bare in [v.lower() for v in values] and bare != "one":
                out.append((i, kind))
    return out


def _swap(words: list[str], i: int, kind: str, rng: random.Random, reference: list[str]) -> tuple[str, str]:
    """Replace word i by a value of its kind in neither the answer nor the reference (keeping case
    and punctuation); (old, new)."""
    word = words[i]
    bare = word.strip(".,")
    taken = {w.strip(".,").lower() for w in words + reference}
    new = rng.choice([v for v in _KINDS[kind] if v.lower() not in taken | {"one"}])
    new = new.capitalize() if bare[0].isupper() else new.lower()
    words[i] = word.replace(bare, new)
    return bare.lower(), new.lower()


def candidates(reference: str, rng: random.Random) -> dict[str, tuple[str, str]]:
    """quality -> (answer, why) for one question's reference answer."""
    words = reference.split()
    attrs = _attributes(words)
    partly = list(words)
    old, new = _swap(partly, *rng.choice(attrs), rng, words)
    wrong = list(words)
    for i, kind in attrs:
        _swap(wrong, i, kind, rng, words)
    cut = " ".join(words[: max(1, len(words) // 2)]).rstrip(".")
    malformed = rng.choice([cut, " ".join([words[attrs[-1][0]].strip(".,").lower()] * 4), "Answer: (B)", "°"])
    return {
        "right": (reference, "it matches the image"),
        "partly right": (" ".join(partly), f"it says {new} where the image shows {old}"),
        "wrong": (" ".join(wrong), "the colours, shapes or numbers it names are not in the image"),
        "malformed": (malformed, "it is cut off, repeated or off-format, not an answer"),
    }


def judgements(qid: int, reference: str, rng: random.Random) -> list[dict]:
    """Four pointwise judgements and two pairwise verdicts (the right answer against a worse one,
    the partly right one against a worse one) for one question."""
    cands = candidates(reference, rng)
    out = [{"id": qid, "kind": "pointwise", "quality": q, "answer": a, "score": QUALITY_SCORES[q],
            "reason": f"{q.capitalize()}: {why}."} for q, (a, why) in cands.items()]
    ranked = list(QUALITY_SCORES)
    for better in ("right", "partly right"):
        worse = rng.choice(ranked[ranked.index(better) + 1:])
        first_better = rng.random() < 0.5
        pair = (better, worse) if first_better else (worse, better)
        slot = "Answer1" if first_better else "Answer2"
        other = "Answer2" if first_better else "Answer1"
        reason = f"{slot} is {better}: {cands[better][1]}; {other} is {worse}: {cands[worse][1]}."
        out.append({"id": qid, "kind": "pairwise", "answer1": cands[pair[0]][0], "answer2": cands[pair[1]][0],
                    "qualities": list(pair), "verdict": slot, "reason": reason})
    return out


GOLD_PAIRS = (("right", "partly right"), ("right", "wrong"), ("right", "malformed"), ("partly right", "wrong"))


def gold_votes(rows: list[dict], rng: random.Random) -> list[dict]:
    """Pairwise votes with known winners on the given questions, in MLLM-Bench's votes layout
    (unique_idx <question>_<k>, image relative to the votes file, Answer1/Answer2): per question
    one pair of each GOLD_PAIRS kind, the better answer's slot drawn at random."""
    votes = []
    for row in rows:
        cands = candidates(row["reference"], rng)
        for k, (better, worse) in enumerate(GOLD_PAIRS):
            first_better = rng.random() < 0.5
            pair = (better, worse) if first_better else (worse, better)
            votes.append({"unique_idx": f"{row['id']}_{k}", "image": f"images/{row['id']}.png",
                          "question": row["question"], "model_1": pair[0], "model_2": pair[1],
                          "raw_answer1": cands[pair[0]][0], "raw_answer2": cands[pair[1]][0],
                          "answer": "Answer1" if first_better else "Answer2"})
    return votes


def main() -> None:
    parser = argparse.ArgumentParser(description="rebuild the bundled critic mini-set (data/critic only)")
    parser.add_argument("--out", default="data", help="data root; critic/ under it is replaced")
    parser.add_argument("--n", type=int, default=60, help="test questions")
    parser.add_argument("--train", type=int, default=300, help="train questions (with the judge's training data)")
    args = parser.parse_args()
    shutil.rmtree(Path(args.out) / "critic", ignore_errors=True)
    build(Path(args.out), "test", args.n, seed=1)
    if args.train:
        build(Path(args.out), "train", args.train, seed=2)
    print(f"wrote {args.n} test and {args.train} train critic questions to {Path(args.out) / 'critic'}")


if __name__ == "__main__":
    main()
