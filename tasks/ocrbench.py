"""OCRBench: 1000 OCR questions over 29 datasets, 10 question types, scored out of 1000 points.

Paper: Liu et al., "OCRBench: On the Hidden Mystery of OCR in Large Multimodal Models"
(2023). Data: `OCRBench.json` (dataset_name, id, image_path, question, answers, type) and
images under `OCRBench_Images/` from the MultimodalOCR repository.

Rule `ocrbench` (default; MultimodalOCR's OCRBench script): an item scores 1 when any
answer is a substring of the prediction, both lower-cased, stripped and with newlines as
spaces; for HME100k (LaTeX formulas) case is kept and all spaces are removed instead.
Rule `ocr_vqa`: the older MultimodalOCR text-VQA rule, both sides VQA-normalised
(tasks/vqa_normalize.py) and a whole-word match of any answer in the prediction; HME100k
keeps the older formula rule (whitespace-free substring, case kept), as that script did.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.core.task import Split, Task, Unit, per_category, read_json, require_file
from harness.core.types import Item
from tasks.vqa_normalize import normalize_answer

FORMULA_DATASET = "HME100k"
# The six types OCRBench sums into its "Text Recognition" line (out of 300).
RECOGNITION_TYPES = frozenset({
    "Regular Text Recognition", "Irregular Text Recognition", "Artistic Text Recognition",
    "Handwriting Recognition", "Digit String Recognition", "Non-Semantic Text Recognition",
})
_FILES = {"test": "OCRBench.json", "train": "OCRBench_train.json"}
_STR_KEYS = ("dataset_name", "image_path", "question", "type")


# --- the rules ---------------------------------------------------------------------------------
def _plain(text: str) -> str:
    return text.lower().strip().replace("\n", " ")


def _formula(text: str) -> str:
    return text.strip().replace("\n", " ").replace(" ", "")


def ocrbench_match(prediction: str, answers: tuple[str, ...], dataset_name: str) -> bool:
    """The OCRBench rule: any (non-empty) answer is a substring of the prediction."""
    clean = _formula if dataset_name == FORMULA_DATASET else _plain
    pred = clean(prediction)
    # An empty answer would match everything; the official script would count it, no real item has one.
    return any(a and a in pred for a in map(clean, answers))


def contains_word(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` not glued to a letter or digit on either side."""
    return bool(phrase) and re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def ocr_vqa_match(prediction: str, answers: tuple[str, ...], dataset_name: str) -> bool:
    """The older MultimodalOCR rule: VQA-normalised whole-word match (formula: no whitespace)."""
    if dataset_name == FORMULA_DATASET:
        squeeze = lambda s: re.sub(r"\s+", "", s)  # noqa: E731
        pred = squeeze(prediction)
        return any(squeeze(a) and squeeze(a) in pred for a in answers)
    pred = normalize_answer(prediction)
    return any(contains_word(pred, normalize_answer(a)) for a in answers)


_RULES = {"ocrbench": ocrbench_match, "ocr_vqa": ocr_vqa_match}


# --- loading ---------------------------------------------------------------------------------
def _item(row: Any, path: Path, index: int, images_dir: Path) -> Item:
    def bad(what: str) -> HarnessError:
        return HarnessError(f"{path}: row {index}: {what}; fix the row or use the official OCRBench.json")

    if not isinstance(row, dict):
        raise bad("expected a JSON object")
    for key in _STR_KEYS:
        if not isinstance(row.get(key), str):
            raise bad(f"`{key}` missing or not a string")
    if not isinstance(row.get("id"), (int, str)) or isinstance(row.get("id"), bool):
        raise bad("`id` missing or not an int/string")
    answers = row.get("answers")
    answers = [answers] if isinstance(answers, str) else answers
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise bad("`answers` must be a string or a non-empty list of strings")
    metadata: dict[str, Any] = {"dataset_name": row["dataset_name"], "image_path": row["image_path"]}
    if "text_regions" in row:  # bundled rows: where each text sits (for REMGCL)
        metadata["text_regions"] = row["text_regions"]
    return Item(
        # `id` alone repeats across sub-datasets; the pair is unique
        id=f"{row['dataset_name']}/{row['id']}",
        question=row["question"],
        target=tuple(answers),
        images=(images_dir / row["image_path"],),
        category=row["type"],
        metadata=metadata,
    )


class OCRBench(Task):
    name = "ocrbench"
    description = "OCRBench: text recognition, text VQA, KIE and formulas; substring match, points out of 1000."
    data_layout = "ocrbench/OCRBench.json, ocrbench/OCRBench_Images/<image_path> (train: ocrbench/OCRBench_train.json)"
    options = {"rule": ("ocrbench", "ocr_vqa")}
    option_help = {"rule": "scoring rule"}
    synth, synth_sizes, synth_dirs = "tasks.synth.ocrbench", (300, 600), ("ocrbench",)
    data_engine = True
    max_new_tokens = 64

    def load(self, data_dir: Path, split: Split = "test") -> list[Item]:
        path = require_file(data_dir / "ocrbench" / _FILES[split], self.name)
        rows = read_json(path)
        if not isinstance(rows, list):
            raise HarnessError(f"{path}: expected a JSON list of questions (the OCRBench.json layout)")
        images_dir = data_dir / "ocrbench" / "OCRBench_Images"
        items = [_item(row, path, i, images_dir) for i, row in enumerate(rows)]
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.id in seen:
                raise HarnessError(f"{path}: row {i}: duplicate dataset_name/id {item.id!r}; ids must be unique per dataset")
            seen.add(item.id)
        return items

    def prompt(self, item: Item) -> str:
        return item.question  # OCRBench passes the question as is

    def extract(self, output: str, item: Item) -> str | None:
        return output.strip() or None

    def score(self, extracted: str | None, item: Item) -> float:
        if extracted is None:
            return 0.0
        return float(_RULES[self.opts["rule"]](extracted, item.target, item.metadata["dataset_name"]))

    def target_text(self, item: Item) -> str:
        return item.target[0].strip()

    def units(self, items: dict[str, Item], scores: dict[str, list[float]]) -> list[Unit]:
        return [
            Unit(item_id, sum(s) / len(s), items[item_id].category,
                 extra={"dataset_name": items[item_id].metadata["dataset_name"]})
            for item_id, s in scores.items()
            if s
        ]

    def extras(self, items: dict[str, Item], scores: dict[str, list[float]]) -> dict[str, Any]:
        units = self.units(items, scores)
        by_type_points: dict[str, float] = {}
        for u in units:
            by_type_points[u.category] = by_type_points.get(u.category, 0.0) + u.score
        return {
            "points": sum(u.score for u in units),  # out of len(units); 1000 on the full set
            "max_points": len(units),
            "text_recognition_points": sum(v for t, v in by_type_points.items() if t in RECOGNITION_TYPES),
            "type_points": dict(sorted(by_type_points.items())),
            "type_percent": per_category(units),
            "dataset_percent": per_category(units, key="dataset_name"),
        }
