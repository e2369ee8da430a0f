"""Bundled MMBench-style mini-set: coloured shapes on a plain 128x128 canvas, in the real TSV layout.

    from tasks.synth import mmbench; mmbench.build(Path("data"), "test", n=150, seed=1)

writes `data/mmbench/MMBench_DEV_EN.tsv` (split "train": MMBench_TRAIN_EN.tsv) with the LMUData
columns, base64 JPEG images, and every question's circular copies (index + j * 1e6, options
rotated, the image cell a short reference to the base row, as in the official file). `n` counts
questions; the copies come on top (about 3.5 rows per question).

Categories use MMBench's own names. Shapes are big and solid, so the cue that decides the answer
(colour, position, size, distance) survives downscaling to 64x64. Text priors are flat: the
answer value is drawn uniformly within each template and its letter comes from a balanced
schedule, so a text-only model sits at chance.
"""
from __future__ import annotations

import base64
import csv
import io
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from harness.errors import HarnessError
from harness.core.files import csv_safe
from tasks.mmbench import COLUMNS, COPY_STRIDE, FILES, rotate_options

TYPES: tuple[str, ...] = (
    "attribute_recognition",
    "object_localization",
    "spatial_relationship",
    "attribute_comparison",
    "physical_relation",
)
L2_CATEGORY = {
    "attribute_recognition": "finegrained_perception (instance-level)",
    "object_localization": "finegrained_perception (instance-level)",
    "spatial_relationship": "finegrained_perception (cross-instance)",
    "attribute_comparison": "finegrained_perception (cross-instance)",
    "physical_relation": "relation_reasoning",
}
# Draw weights: the 4-option categories dominate, as in MMBench.
WEIGHTS = {
    "attribute_recognition": 3,
    "object_localization": 3,
    "spatial_relationship": 2,
    "attribute_comparison": 1.5,
    "physical_relation": 1,
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
COLORS = {
    "red": (220, 35, 35),
    "green": (30, 160, 60),
    "blue": (35, 75, 225),
    "yellow": (240, 200, 15),
    "purple": (145, 55, 190),
}
BACKGROUNDS = ((255, 255, 255), (240, 240, 240), (250, 246, 236))
SIZE = 128
TRAIN_INDEX_BASE = 100_000  # train questions never share an index (or g_index) with test ones
HINTS = {
    "attribute_recognition": "Each shape is filled with a single color.",
    "object_localization": "Positions refer to the image as it is displayed.",
    "spatial_relationship": "Left and right refer to the image as it is displayed.",
    "attribute_comparison": "The image shows simple shapes on a plain background.",
    "physical_relation": "Distances are measured between the centers of the shapes.",
}
HINT_RATE = 0.25


@dataclass
class Shape:
    kind: str
    color: str
    x: float
    y: float
    r: float  # half the shape's extent, in pixels at 128x128


@dataclass
class Question:
    category: str
    question: str
    options: list[str]  # the correct one first; the builder shuffles
    shapes: list[Shape]


# --- drawing ----------------------------------------------------------------------------------
def _draw(shapes: Sequence[Shape], background: tuple[int, int, int]) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(img)
    for s in shapes:
        fill = COLORS[s.color]
        x, y, r = s.x, s.y, s.r
        if s.kind == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif s.kind == "square":
            h = r * 0.85
            draw.rectangle((x - h, y - h, x + h, y + h), fill=fill)
        elif s.kind == "triangle":
            draw.polygon([(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)], fill=fill)
        elif s.kind == "star":
            pts = [
                (x + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
                 y - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5))
                for i in range(10)
            ]
            draw.polygon(pts, fill=fill)
        elif s.kind == "cross":
            w = r * 0.36
            draw.rectangle((x - r, y - w, x + r, y + w), fill=fill)
            draw.rectangle((x - w, y - r, x + w, y + r), fill=fill)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# --- scene helpers ----------------------------------------------------------------------------
GRID = (24, 64, 104)  # 3x3 cell centres; shapes in distinct cells never overlap at r <= 18


def _grid_scene(rng: random.Random, kinds: list[str], colors: list[str]) -> list[Shape]:
    cells = rng.sample([(cx, cy) for cx in GRID for cy in GRID], len(kinds))
    return [
        Shape(k, c, cx + rng.uniform(-3, 3), cy + rng.uniform(-3, 3), rng.uniform(14, 18))
        for k, c, (cx, cy) in zip(kinds, colors, cells)
    ]


def _options(rng: random.Random, answer: str, present: Sequence[str], pool: Sequence[str], k: int) -> list[str]:
    """answer first, then the other values shown in the image, then absent ones, k in all."""
    others = [v for v in present if v != answer]
    absent = [v for v in pool if v != answer and v not in present]
    rng.shuffle(others)
    rng.shuffle(absent)
    return [answer, *(others + absent)[: k - 1]]


