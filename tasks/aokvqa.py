"""A-OKVQA: knowledge-based VQA over COCO, multiple choice and direct answer.

Paper: Schwenk et al., "A-OKVQA: A Benchmark for Visual Question Answering using World
Knowledge" (ECCV 2022). Data: the official `aokvqa_v1p0_{val,train}.json` (the public test
split has no answers, so val is the evaluation split, as in the paper and in lmms-eval) and
COCO 2017 images `coco/{val2017,train2017}/{image_id:012d}.jpg`.

Rules (the official `eval_predictions.py`):
- multiple choice: correct iff the predicted choice is `choices[correct_choice_idx]`;
- direct answer: min(1, #direct_answers equal to the prediction / 3), questions with
  `difficult_direct_answer` true are left out. The official script compares the raw string;
  here, by default, prediction and answers are both put through the VQA normalisation
  (tasks/vqa_normalize.py) first, so "Two." matches "2"; `--compat official-raw` compares the
  stripped raw prediction to the raw answers instead.

MC modes (`--mc-mode`):
- generate (default): the choices are listed "(A) .." and the model answers with a letter;
- likelihood (as MLLM-DataEngine scored A-OKVQA): the prompt is the question alone plus
  "Answer the question using a single word or phrase."; the backend scores each choice text
  as the continuation of that prompt by mean token loss and the lowest-loss choice text is
  the output.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.core.task import Split, Task, read_json, require_file
from harness.core.types import Item
from tasks.vqa_normalize import normalize_answer

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
SHORT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
LETTERS = "ABCDEFGHIJ"
DATA_LAYOUT = (
    "aokvqa/aokvqa_v1p0_{val,train}.json, coco/{val2017,train2017}/<image_id:012d>.jpg "
    "(val is the test split)"
)
REAL_CATEGORY = "aokvqa"  # real rows carry no question type; bundled rows add `question_type`

# (annotation file stem, COCO image folder) per harness split.
_SPLIT_FILES = {"test": ("val", "val2017"), "train": ("train", "train2017")}


# --- loading ---------------------------------------------------------------------------------
def annotation_path(data_dir: Path, split: Split) -> Path:
    return data_dir / "aokvqa" / f"aokvqa_v1p0_{_SPLIT_FILES[split][0]}.json"


def image_path(data_dir: Path, split: Split, image_id: int) -> Path:
    return data_dir / "coco" / _SPLIT_FILES[split][1] / f"{image_id:012d}.jpg"


def _bad_row(path: Path, index: int, what: str) -> HarnessError:
    return HarnessError(f"{path}: row {index}: {what}; fix the row or use the official A-OKVQA file")


def _check_row(row: Any, path: Path, index: int) -> dict[str, Any]:
    """Validate the keys both task variants need; a bad row is an error naming it."""
    if not isinstance(row, dict):
        raise _bad_row(path, index, "expected a JSON object")
    for key, kind in (("question_id", str), ("question", str), ("image_id", int), ("choices", list)):
        if not isinstance(row.get(key), kind) or isinstance(row.get(key), bool):
            raise _bad_row(path, index, f"`{key}` missing or not a {kind.__name__}")
    if len(row["choices"]) < 2 or not all(isinstance(c, str) for c in row["choices"]):
        raise _bad_row(path, index, "`choices` must be a list of at least 2 strings")
    if len(row["choices"]) > len(LETTERS):
        raise _bad_row(path, index, f"more than {len(LETTERS)} choices")
    return row


def load_rows(data_dir: Path, split: Split, task_name: str) -> tuple[Path, list[dict[str, Any]]]:
    path = require_file(annotation_path(data_dir, split), task_name)
    rows = read_json(path)
    if not isinstance(rows, list):
        raise HarnessError(f"{path}: expected a JSON list of questions (the official A-OKVQA layout)")
    rows = [_check_row(row, path, i) for i, row in enumerate(rows)]
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if row["question_id"] in seen:
            raise _bad_row(path, i, f"duplicate question_id {row['question_id']!r}")
        seen.add(row["question_id"])
    return path, rows


def _base_metadata(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "image_id": row["image_id"],
        "rationales": list(row.get("rationales") or []),
        "difficult_direct_answer": bool(row.get("difficult_direct_answer", False)),
    }


# --- multiple choice -------------------------------------------------------------------------
def _norm_choice(text: str) -> str:
    return " ".join(text.strip().strip(".").lower().split())


# Explicit answer phrases: "answer is B", "Answer: (B)", "the answer is B."
_ANSWER_PHRASE = re.compile(r"\banswer\b(?:\s+is)?\s*:?\s*\(?([A-J])\)?(?=$|[\s.,;:!)])", re.IGNORECASE)
# The whole reply is a letter: "B", "(B)", "B.", "B)", "B:"
_LONE_LETTER = re.compile(r"^\(?([A-J])\)?[.:)]?$")
# The reply opens with a letter and a delimiter: "B. blue", "(B) blue", "B) blue", "B: blue"
_LEADING_LETTER = re.compile(r"^(?:\(([A-J])\)|([A-J])[.:)])(?=\s|$)")
_PAREN_LETTER = re.compile(r"\(([A-J])\)")


def extract_choice_letter(output: str, choices: tuple[str, ...]) -> str | None:
    """The letter of the choice a reply names, or None.

    Tried in order: the reply is exactly one choice's text (likelihood mode stores that); a
    lone or leading letter; "answer is B" / "Answer: B"; one distinct "(B)" anywhere
    ("blue (B)", the training target); finally the text of exactly one choice inside the
    reply. Bare letters must be capitals, so the article in "A red circle" is not read as A.
    """
    text = output.strip()
    if not text:
        return None
    letters = LETTERS[: len(choices)]
    by_text = {_norm_choice(c): letters[i] for i, c in enumerate(choices)}
    if _norm_choice(text) in by_text:
        return by_text[_norm_choice(text)]

    def valid(letter: str | None) -> str | None:
        return letter if letter and letter in letters else None

    in_parens = {g for g in _PAREN_LETTER.findall(text) if g in letters}
    first_line = text.splitlines()[0].strip()
    m = _LONE_LETTER.match(first_line) or _LEADING_LETTER.match(first_line)
    if m:
        letter = next(g for g in m.groups() if g)
        return valid(letter) if in_parens <= {letter} else None  # "(A) or (B)" hedges
    m = _ANSWER_PHRASE.search(text)
    if m and m.group(1).isupper():
        return valid(m.group(1))
    if len(in_parens) == 1:
        return in_parens.pop()
    lowered = text.lower()
    named = [
        letters[i] for i, c in enumerate(choices)
        if c.strip() and re.search(rf"(?<!\w){re.escape(c.strip().lower())}(?!\w)", lowered)
    ]
    return named[0] if len(named) == 1 else None


class AOKVQAMultipleChoice(Task):
    name = "aokvqa_mc"
    description = "A-OKVQA multiple choice (val): pick one of 4 choices; accuracy."
    data_layout = DATA_LAYOUT
    options = {"mc_mode": ("generate", "likelihood")}
    option_help = {"mc_mode": "multiple-choice mode"}
    max_new_tokens = 24
    synth, synth_sizes, synth_dirs = "tasks.synth.aokvqa", (300, 600), ("aokvqa", "coco")
    data_engine = True
    lmms_source = ("aokvqa/aokvqa_v1p0_val.json", "question_id")

    @property  # depends on --mc-mode, so it is per instance
    def request_type(self) -> str:  # type: ignore[override]
        return "choice_likelihood" if self.opts["mc_mode"] == "likelihood" else "generate"

    def load(self, data_dir: Path, split: Split = "test") -> list[Item]:
        path, rows = load_rows(data_dir, split, self.name)
        items = []
        for i, row in enumerate(rows):
            gold = row.get("correct_choice_idx")
            if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(row["choices"]):
                raise _bad_row(path, i, "`correct_choice_idx` missing or not an index into `choices`")
            items.append(Item(
                id=row["question_id"],
                question=row["question"],
                target=LETTERS[gold],
                choices=tuple(row["choices"]),
                images=(image_path(data_dir, split, row["image_id"]),),
                category=row.get("question_type") or REAL_CATEGORY,
                metadata={**_base_metadata(row), "correct_choice_idx": gold},
            ))
        return items

    def prompt(self, item: Item) -> str:
        if self.request_type == "choice_likelihood":
            return f"{item.question}\n{SHORT_ANSWER_INSTRUCTION}"
        options = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(item.choices))
        return f"{item.question}\n{options}\n{MC_INSTRUCTION}"

    def extract(self, output: str, item: Item) -> str | None:
        return extract_choice_letter(output, item.choices)

    def score(self, extracted: str | None, item: Item) -> float:
        return float(extracted is not None and extracted == item.target)

    def target_text(self, item: Item) -> str:
        # The choice's own text, not its letter: extraction maps it back to the letter, and a
        # small model learns "what is in the image" far sooner than "which letter names it".
        return item.choices[LETTERS.index(item.target)]


# --- direct answer ---------------------------------------------------------------------------
def vqa_accuracy(prediction: str, answers: tuple[str, ...]) -> float:
    """A-OKVQA's form of VQA accuracy: min(1, matching annotators / 3)."""
    return min(1.0, sum(a == prediction for a in answers) / 3.0)


