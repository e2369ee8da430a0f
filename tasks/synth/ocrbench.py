"""Bundled OCRBench mini-set: big rendered words, numbers and formulas in OCRBench's format.

    from tasks.synth import ocrbench; ocrbench.build(Path("data"), "test", 300, seed=1)

Writes `ocrbench/OCRBench.json` (split "test") or `ocrbench/OCRBench_train.json` (split
"train"), a list of {dataset_name, id, image_path, question, answers, type} rows exactly as the
real file, plus `text_regions` ([{"text", "box": [x0, y0, x1, y1]}] in image pixels, for the
REMGCL treatment; the real readers ignore it), and 128x128 PNGs under
`ocrbench/OCRBench_Images/<image_path>`.

Types (TYPES, real OCRBench type names):
- Regular Text Recognition (IIIT5K / svt / IC13_857): a capitalised word of a 28-word
  vocabulary, "what is written in the image?";
- Digit String Recognition (ORAND): a 2-3 digit number, "what is the number in the image?";
- Handwritten Mathematical Expression Recognition (HME100k): "3+5", "7-2" or "4+1=5" drawn
  symbol by symbol on a wobbly baseline, answers [spaced LaTeX, compact] like the real rows.
Dark text on a light ground fills most of the width, at most 5 characters, so it stays legible
after a 64x64 resize; position, size and colours jitter a little.
"""
from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from harness.errors import HarnessError

REGULAR, DIGITS, FORMULA = (
    "Regular Text Recognition",
    "Digit String Recognition",
    "Handwritten Mathematical Expression Recognition",
)
TYPES: tuple[str, ...] = (REGULAR, DIGITS, FORMULA)

# No word is a substring of another (OCRBench scores by substring).
WORDS: tuple[str, ...] = (
    "STOP", "OPEN", "SALE", "EXIT", "CAFE", "BOOK", "PARK", "HOTEL", "BANK", "TAXI", "SHOP", "FOOD",
    "MILK", "ZOO", "GAS", "FIRE", "HOME", "LOVE", "MAP", "TEA", "PIZZA", "MUSIC", "CITY", "NEWS",
    "WEST", "BEER", "FISH", "GOLD",
)
REGULAR_DATASETS = ("IIIT5K", "svt", "IC13_857")
QUESTIONS = {
    REGULAR: "what is written in the image?",
    DIGITS: "what is the number in the image?",
    FORMULA: "Please write out the expression of the formula in the image using LaTeX format.",
}
SIZE = 128
INKS = ((20, 20, 20), (20, 30, 90), (90, 20, 20), (15, 70, 30))
GROUNDS = ((250, 250, 246), (240, 236, 222), (228, 236, 244), (244, 244, 244))
TRAIN_ID_OFFSET = 100000  # train ids never collide with test ids
_FILES = {"test": "OCRBench.json", "train": "OCRBench_train.json"}


@lru_cache(maxsize=None)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # Pillow's bundled scalable font: same on every machine


@lru_cache(maxsize=None)
def _ink(text: str, size: int):
    """The glyphs of `text` as an "L" mask cropped to the ink (so region boxes are tight)."""
    from PIL import Image, ImageDraw

    font = _font(size)
    left, top, right, bottom = font.getbbox(text, stroke_width=1)
    mask = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    # the stroke thickens the glyphs to >= 4 px at 128 px
    ImageDraw.Draw(mask).text((2 - left, 2 - top), text, font=font, fill=255, stroke_width=1, stroke_fill=255)
    return mask.crop(mask.getbbox())


def _fit(symbols: Sequence[str], max_width: int, max_height: int, gap: int) -> list[Any]:
    """Masks of the symbols at the largest font size where they fit side by side in the box."""
    for size in range(72, 12, -2):
        masks = [_ink(s, size) for s in symbols]
        width = sum(m.width for m in masks) + gap * (len(masks) - 1)
        if width <= max_width and max(m.height for m in masks) <= max_height:
            return masks
    return [_ink(s, 14) for s in symbols]


def _render(symbols: Sequence[str], rng: random.Random, handwritten: bool) -> tuple[Any, list[dict[str, Any]]]:
    """Draw the symbols in a row (one region each). `handwritten`: uneven gaps and a wobbly
    baseline; otherwise one word, one region."""
    from PIL import Image

    img = Image.new("RGB", (SIZE, SIZE), rng.choice(GROUNDS))
    ink = rng.choice(INKS)
    masks = _fit(symbols, rng.randint(100, 116), 64, gap=4 if handwritten else 0)
    gaps = [rng.randint(2, 7) if handwritten else 0 for _ in masks[1:]] + [0]
    total = sum(m.width for m in masks) + sum(gaps)
    x = (SIZE - total) // 2 + rng.randint(-4, 4)
    centre_y = SIZE // 2 + rng.randint(-10, 10)
    regions = []
    for sym, mask, gap in zip(symbols, masks, gaps):
        y = centre_y - mask.height // 2 + (rng.randint(-4, 4) if handwritten else 0)
        img.paste(ink, (x, y, x + mask.width, y + mask.height), mask)
        regions.append({"text": sym, "box": [x, y, x + mask.width, y + mask.height]})
        x += mask.width + gap
    return img, regions


def _formula(rng: random.Random) -> list[str]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    form = rng.choice(("sum", "difference", "equation"))
    if form == "sum":
        return [str(a), "+", str(b)]
    if form == "difference":
        a, b = max(a, b), min(a, b)
        return [str(a), "-", str(b)]
    a, b = rng.randint(1, 4), rng.randint(1, 5)
    return [str(a), "+", str(b), "=", str(a + b)]


def build(out_dir: Path, split: str, n: int, seed: int, types: Sequence[str] | None = None,
          id_base: int | None = None) -> None:
    if split not in _FILES:
        raise HarnessError(f"ocrbench synth: split must be test or train, not {split!r}")
    kinds = tuple(types) if types else TYPES
    unknown = [t for t in kinds if t not in TYPES]
    if unknown:
        raise HarnessError(f"ocrbench synth: unknown type(s) {', '.join(unknown)}; known: {', '.join(TYPES)}")
    root = Path(out_dir) / "ocrbench"
    rng = random.Random(f"ocrbench:{split}:{seed}")
    slots = [kinds[i % len(kinds)] for i in range(n)]
    rng.shuffle(slots)
    offset = id_base if id_base is not None else TRAIN_ID_OFFSET if split == "train" else 0
    rows = []
    for i, kind in enumerate(slots):
        item_id = offset + i
        answers: str | list[str]
        if kind == REGULAR:
            dataset = rng.choice(REGULAR_DATASETS)
            answers = rng.choice(WORDS)
            img, regions = _render([answers], rng, handwritten=False)
        elif kind == DIGITS:
            dataset = "ORAND"
            answers = str(rng.randint(10, 999))
            img, regions = _render([answers], rng, handwritten=False)
        else:
            dataset = "HME100k"
            symbols = _formula(rng)
            answers = [" ".join(symbols), "".join(symbols)]  # like the real rows: spaced, then compact
            img, regions = _render(symbols, rng, handwritten=True)
        image_path = f"{dataset}/{split}/{item_id}.png"
        (root / "OCRBench_Images" / image_path).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / "OCRBench_Images" / image_path, "PNG", optimize=True)
        rows.append({
            "dataset_name": dataset,
            "id": item_id,
            "image_path": image_path,
            "question": QUESTIONS[kind],
            "answers": answers,
            "type": kind,
            "text_regions": regions,
        })
    root.mkdir(parents=True, exist_ok=True)
    text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n"
    (root / _FILES[split]).write_text(text, encoding="utf-8")
