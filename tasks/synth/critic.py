"""Bundled critic mini-set: open-ended questions about coloured shapes, in MLLM-Bench's layout.

    python -m tasks.synth.critic --out data          # rewrites data/critic only
    from tasks.synth import critic; critic.build(Path("data"), "test", 60, seed=1)

Writes `critic/questions.json` (split "test"; "train" -> `questions_train.json`), a list of
{id, image_path: "./data/images/<id>.png", question, meta: {level, capability, question type}}
rows as in the real file, plus `reference` (a short correct answer, the training target; the
real file has none and the judge never sees it), and 128x128 PNGs under `critic/images/`.
The colours and shapes are A-OKVQA mini-set's (tasks/synth/aokvqa.py), so a model trained there
has seen them. One template per MLLM-Bench level, cycled so each level gets the same count.
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


def main() -> None:
    parser = argparse.ArgumentParser(description="rebuild the bundled critic mini-set (data/critic only)")
    parser.add_argument("--out", default="data", help="data root; critic/ under it is replaced")
    parser.add_argument("--n", type=int, default=60, help="test questions")
    args = parser.parse_args()
    shutil.rmtree(Path(args.out) / "critic", ignore_errors=True)
    build(Path(args.out), "test", args.n, seed=1)
    print(f"wrote {args.n} critic questions to {Path(args.out) / 'critic'}")


if __name__ == "__main__":
    main()