class AOKVQADirectAnswer(Task):
    name = "aokvqa_da"
    description = "A-OKVQA direct answer (val, difficult questions excluded): VQA accuracy over 10 answers."
    data_layout = DATA_LAYOUT
    options = {"compat": ("none", "official-raw")}
    option_help = {"compat": "compatibility rule"}
    max_new_tokens = 16
    lmms_source = ("aokvqa/aokvqa_v1p0_val.json", "question_id")  # data built by aokvqa_mc's generator

    def load(self, data_dir: Path, split: Split = "test") -> list[Item]:
        path, rows = load_rows(data_dir, split, self.name)
        kept: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            answers = row.get("direct_answers")
            if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
                raise _bad_row(path, i, "`direct_answers` missing or not a list of strings")
            # The official evaluation drops these from the direct-answer score.
            if row.get("difficult_direct_answer") is not True:
                kept.append(row)
        excluded = len(rows) - len(kept)
        return [
            Item(
                id=row["question_id"],
                question=row["question"],
                target=tuple(row["direct_answers"]),
                choices=tuple(row["choices"]),
                images=(image_path(data_dir, split, row["image_id"]),),
                category=row.get("question_type") or REAL_CATEGORY,
                # the file-level count rides on each item so `extras` needs no loader state
                metadata={**_base_metadata(row), "difficult_excluded_in_file": excluded},
            )
            for row in kept
        ]

    def excluded_ids(self, data_dir: Path, split: Split = "test") -> frozenset[str]:
        _, rows = load_rows(data_dir, split, self.name)
        return frozenset(str(row["question_id"]) for row in rows if row.get("difficult_direct_answer") is True)

    def prompt(self, item: Item) -> str:
        return f"{item.question}\n{SHORT_ANSWER_INSTRUCTION}"

    def _raw(self) -> bool:
        return self.opts["compat"] == "official-raw"

    def extract(self, output: str, item: Item) -> str | None:
        answer = output.strip() if self._raw() else normalize_answer(output)
        return answer or None

    def score(self, extracted: str | None, item: Item) -> float:
        if extracted is None:
            return 0.0
        answers = item.target if self._raw() else tuple(normalize_answer(a) for a in item.target)
        return vqa_accuracy(extracted, answers)

    def target_text(self, item: Item) -> str:
        """The most common answer; in the default mode answers count together when they
        normalise alike ("2" and "two"), and the group's most common spelling is returned."""
        if self._raw():
            return Counter(item.target).most_common(1)[0][0]
        groups: dict[str, Counter[str]] = {}
        for a in item.target:
            groups.setdefault(normalize_answer(a), Counter())[a] += 1
        best = max(groups.values(), key=lambda c: sum(c.values()))  # first group wins ties
        return best.most_common(1)[0][0]

    def extras(self, items: dict[str, Item], scores: dict[str, list[float]]) -> dict[str, Any]:
        first = next(iter(items.values()), None)
        excluded = first.metadata.get("difficult_excluded_in_file", 0) if first else 0
        return {"difficult_excluded": excluded}
