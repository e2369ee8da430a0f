"""Bundled A-OKVQA mini-set: COCO-like JPEGs of coloured shapes with A-OKVQA's exact format.

    from tasks.synth import aokvqa; aokvqa.build(Path("data"), "test", 300, seed=1)

Writes `aokvqa/aokvqa_v1p0_{val|train}.json` (split "test" -> the val file, as the real
benchmark evaluates on val) with every official key, plus `question_type` (our category; the
real readers ignore it), and `coco/{val2017|train2017}/{image_id:012d}.jpg` (128x128).

Question types (TYPES):
- color_single: one big shape, "What color is the square?" (the curriculum step);
- color: 2-3 shapes, "What color is the circle?" (the other shapes' colours are distractors);
- shape: 2-3 shapes, "What shape is the red object?";
- count: 1-4 copies of a shape among 0-2 others, "How many triangles are there?";
- position: two shapes, "Which shape is on the left?" (or right).
Within a template the answer is drawn uniformly and the gold letter cycles over A-D per type,
so a text-only model is at chance. The 10 direct answers are mostly the true answer with a
few near answers ("dark red", "3" for 2) and number words ("two"), so min(1, n/3) and the
VQA normalisation both matter; about 1 in 16 items is flagged difficult_direct_answer, with
scattered answers, as A-OKVQA flags questions its annotators disagreed on.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from harness.errors import HarnessError

TYPES: tuple[str, ...] = ("color_single", "color", "shape", "count", "position")

SIZE = 128
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 160, 60),
    "blue": (35, 80, 215),
    "yellow": (235, 200, 30),
    "purple": (135, 50, 175),
    "orange": (240, 130, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
BACKGROUNDS = ((246, 246, 244), (238, 234, 224), (226, 232, 238), (234, 240, 228))
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
# Answers an annotator might give instead of the exact one (partial credit under min(1, n/3)).
NEAR_ANSWERS: dict[str, tuple[str, ...]] = {
    "red": ("dark red", "maroon", "pink", "crimson"),
    "green": ("lime", "dark green", "olive"),
    "blue": ("navy", "light blue", "dark blue"),
    "yellow": ("gold", "light yellow", "mustard"),
    "purple": ("violet", "lavender", "magenta"),
    "orange": ("dark orange", "amber", "peach"),
    "circle": ("ball", "round", "dot", "oval"),
    "square": ("box", "rectangle", "block"),
    "triangle": ("pyramid", "cone", "wedge"),
    "cross": ("plus", "plus sign", "x"),
}
LETTERS = "ABCD"
DIFFICULT_EVERY = 16  # about one item in 16 gets scattered direct answers
_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # shortuuid's, like the real ids
_FILES = {"test": ("val", "val2017"), "train": ("train", "train2017")}


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    cx: int
    cy: int
    size: int  # bounding-box side in px


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    distractors: tuple[str, ...]  # hard negatives first, then the rest of the answer pool
    rationales: tuple[str, str, str]
    shapes: tuple[Shape, ...]


# --- scenes and questions, one function per type -------------------------------------------
def _plural(kind: str) -> str:
    return kind + ("es" if kind.endswith("s") else "s")


def _grid_cells(rng: random.Random, k: int) -> list[tuple[int, int]]:
    """k distinct cells of a 3x3 grid, as their centres (shapes up to ~38 px never overlap)."""
    cells = [(22 + 42 * c, 22 + 42 * r) for r in range(3) for c in range(3)]
    return rng.sample(cells, k)


def _scatter(rng: random.Random, specs: list[tuple[str, str]], lo: int, hi: int) -> tuple[Shape, ...]:
    return tuple(
        Shape(kind, color, cx + rng.randint(-2, 2), cy + rng.randint(-2, 2), rng.randint(lo, hi))
        for (kind, color), (cx, cy) in zip(specs, _grid_cells(rng, len(specs)))
    )


def _rest(pool: Sequence[str], first: Sequence[str], answer: str, rng: random.Random) -> tuple[str, ...]:
    others = [x for x in pool if x != answer and x not in first]
    rng.shuffle(others)
    return tuple(dict.fromkeys([*first, *others]))


def _color_single(rng: random.Random) -> Question:
    kind, color = rng.choice(SHAPES), rng.choice(list(COLORS))
    shape = Shape(kind, color, 64 + rng.randint(-14, 14), 64 + rng.randint(-14, 14), rng.randint(46, 62))
    return Question(
        f"What color is the {kind}?", color, _rest(list(COLORS), [], color, rng),
        (f"The {kind} in the picture is {color}.", f"There is only one shape and it is colored {color}.",
         f"The {kind} is filled with {color}."),
        (shape,),
    )


def _color_multi(rng: random.Random) -> Question:
    k = rng.choice((2, 3))
    kinds, colors = rng.sample(SHAPES, k), rng.sample(list(COLORS), k)
    shapes = _scatter(rng, list(zip(kinds, colors)), 30, 38)
    kind, color = kinds[0], colors[0]
    return Question(
        f"What color is the {kind}?", color, _rest(list(COLORS), colors[1:], color, rng),
        (f"The {kind} is {color}.", f"Among the shapes, the {kind} has a {color} fill.",
         f"The other shapes have different colors, the {kind} is {color}."),
        shapes,
    )


def _shape(rng: random.Random) -> Question:
    k = rng.choice((2, 3))
    kinds, colors = rng.sample(SHAPES, k), rng.sample(list(COLORS), k)
    shapes = _scatter(rng, list(zip(kinds, colors)), 30, 38)
    kind, color = kinds[0], colors[0]
    return Question(
        f"What shape is the {color} object?", kind, _rest(SHAPES, kinds[1:], kind, rng),
        (f"The {color} object is a {kind}.", f"The only {color} thing in the image has the outline of a {kind}.",
         f"It is shaped like a {kind}."),
        shapes,
    )


def _count(rng: random.Random) -> Question:
    n = rng.randint(1, 4)
    kind = rng.choice(SHAPES)
    others = [k for k in SHAPES if k != kind]
    specs = [(kind, rng.choice(list(COLORS))) for _ in range(n)]
    specs += [(rng.choice(others), rng.choice(list(COLORS))) for _ in range(rng.randint(0, 2))]
    rng.shuffle(specs)
    shapes = _scatter(rng, specs, 26, 32)
    word = kind if n == 1 else _plural(kind)
    return Question(
        f"How many {_plural(kind)} are there?", str(n), _rest(["1", "2", "3", "4"], [], str(n), rng),
        (f"I can count {n} {word} in the image.", f"There {'is' if n == 1 else 'are'} {n} {word} drawn.",
         f"Counting only the {_plural(kind)} gives {n}."),
        shapes,
    )


def _position(rng: random.Random) -> Question:
    left, right = rng.sample(SHAPES, 2)
    side = rng.choice(("left", "right"))
    shapes = (
        Shape(left, rng.choice(list(COLORS)), rng.randint(26, 40), rng.randint(32, 96), rng.randint(34, 42)),
        Shape(right, rng.choice(list(COLORS)), rng.randint(88, 102), rng.randint(32, 96), rng.randint(34, 42)),
    )
    kind, other = (left, right) if side == "left" else (right, left)
    return Question(
        f"Which shape is on the {side}?", kind, _rest(SHAPES, [other], kind, rng),
        (f"The {kind} is on the {side} side of the image.", f"The {other} is on the other side.",
         f"Looking at the {side} half, there is a {kind}."),
        shapes,
    )


_MAKERS: dict[str, Callable[[random.Random], Question]] = {
    "color_single": _color_single, "color": _color_multi, "shape": _shape, "count": _count, "position": _position,
}


# --- direct answers ----------------------------------------------------------------------
def _spellings(answer: str) -> tuple[str, ...]:
    """Spellings that normalise to the same answer ("2" and "two")."""
    return (answer, NUMBER_WORDS[int(answer)]) if answer.isdigit() and int(answer) in NUMBER_WORDS else (answer,)


def _near(answer: str) -> tuple[str, ...]:
    if answer.isdigit():
        return tuple(str(d) for d in (int(answer) - 1, int(answer) + 1) if d >= 0)
    return NEAR_ANSWERS[answer]


def direct_answers(rng: random.Random, answer: str, difficult: bool) -> list[str]:
    """10 annotator answers. Easy items: the exact spelling at least 3 times (so both the
    normalised and the raw rule give the majority answer full credit)."""
    spellings, near = _spellings(answer), _near(answer)
    if difficult:
        n_true, n_exact = 3, 2  # a plurality at best; the official eval drops these anyway
    else:
        n_true = rng.choice((5, 6, 7, 8, 8, 9, 9, 10))
        n_exact = max(3, n_true - rng.randint(0, 2)) if len(spellings) > 1 else n_true
    out = [answer] * n_exact + [spellings[-1]] * (n_true - n_exact)
    out += [rng.choice(near) for _ in range(10 - n_true)]
    rng.shuffle(out)
    return out


# --- drawing -----------------------------------------------------------------------------
def _draw(shapes: Sequence[Shape], background: tuple[int, int, int]):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(img)
    for s in shapes:
        fill = COLORS[s.color]
        edge = tuple(int(c * 0.55) for c in fill)  # dark rim keeps yellow visible on light grounds
        h = s.size / 2
        x, y = s.cx, s.cy
        if s.kind == "circle":
            draw.ellipse((x - h, y - h, x + h, y + h), fill=fill, outline=edge, width=3)
        elif s.kind == "square":
            q = h * 0.88  # similar area to the circle
            draw.rectangle((x - q, y - q, x + q, y + q), fill=fill, outline=edge, width=3)
        elif s.kind == "triangle":
            draw.polygon(((x, y - h), (x - h, y + h * 0.8), (x + h, y + h * 0.8)), fill=fill, outline=edge, width=3)
        elif s.kind == "cross":
            a = h / 3  # arm half-width
            pts = ((x - a, y - h), (x + a, y - h), (x + a, y - a), (x + h, y - a), (x + h, y + a), (x + a, y + a),
                   (x + a, y + h), (x - a, y + h), (x - a, y + a), (x - h, y + a), (x - h, y - a), (x - a, y - a))
            draw.polygon(pts, fill=fill, outline=edge, width=3)
        else:
            raise ValueError(f"unknown shape {s.kind}")
    return img


# --- ids and the build ---------------------------------------------------------------------
def question_id(split: str, seed: int, index: int) -> str:
    """A 22-character id like the real ones (shortuuid alphabet), fixed by split, seed, index."""
    value = int.from_bytes(hashlib.sha256(f"aokvqa:{split}:{seed}:{index}".encode()).digest(), "big")
    chars = []
    for _ in range(22):
        value, r = divmod(value, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[r])
    return "".join(chars)


def image_id(split: str, seed: int, index: int) -> int:
    """12 digits: split (1 val, 2 train), 5 of seed, 6 of index; never a real COCO id (< 600k)."""
    if not 0 <= index < 10**6:
        raise HarnessError(f"aokvqa synth: at most 1,000,000 items per split (got index {index})")
    return (1 if split == "test" else 2) * 10**11 + (seed % 10**5) * 10**6 + index


def build(out_dir: Path, split: str, n: int, seed: int, types: Sequence[str] | None = None) -> None:
    if split not in _FILES:
        raise HarnessError(f"aokvqa synth: split must be test or train, not {split!r}")
    kinds = tuple(types) if types else TYPES
    unknown = [t for t in kinds if t not in TYPES]
    if unknown:
        raise HarnessError(f"aokvqa synth: unknown question type(s) {', '.join(unknown)}; known: {', '.join(TYPES)}")
    stem, image_folder = _FILES[split]
    ann_dir, img_dir = Path(out_dir) / "aokvqa", Path(out_dir) / "coco" / image_folder
    ann_dir.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)

    rng = random.Random(f"aokvqa:{split}:{seed}")
    # Balanced slots: types cycle, and within a type the gold letter cycles over A-D.
    slots = [(kinds[i % len(kinds)], (i // len(kinds)) % len(LETTERS)) for i in range(n)]
    rng.shuffle(slots)
    rows = []
    for i, (kind, gold) in enumerate(slots):
        q = _MAKERS[kind](rng)
        choices = list(q.distractors[:3])
        rng.shuffle(choices)
        choices.insert(gold, q.answer)
        difficult = rng.randrange(DIFFICULT_EVERY) == 0
        img_id = image_id(split, seed, i)
        _draw(q.shapes, rng.choice(BACKGROUNDS)).save(img_dir / f"{img_id:012d}.jpg", "JPEG", quality=90)
        rows.append({
            "split": stem,
            "image_id": img_id,
            "question_id": question_id(split, seed, i),
            "question": q.text,
            "choices": choices,
            "correct_choice_idx": gold,
            "direct_answers": direct_answers(rng, q.answer, difficult),
            "difficult_direct_answer": difficult,
            "rationales": list(q.rationales),
            "question_type": kind,
        })
    # One question per line: valid JSON, readable diffs of the committed file.
    text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n"
    (ann_dir / f"aokvqa_v1p0_{stem}.json").write_text(text, encoding="utf-8")