# --- question templates (one per category, with variants) --------------------------------------
def _attribute_recognition(rng: random.Random) -> Question:
    variant = rng.choices(("single", "bind", "shape"), weights=(2, 2, 1))[0]
    if variant == "single":  # the curriculum: one shape, name its colour
        kind, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        shape = Shape(kind, color, 64 + rng.uniform(-24, 24), 64 + rng.uniform(-24, 24), rng.uniform(18, 26))
        return Question("attribute_recognition", "What color is the shape in the image?",
                        _options(rng, color, [], list(COLORS), 4), [shape])
    count = rng.choice((2, 3))
    kinds, colors = rng.sample(SHAPES, count), rng.sample(list(COLORS), count)
    shapes = _grid_scene(rng, kinds, colors)
    target = rng.randrange(count)
    if variant == "bind":
        return Question("attribute_recognition", f"What color is the {kinds[target]}?",
                        _options(rng, colors[target], colors, list(COLORS), 4), shapes)
    return Question("attribute_recognition", f"What shape is the {colors[target]} object?",
                    _options(rng, kinds[target], kinds, SHAPES, 4), shapes)


_PLACES = {"top": (64, 24), "bottom": (64, 104), "left": (24, 64), "right": (104, 64)}


def _object_localization(rng: random.Random) -> Question:
    kinds = rng.sample(SHAPES, 2)
    colors = [rng.choice(list(COLORS)) for _ in kinds]
    with_distractor = rng.random() < 0.5
    if rng.random() < 0.75:
        where, other = rng.sample(list(_PLACES), 2)
        (x, y), (ox, oy) = _PLACES[where], _PLACES[other]
        jitter = [rng.uniform(-5, 5) for _ in range(4)]
        shapes = [Shape(kinds[0], colors[0], x + jitter[0], y + jitter[1], rng.uniform(13, 17))]
        if with_distractor:
            shapes.append(Shape(kinds[1], colors[1], ox + jitter[2], oy + jitter[3], rng.uniform(13, 17)))
        return Question("object_localization", f"Where is the {kinds[0]} in the image?",
                        _options(rng, where, [], list(_PLACES), 4), shapes)
    where = rng.choice(("left", "right"))
    x = 30 if where == "left" else 98
    y = rng.uniform(26, 102)
    shapes = [Shape(kinds[0], colors[0], x + rng.uniform(-8, 8), y, rng.uniform(14, 18))]
    if with_distractor:
        shapes.append(Shape(kinds[1], colors[1], 128 - x + rng.uniform(-8, 8), rng.uniform(26, 102), rng.uniform(14, 18)))
    return Question("object_localization", f"Is the {kinds[0]} on the left or the right side of the image?",
                    _options(rng, where, [], ("left", "right"), 2), shapes)


def _spatial_relationship(rng: random.Random) -> Question:
    count = rng.choice((2, 3))
    kinds = rng.sample(SHAPES, count)  # in reading order along the axis
    colors = [rng.choice(list(COLORS)) for _ in kinds]
    horizontal = rng.random() < 0.6
    lane = 64 + rng.uniform(-24, 24)
    steps = (30, 98) if count == 2 else (22, 64, 106)
    shapes = [
        Shape(k, c, s if horizontal else lane, lane if horizontal else s, rng.uniform(13, 17))
        for k, c, s in zip(kinds, colors, steps)
    ]
    before_word, after_word = ("to the left of", "to the right of") if horizontal else ("above", "below")
    if rng.random() < 0.5:  # ask for the neighbour before the reference
        ref = rng.randrange(1, count)
        relation, answer = before_word, kinds[ref - 1]
    else:
        ref = rng.randrange(0, count - 1)
        relation, answer = after_word, kinds[ref + 1]
    pool = [k for k in SHAPES if k != kinds[ref]]
    present = [k for k in kinds if k != kinds[ref]]
    k = 4 if rng.random() < 0.7 else 3
    return Question("spatial_relationship", f"What is {relation} the {kinds[ref]}?",
                    _options(rng, answer, present, pool, k), shapes)


def _attribute_comparison(rng: random.Random) -> Question:
    variant = rng.choice(("bigger", "largest", "same_color"))
    if variant == "same_color":
        kinds = [rng.choice(SHAPES), rng.choice(SHAPES)]
        same = rng.random() < 0.5
        colors = [rng.choice(list(COLORS))] * 2 if same else rng.sample(list(COLORS), 2)
        return Question("attribute_comparison", "Are the two shapes the same color?",
                        ["yes", "no"] if same else ["no", "yes"], _grid_scene(rng, kinds, colors))
    count = 2 if variant == "bigger" else 3
    kinds = rng.sample(SHAPES, count)
    colors = [rng.choice(list(COLORS)) for _ in kinds]
    shapes = _grid_scene(rng, kinds, colors)
    sizes = rng.sample((9.0, 14.0, 21.0)[-count:], count)  # clearly different extents
    for s, r in zip(shapes, sizes):
        s.r = r
    biggest = kinds[sizes.index(max(sizes))]
    names = [f"the {k}" for k in kinds]
    if count == 2:
        first, second = rng.sample(kinds, 2)
        text = f"Which shape is bigger, the {first} or the {second}?"
    else:
        text = "Which shape is the largest?"
    return Question("attribute_comparison", text, [f"the {biggest}", *[n for n in names if n != f"the {biggest}"]], shapes)


