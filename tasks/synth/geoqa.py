"""Bundled GeoQA mini-set: angle diagrams where the figure, not the text, decides the answer.

    from tasks.synth import geoqa; geoqa.build(Path("data"), "test", 300, seed=1)

Every item asks the same question, "angle 1 = x, then the degree of angle 2 is ()", and offers
the same four values {x, 180-x, 90-x, 2x} in a shuffled order. Only the diagram tells which
relation holds:
- vertical: two lines cross, angles 1 and 2 are opposite (angle 2 = x);
- supplementary: a ray leaves a straight line, angles 1 and 2 are adjacent (180 - x);
- complementary: a ray splits a right angle marked with a square corner (90 - x);
- central: angle 1 is inscribed in a circle, angle 2 is the central angle on the same arc (2x).
So a text-only model is at chance (25%) whatever it computes, and per type the gold letter is
balanced over A-D. Files follow the G-LLaVA layout exactly (see tasks/geoqa.py), plus the
sidecar `{split}_meta.jsonl` (question_id, type, x, answer_value) that only our loader reads.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

TYPES: tuple[str, ...] = ("vertical", "supplementary", "complementary", "central")

# x values that keep the four candidate values distinct and positive (45 makes x = 90-x,
# 30 makes 2x = 90-x, 60 makes 2x = 180-x).
X_VALUES: tuple[int, ...] = (10, 15, 20, 25, 35, 40, 50, 55, 65, 70, 75, 80)
# What `tiny` is pretrained on (trainers/pretrain_tiny.py): the middle values only, so the bundled
# splits' outer values (10, 15, 75, 80) are something post-training has to teach.
PRETRAIN_X_VALUES: tuple[int, ...] = (20, 25, 35, 40, 50, 55, 65, 70)
LETTERS = "ABCD"
TRAIN_ID_OFFSET = 100000  # train ids never collide with test ids

# The instruction line every G-LLaVA GeoQA question starts with (a data-format constant).
INSTRUCTION = (
    "First perform reasoning, then finally select the answer from the choices in the "
    "following format: Answer: xxx."
)
QUESTION = "As shown in the figure, angle 1 = {x}.0, then the degree of angle 2 is ()"

SIZE = 128
LINE = 5  # stroke width in px at 128 px: still ~2.5 px after the 64x64 resize
INK = (0, 0, 0)
LABEL_1 = (220, 30, 30)  # colour-coded labels so "1" and "2" survive downscaling
LABEL_2 = (30, 70, 220)
FONT_SIZE = 26


def answer_value(kind: str, x: int) -> int:
    return {"vertical": x, "supplementary": 180 - x, "complementary": 90 - x, "central": 2 * x}[kind]


@dataclass(frozen=True)
class Spec:
    """One item before rendering: the figure type, the given angle and the gold option."""

    qid: int
    kind: str
    x: int
    gold_letter: str
    choices: tuple[int, ...]  # values in option order
    rng_seed: int  # drives the drawing jitter


def _plan(split: str, n: int, seed: int, kinds: Sequence[str], x_values: Sequence[int] = X_VALUES,
          id_base: int | None = None) -> list[Spec]:
    rng = random.Random(f"geoqa:{split}:{seed}")
    # Balanced slots: types cycle, and within a type the gold letter cycles over A-D (from a
    # different start per type, so no letter is always the one left short).
    t = len(kinds)
    slots = [(kinds[i % t], LETTERS[(i // t + i % t) % len(LETTERS)]) for i in range(n)]
    rng.shuffle(slots)
    offset = id_base if id_base is not None else TRAIN_ID_OFFSET if split == "train" else 0
    specs = []
    for i, (kind, gold_letter) in enumerate(slots):
        x = rng.choice(x_values)
        gold = answer_value(kind, x)
        others = [answer_value(k, x) for k in TYPES if k != kind]
        rng.shuffle(others)
        values = others[:]
        values.insert(LETTERS.index(gold_letter), gold)
        specs.append(Spec(offset + i, kind, x, gold_letter, tuple(values), rng.randrange(2**31)))
    return specs


# --- drawing ------------------------------------------------------------------------------------
def _point(cx: float, cy: float, r: float, deg: float) -> tuple[float, float]:
    """Math-convention angle (counter-clockwise, degrees) on an image whose y axis points down."""
    t = math.radians(deg)
    return cx + r * math.cos(t), cy - r * math.sin(t)


def _label_radius(angle: float, lo: float, hi: float) -> float:
    # Far enough from the vertex that an ~11 px half-width label fits inside a narrow angle.
    return max(lo, min(hi, 11.0 / math.sin(math.radians(angle) / 2)))


class _Canvas:
    def __init__(self) -> None:
        from PIL import Image, ImageDraw, ImageFont

        self.image = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
        self.draw = ImageDraw.Draw(self.image)
        self.font = ImageFont.load_default(size=FONT_SIZE)

    def ray(self, v: tuple[float, float], deg: float, length: float) -> None:
        self.draw.line([v, _point(*v, length, deg)], fill=INK, width=LINE)

    def label(self, v: tuple[float, float], start: float, size: float, r: float, text: str) -> None:
        """Write `text` inside the angle that opens at `start` and spans `size` degrees."""
        fill = LABEL_1 if text == "1" else LABEL_2
        self.draw.text(_point(*v, r, start + size / 2), text, font=self.font, fill=fill, anchor="mm")


def _draw(spec: Spec) -> "object":
    rng = random.Random(spec.rng_seed)
    c = _Canvas()
    x = spec.x
    cx, cy = SIZE / 2 + rng.uniform(-5, 5), SIZE / 2 + rng.uniform(-5, 5)
    tilt = rng.uniform(-15, 15)
    if spec.kind == "vertical":
        # Lines at `tilt` and `tilt + x`; angle 1 is one of the two x-sized wedges, angle 2 the other.
        for deg in (tilt, tilt + x):
            c.draw.line([_point(cx, cy, 60, deg), _point(cx, cy, 60, deg + 180)], fill=INK, width=LINE)
        start = tilt + rng.choice((0, 180))
        r = _label_radius(x, 20, 42)
        c.label((cx, cy), start, x, r, "1")
        c.label((cx, cy), start + 180, x, r, "2")
    elif spec.kind == "supplementary":
        v = _point(cx, cy, 18, tilt - 90)  # vertex below centre, the ray has room above
        c.draw.line([_point(*v, 60, tilt), _point(*v, 60, tilt + 180)], fill=INK, width=LINE)
        mirrored = rng.random() < 0.5  # angle 1 on the right or on the left of the ray
        ray_deg = tilt + (180 - x if mirrored else x)
        c.ray(v, ray_deg, 62)
        one_start, two_start = (ray_deg, tilt) if mirrored else (tilt, ray_deg)
        c.label(v, one_start, x, _label_radius(x, 20, 42), "1")
        c.label(v, two_start, 180 - x, 22, "2")
    elif spec.kind == "complementary":
        v = _point(cx, cy, 46, tilt + 225)  # vertex near the lower-left corner
        c.ray(v, tilt, 80)
        c.ray(v, tilt + 90, 80)
        s = 16  # square corner mark
        corner = [v, _point(*v, s, tilt), _point(*_point(*v, s, tilt), s, tilt + 90), _point(*v, s, tilt + 90)]
        c.draw.line(corner[1:], fill=INK, width=4)
        mirrored = rng.random() < 0.5  # angle 1 next to one arm or the other
        ray_deg = tilt + (90 - x if mirrored else x)
        c.ray(v, ray_deg, 80)
        one_start, two_start = (ray_deg, tilt) if mirrored else (tilt, ray_deg)
        c.label(v, one_start, x, _label_radius(x, 30, 50), "1")
        c.label(v, two_start, 90 - x, _label_radius(90 - x, 30, 50), "2")
    else:  # central
        radius = 48
        c.draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=INK, width=LINE - 1)
        up = 90 + tilt
        b, d = _point(cx, cy, radius, up - x), _point(cx, cy, radius, up + x)
        a_deg = up + 180 + rng.uniform(-20, 20)  # A on the major arc: inscribed angle = x
        a = _point(cx, cy, radius, a_deg)
        for end in (b, d):
            c.draw.line([a, end], fill=INK, width=LINE)
            c.draw.line([(cx, cy), end], fill=INK, width=LINE)
        c.draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=INK)  # the centre O
        c.label((cx, cy), up - x, 2 * x, _label_radius(2 * x, 16, 30), "2")
        # The inscribed angle's bisector points at the midpoint of arc BD.
        mid = _point(cx, cy, radius, up)
        bisector = math.degrees(math.atan2(a[1] - mid[1], mid[0] - a[0]))
        c.label(a, bisector - x / 2, x, _label_radius(x, 18, 36), "1")
    return c.image


# --- writing ------------------------------------------------------------------------------------
def _question_text(spec: Spec) -> str:
    choices = "\n".join(f"{letter}:{value}°" for letter, value in zip(LETTERS, spec.choices))
    return f"\n{INSTRUCTION}\nQuestion:{QUESTION.format(x=spec.x)}\nChoices:\n{choices}"


def build(out_dir: Path, split: str, n: int, seed: int, types: Sequence[str] | None = None,
          x_values: Sequence[int] = X_VALUES, id_base: int | None = None) -> None:
    """Write `n` items of `split` under out_dir/geoqa in the G-LLaVA layout, deterministically
    (ids from `id_base`, default 0 for test and TRAIN_ID_OFFSET for train)."""
    kinds = tuple(types) if types else TYPES
    unknown = [k for k in kinds if k not in TYPES]
    if unknown:
        raise ValueError(f"unknown GeoQA types {unknown}; known: {', '.join(TYPES)}")
    root = Path(out_dir) / "geoqa"
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    specs = _plan(split, n, seed, kinds, x_values, id_base)
    questions, answers, meta = [], [], []
    for spec in specs:
        image = f"{split}/{spec.qid}.png"
        # Palette PNG: a few colours, a KB or two per diagram, byte-identical across runs.
        _draw(spec).quantize(colors=16, dither=0).save(root / "images" / image, optimize=True)
        questions.append({"question_id": spec.qid, "image": image, "text": _question_text(spec)})
        answers.append({"question_id": spec.qid, "text": spec.gold_letter})
        meta.append(
            {"question_id": spec.qid, "type": spec.kind, "x": spec.x, "answer_value": answer_value(spec.kind, spec.x)}
        )
    for name, rows in (("questions", questions), ("answers", answers), ("meta", meta)):
        with (root / f"{split}_{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=True) + "\n" for row in rows)
