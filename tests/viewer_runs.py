"""Scored runs in the real on-disk format (samples.jsonl + summary.json), without a model.

Outputs are chosen per item so tests know the truth: which items each run gets right, which
outputs are hostile markup, which are unparsed.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

from harness.core.record import summarize
from harness.core.scoring import data_hash, sample_record
from harness.core.files import atomic_write_json, atomic_write_jsonl
from harness.core.task import get_task

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "data"

HOSTILE = [
    "<script>document.title='pwned'</script>",
    '"><img src=x onerror=document.title=\'pwned\'>',
    "</textarea><b>bold</b>",
    "nul\x00byte",
    "rtl \u202eevil\u202c and \u2028line sep",
    "</script><script>document.title='pwned'</script>",
]


def write_run(run_dir: Path, task_name: str, outputs: Callable[[object, int], str], limit: int | None = None,
              k: int = 1, label: str = "ckpt", data_dir: Path = BUNDLED) -> Path:
    """Score `outputs(item, sample)` for the first `limit` items into run_dir, as `harness eval` would."""
    task = get_task(task_name)
    items = task.load(data_dir, "test")[:limit]
    records = [sample_record(task, it, s, outputs(it, s)) for it in items for s in range(k)]
    atomic_write_jsonl(run_dir / "samples.jsonl", records)
    summary = summarize(task, {it.id: it for it in items}, records, checkpoint={"name": label, "hash": "0"},
                        data={"dir": str(data_dir), "hash": data_hash(items)})
    atomic_write_json(run_dir / "summary.json", summary)
    return run_dir


def answer(item, right: bool) -> str:
    """A GeoQA/MMBench-style reply naming the gold letter, or another letter."""
    letters = "ABCD"[: max(2, len(item.choices))]
    gold = str(item.target)
    return f"Answer: {gold if right else next(c for c in letters if c != gold)}"


def coin_run(run_dir: Path, task: str, p: float | Callable[[Any], float], seed: int, limit: int | None = None,
             label: str = "ckpt", hostile: bool = False, k: int = 1) -> Path:
    """Each sample right with probability p (seeded; p may be a function of the item); with
    `hostile`, outputs carry markup attacks."""
    rng = random.Random(seed)

    def out(item, s: int) -> str:
        text = answer(item, rng.random() < (p(item) if callable(p) else p))
        if hostile and rng.random() < 0.5:
            text = HOSTILE[rng.randrange(len(HOSTILE))] + "\n" + text
        if rng.random() < 0.05:
            return "I cannot tell."  # unparsed
        return text

    return write_run(run_dir, task, out, limit=limit, label=label, k=k)


def large_geoqa(root: Path, n: int, seed: int = 0) -> Path:
    """A GeoQA-layout data dir of `n` items: the real GeoQA test questions (cycled) with a distinct
    generated diagram each (lines, points and labels on white, 336x336 like the bundled ones), so
    no thumbnail is shared and the page size is an honest upper bound."""
    import json

    from PIL import Image, ImageDraw

    real = REPO.parent / "shared" / "data" / "real" / "geoqa" / "gllava"
    source = real if (real / "test_questions.jsonl").is_file() else BUNDLED / "geoqa"
    questions = [json.loads(line) for line in (source / "test_questions.jsonl").open(encoding="utf-8")]
    answers = {json.loads(line)["question_id"]: json.loads(line)["text"]
               for line in (source / "test_answers.jsonl").open(encoding="utf-8")}
    rng = random.Random(seed)
    geo = root / "geoqa"
    (geo / "images" / "big").mkdir(parents=True, exist_ok=True)
    q_lines, a_lines = [], []
    for i in range(n):
        q = questions[i % len(questions)]
        img = Image.new("RGB", (336, 336), "white")
        draw = ImageDraw.Draw(img)
        points = [(rng.randrange(20, 316), rng.randrange(20, 316)) for _ in range(rng.randrange(3, 7))]
        for a, b in zip(points, points[1:] + points[:1]):
            draw.line([a, b], fill="black", width=2)
        for k, (x, y) in enumerate(points):
            draw.text((x + 4, y + 4), "ABCDEFG"[k], fill=rng.choice(["black", "red", "blue"]))
        if rng.random() < 0.5:
            x, y, r = rng.randrange(80, 256), rng.randrange(80, 256), rng.randrange(30, 80)
            draw.ellipse([x - r, y - r, x + r, y + r], outline="black", width=2)
        img.save(geo / "images" / "big" / f"{i}.png")
        q_lines.append(json.dumps({"question_id": i, "image": f"big/{i}.png", "text": q["text"]}))
        a_lines.append(json.dumps({"question_id": i, "text": answers[q["question_id"]]}))
    (geo / "test_questions.jsonl").write_text("\n".join(q_lines) + "\n", encoding="utf-8")
    (geo / "test_answers.jsonl").write_text("\n".join(a_lines) + "\n", encoding="utf-8")
    return root


def chain_of_thought_run(run_dir: Path, data_dir: Path, p: float, seed: int, label: str) -> Path:
    """GeoQA replies of realistic length (~150 characters of reasoning, then the answer)."""
    rng = random.Random(seed)

    def out(item, s: int) -> str:
        steps = " ".join(rng.choice(["Angle ABC equals angle BCD since AB is parallel to CD.",
                                     "The triangle is isosceles, so the base angles are equal.",
                                     "The angles on a straight line add up to 180 degrees.",
                                     "The central angle is twice the inscribed angle."]) for _ in range(2))
        return f"{steps} {answer(item, rng.random() < p)}"

    return write_run(run_dir, "geoqa", out, label=label, data_dir=data_dir)


def hostile_geoqa(root: Path, n: int = 6) -> Path:
    """The first `n` bundled GeoQA items with markup attacks in question text and category."""
    import json
    import shutil

    src, geo = BUNDLED / "geoqa", root / "geoqa"
    geo.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "images", geo / "images", dirs_exist_ok=True)
    for name in ("test_questions.jsonl", "test_answers.jsonl", "test_meta.jsonl"):
        rows = [json.loads(line) for line in (src / name).open(encoding="utf-8")][:n]
        for i, row in enumerate(rows):
            if name == "test_questions.jsonl":
                row["text"] = row["text"].replace("Question:", "Question:" + HOSTILE[i % len(HOSTILE)] + " ")
            if name == "test_meta.jsonl":
                row["type"] = HOSTILE[(i + 1) % len(HOSTILE)]
        (geo / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root