def _physical_relation(rng: random.Random) -> Question:
    ref_kind, near_kind, far_kind = rng.sample(SHAPES, 3)
    colors = [rng.choice(list(COLORS)) for _ in range(3)]
    while True:  # rejection sampling: near at ~34 px, far at >= 70 px, all inside the canvas
        rx, ry = rng.uniform(24, 104), rng.uniform(24, 104)
        a1, a2 = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
        d_near, d_far = rng.uniform(32, 38), rng.uniform(70, 90)
        nx, ny = rx + d_near * math.cos(a1), ry + d_near * math.sin(a1)
        fx, fy = rx + d_far * math.cos(a2), ry + d_far * math.sin(a2)
        inside = all(18 <= v <= 110 for v in (nx, ny, fx, fy))
        if inside and math.dist((nx, ny), (fx, fy)) >= 34:
            break
    shapes = [
        Shape(ref_kind, colors[0], rx, ry, 13),
        Shape(near_kind, colors[1], nx, ny, 13),
        Shape(far_kind, colors[2], fx, fy, 13),
    ]
    first, second = rng.sample((near_kind, far_kind), 2)
    return Question("physical_relation", f"Which shape is closer to the {ref_kind}, the {first} or the {second}?",
                    [f"the {near_kind}", f"the {far_kind}"], shapes)


TEMPLATES: dict[str, Callable[[random.Random], Question]] = {
    "attribute_recognition": _attribute_recognition,
    "object_localization": _object_localization,
    "spatial_relationship": _spatial_relationship,
    "attribute_comparison": _attribute_comparison,
    "physical_relation": _physical_relation,
}


# --- the file ----------------------------------------------------------------------------------
class _AnswerSlots:
    """Balanced answer positions: each k-option question takes the next slot of a shuffled cycle."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.queues: dict[int, list[int]] = {}

    def next(self, k: int) -> int:
        queue = self.queues.setdefault(k, [])
        if not queue:
            queue.extend(range(k))
            self.rng.shuffle(queue)
        return queue.pop()


def build(out_dir: Path, split: str, n: int, seed: int, types: Sequence[str] | None = None,
          id_base: int | None = None) -> None:
    """Write `n` questions (plus their circular copies) of `split` under out_dir/mmbench/."""
    if split not in FILES:
        raise HarnessError(f"mmbench synth: unknown split {split!r}; use one of {', '.join(FILES)}")
    chosen = tuple(types) if types else TYPES
    unknown = [t for t in chosen if t not in TYPES]
    if unknown:
        raise HarnessError(f"mmbench synth: unknown type(s) {', '.join(unknown)}; known: {', '.join(TYPES)}")
    rng = random.Random(f"mmbench/{split}/{seed}")  # str seeds are stable across processes
    slots = _AnswerSlots(random.Random(f"mmbench-slots/{split}/{seed}"))
    first_index = id_base if id_base is not None else TRAIN_INDEX_BASE if split == "train" else 0
    rows: list[dict[str, str]] = []
    for i in range(n):
        category = rng.choices(chosen, weights=[WEIGHTS[t] for t in chosen])[0]
        q = TEMPLATES[category](rng)
        texts = q.options[1:]
        rng.shuffle(texts)
        pos = slots.next(len(q.options))
        texts.insert(pos, q.options[0])
        hint = HINTS[category] if rng.random() < HINT_RATE else ""
        image = base64.b64encode(_draw(q.shapes, rng.choice(BACKGROUNDS))).decode("ascii")
        g_index = first_index + i
        for shift in range(len(texts)):
            rotated, answer_pos = rotate_options(tuple(texts), pos, shift)
            row = {c: "" for c in COLUMNS}
            row.update(
                index=str(g_index + shift * COPY_STRIDE),
                question=q.question,
                hint=hint,
                answer="ABCD"[answer_pos],
                category=category,
                image=image if shift == 0 else str(g_index),
                source="synthetic",
                split="train" if split == "train" else "dev",
            )
            row["l2-category"] = L2_CATEGORY[category]
            row.update({"ABCD"[j]: t for j, t in enumerate(rotated)})
            rows.append(row)
    # Sorted by index: the base questions first, then each rotation as a block.
    rows.sort(key=lambda r: int(r["index"]) // COPY_STRIDE)
    path = Path(out_dir) / "mmbench" / FILES[split]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: csv_safe(v) for k, v in row.items()} for row in rows)
