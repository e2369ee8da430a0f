"""MMBench (dev, English) with CircularEval (Liu et al., "MMBench: Is Your Multi-modal Model an
All-around Player?", ECCV 2024).

Data: the VLMEvalKit / LMUData TSV `mmbench/MMBench_DEV_EN.tsv` with columns index, question,
hint, A, B, C, D (E on some files; an empty cell means no option), answer, category, image
(base64 JPEG, or a short cell holding another row's index whose image it reuses), source,
l2-category, comment, split. The bundled train split is `mmbench/MMBench_TRAIN_EN.tsv`.

Circular evaluation: the copies of one question share g_index = index % 1_000_000 and hold the
same options rotated, so copy j of a k-option question lists option (i + j) % k at letter i. The
official dev file already holds the copies; a question found without them gets them built here.
A question scores 1 only when every copy is answered right; `vanilla` scores the index < 1e6 copy.

Answer extraction is a deterministic rule in the spirit of VLMEvalKit's `can_infer` (one option
letter, else one option text). It differs on purpose:
- no GPT judge and no random fallback: an output the rule cannot read is unparsed (scored 0),
  as VLMEvalKit's `exact_matching` mode does;
- "A" and "I" are English words, so they count as option letters only when marked as letters:
  "(A)", "A.", "A)", "A:", "A," , "option A", or at the end of the output. VLMEvalKit instead
  rejects any output longer than three tokens holding "A" (in current versions only when the
  VERBOSE variable is set, so in practice an article "A" is read as option A);
- an explicit "answer is X" / "answer: X" wins when several letters appear (the last one counts);
- option texts holding a standalone capital ("Solution A") are masked before letters are read,
  so the output "Solution A" picks the option with that text, not option A;
- option texts match on word boundaries, a text contained in a longer matched option yields to
  it ("red" vs "dark red"), and there is no output-length cap.

    harness eval --task mmbench [--data-dir D] ...
"""
from __future__ import annotations

import base64
import binascii
import csv
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.task import Split, Task, Unit, per_category, require_file
from harness.types import Item

COPY_STRIDE = 1_000_000  # circular copy j of question g has index g + j * COPY_STRIDE
FILES = {"test": "MMBench_DEV_EN.tsv", "train": "MMBench_TRAIN_EN.tsv"}
# Column order of the real LMUData dev file (the bundled generator writes the same).
COLUMNS = (
    "index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
    "source", "l2-category", "comment", "split",
)
REQUIRED = ("index", "question", "answer", "image", "A", "B")
INSTRUCTION = "Answer with the option's letter from the given choices directly."
# Capital letters that are also English words: counted as options only when marked as letters.
_WORD_LETTERS = frozenset("AI")
_IMAGE_REF_MAX = 64  # VLMEvalKit's rule: an image cell this short names another row's index

_LETTER = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])")
_ANSWER_CUE = re.compile(r"(?i:\banswer\b(?:\s+is)?\s*[:：]?\s*)[(\[*\s]*([A-Z])(?![A-Za-z0-9])")
_OPTION_CUE = re.compile(r"(?i:\b(?:option|choice)\s*)$")
_AFTER_MARK = re.compile(r"^[*\s]*(?:[.):\],;]|$)")
_MASK = " <option> "


def _missing(cell: str | None) -> bool:
    return cell is None or not cell.strip() or cell.strip() == "nan"


def rotate_options(texts: tuple[str, ...], answer_pos: int, shift: int) -> tuple[tuple[str, ...], int]:
    """Circular copy `shift` of a question: option (i + shift) % k moves to slot i."""
    k = len(texts)
    return tuple(texts[(i + shift) % k] for i in range(k)), (answer_pos - shift) % k


def read_tsv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of an MMBench TSV (csv with a raised field limit: base64 cells are large)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (csv.Error, UnicodeDecodeError) as e:
        raise HarnessError(f"{path}: not a readable tab-separated file ({e}); expected the LMUData TSV layout") from None
    lacking = [c for c in REQUIRED if c not in header]
    if lacking:
        fix = (
            "MMBench test-split files hold no answers: use MMBench_DEV_EN.tsv"
            if lacking == ["answer"]
            else f"expected columns {', '.join(COLUMNS)}"
        )
        raise HarnessError(f"{path}: missing column(s) {', '.join(lacking)}; {fix}")
    return header, rows


def _decode_images(path: Path, rows: list[dict[str, str]], indices: list[int]) -> dict[int, bytes | None]:
    """index -> image bytes, resolving short cells that name another row (decoded once per image)."""
    cells = {idx: (row.get("image") or "").strip() for idx, row in zip(indices, rows)}
    decoded: dict[int, bytes | None] = {}
    for idx, cell in cells.items():
        source = idx
        if cell and len(cell) <= _IMAGE_REF_MAX and cell.isdigit():
            source = int(cell)
            if source not in cells or len(cells[source]) <= _IMAGE_REF_MAX:
                raise HarnessError(
                    f"{path}: row index {idx}: image cell refers to row {cell}, which holds no image; "
                    "fix the reference or put the base64 image in the cell"
                )
        if source not in decoded:
            raw = cells[source]
            try:
                # An image-less TSV still loads (None), e.g. for `harness score` on outputs.
                decoded[source] = base64.b64decode(raw, validate=True) if raw else None
            except (binascii.Error, ValueError):
                raise HarnessError(f"{path}: row index {source}: image cell is not valid base64; re-export the TSV") from None
        decoded[idx] = decoded[source]
    return decoded


def _row_item(path: Path, row: dict[str, str], index: int, letters_all: list[str], image: bytes | None) -> Item:
    where = f"{path}: row index {index}"
    letters = tuple(c for c in letters_all if not _missing(row.get(c)))
    if len(letters) < 2:
        raise HarnessError(f"{where}: fewer than two options; fill the option columns A, B, ...")
    answer = (row.get("answer") or "").strip()
    if answer not in letters:
        raise HarnessError(f"{where}: answer {answer!r} is not one of its options {', '.join(letters)}")
    question = (row.get("question") or "").strip()
    if not question:
        raise HarnessError(f"{where}: empty question")
    hint = "" if _missing(row.get("hint")) else row["hint"].strip()
    g_index = index % COPY_STRIDE
    return Item(
        id=str(index),
        question=question,
        target=answer,
        choices=tuple(row[c].strip() for c in letters),
        images=(image,) if image is not None else (),
        category=(row.get("category") or "").strip(),
        group=str(g_index),
        metadata={
            "letters": letters,
            "hint": hint,
            "l2_category": (row.get("l2-category") or "").strip(),
            "split": (row.get("split") or "").strip(),
            "source": (row.get("source") or "").strip(),
            "index": index,
            "g_index": g_index,
            "copy": index // COPY_STRIDE,
        },
    )


def build_circular_copies(base: Item) -> list[Item]:
    """Copies 1..k-1 of a question found without them (ids g + j * 1e6, same image and group)."""
    letters = base.metadata["letters"]
    g_index = base.metadata["g_index"]
    copies = []
    for shift in range(1, len(letters)):
        texts, pos = rotate_options(base.choices, letters.index(base.target), shift)
        index = g_index + shift * COPY_STRIDE
        copies.append(
            Item(
                id=str(index), question=base.question, target=letters[pos], choices=texts,
                images=base.images, category=base.category, group=base.group,
                metadata={**base.metadata, "index": index, "copy": shift, "built": True},
            )
        )
    return copies


def load_tsv(path: Path) -> list[Item]:
    """Items of one MMBench TSV, with circular copies built for questions that lack them."""
    header, rows = read_tsv(path)
    letters_all = [c for c in header if len(c) == 1 and "A" <= c <= "Z"]
    indices: list[int] = []
    for n, row in enumerate(rows, 2):  # line 1 is the header
        try:
            indices.append(int(float((row.get("index") or "").strip())))
        except ValueError:
            raise HarnessError(f"{path}: data row {n - 1}: index {row.get('index')!r} is not an integer") from None
    seen: set[int] = set()
    for idx in indices:
        if idx in seen:
            raise HarnessError(f"{path}: index {idx} appears more than once; each row needs its own index")
        seen.add(idx)
    images = _decode_images(path, rows, indices)
    items = [_row_item(path, row, idx, letters_all, images[idx]) for row, idx in zip(rows, indices)]
    by_group: dict[int, list[Item]] = defaultdict(list)
    for it in items:
        by_group[it.metadata["g_index"]].append(it)
    out: list[Item] = []
    for g_index, members in by_group.items():
        base = next((it for it in members if it.metadata["copy"] == 0), None)
        if base is None:
            raise HarnessError(
                f"{path}: circular copy index {members[0].id} has no base row {g_index}; add it or drop the copies"
            )
        out.extend(members)
        if len(members) == 1:
            out.extend(build_circular_copies(base))
    return out


def _marked(text: str, start: int, end: int) -> bool:
    """Is the word-like capital at text[start:end] written as an option letter?"""
    before = text[:start].rstrip("*")
    return before.endswith(("(", "[")) or bool(_AFTER_MARK.match(text[end:])) or bool(_OPTION_CUE.search(before))


def _letter_mentions(text: str, letters: tuple[str, ...]) -> list[str]:
    found = []
    for m in _LETTER.finditer(text):
        letter = m.group(1)
        if letter in letters and (letter not in _WORD_LETTERS or _marked(text, m.start(1), m.end(1))):
            found.append(letter)
    return found


def _option_pattern(text: str) -> re.Pattern[str] | None:
    core = text.strip().rstrip(".!?。").strip().lower()
    return re.compile(r"(?<!\w)" + re.escape(core) + r"(?!\w)") if core else None


def extract_option(output: str, letters: tuple[str, ...], options: tuple[str, ...]) -> str | None:
    """The option letter an output picks, or None (see the module docstring for the rule)."""
    text = output.strip()
    if not text:
        return None
    single = re.fullmatch(r"[\s(\[*]*([A-Za-z])[\s)\].:*]*", text)
    if single and single.group(1).upper() in letters:
        return single.group(1).upper()
    # Option texts that hold a capital letter ("Solution A") would read as letters: mask them.
    for option in sorted(options, key=len, reverse=True):
        if _LETTER.search(option) and option.strip():
            text = re.sub(re.escape(option.strip()), _MASK, text, flags=re.IGNORECASE)
    cued = [
        m.group(1) for m in _ANSWER_CUE.finditer(text)
        if m.group(1) in letters and (m.group(1) not in _WORD_LETTERS or _marked(text, m.start(1), m.end(1)))
    ]
    if cued:
        return cued[-1]
    mentioned = set(_letter_mentions(text, letters))
    if len(mentioned) == 1:
        return mentioned.pop()
    if mentioned:
        return None  # several letters and no "answer is": ambiguous
    low = output.lower()
    hits = {}
    for letter, option in zip(letters, options):
        pattern = _option_pattern(option)
        if pattern and pattern.search(low):
            hits[letter] = option.strip().rstrip(".!?。").strip().lower()
    # A matched option inside a longer matched option ("red" in "dark red") yields to it.
    kept = [k for k, v in hits.items() if not any(v != w and v in w for w in hits.values())]
    return kept[0] if len(kept) == 1 else None


class MMBench(Task):
    name = "mmbench"
    description = "MMBench dev (EN): multiple choice over 20 abilities, CircularEval (all rotations right)"
    data_layout = "mmbench/MMBench_DEV_EN.tsv (LMUData TSV, base64 images inside; train: MMBench_TRAIN_EN.tsv)"
    request_type = "generate"
    max_new_tokens = 32

    def load(self, data_dir: Path, split: Split = "test") -> list[Item]:
        path = Path(data_dir) / "mmbench" / FILES[split]
        hint = (
            "the train split exists only in the bundled mini-set (`python -m tasks.synth`)"
            if split == "train"
            else "download MMBench_DEV_EN.tsv (VLMEvalKit LMUData) into <data-dir>/mmbench/"
        )
        return load_tsv(require_file(path, self.name, hint))

    def prompt(self, item: Item) -> str:
        lines = []
        if item.metadata.get("hint"):
            lines.append(f"Hint: {item.metadata['hint']}")
        lines.append(f"Question: {item.question}")
        lines.append("Options:")
        lines.extend(f"{letter}. {text}" for letter, text in zip(self._letters(item), item.choices))
        lines.append(INSTRUCTION)
        return "\n".join(lines)

    def extract(self, output: str, item: Item) -> str | None:
        return extract_option(output, self._letters(item), item.choices)

    def score(self, extracted: str | None, item: Item) -> float:
        return 1.0 if extracted is not None and extracted == item.target else 0.0

    def target_text(self, item: Item) -> str:
        # The option's text (extraction maps it to its letter): the image-to-content skill is what
        # a small model learns first; the letter lookup comes later, if at all.
        return item.choices[self._letters(item).index(item.target)]

    def units(self, items: dict[str, Item], scores: dict[str, list[float]]) -> list[Unit]:
        """One unit per question: the minimum over its scored copies (all must be right)."""
        return [
            Unit(g, min(copy_scores), members[0].category, {"l2_category": members[0].metadata.get("l2_category", "")})
            for g, (members, copy_scores) in self._groups(items, scores).items()
        ]

    def extras(self, items: dict[str, Item], scores: dict[str, list[float]]) -> dict[str, Any]:
        circular = self.units(items, scores)
        vanilla = [
            Unit(it.cluster, _mean(scores[item_id]), it.category, {"l2_category": it.metadata.get("l2_category", "")})
            for item_id, it in ((i, items[i]) for i in scores if scores[i])
            if it.metadata.get("copy", 0) == 0
        ]
        scored_per_group = defaultdict(int)
        for item_id in scores:
            scored_per_group[items[item_id].cluster] += 1
        all_per_group = defaultdict(int)
        for it in items.values():
            all_per_group[it.cluster] += 1
        return {
            "circular": _percent(circular),
            "vanilla": _percent(vanilla),
            "circular_per_category": per_category(circular),
            "vanilla_per_category": per_category(vanilla),
            "circular_per_l2_category": per_category(circular, "l2_category"),
            "vanilla_per_l2_category": per_category(vanilla, "l2_category"),
            "questions": len(circular),
            # Questions scored on only some of their copies: their circular score is optimistic.
            "incomplete_questions": sum(1 for g, n in scored_per_group.items() if n < all_per_group[g]),
        }

    @staticmethod
    def _letters(item: Item) -> tuple[str, ...]:
        return tuple(item.metadata.get("letters") or "ABCDEFGHIJ"[: len(item.choices)])

    @staticmethod
    def _groups(items: dict[str, Item], scores: dict[str, list[float]]) -> dict[str, tuple[list[Item], list[float]]]:
        """g_index -> (scored copies, base first; each copy's mean score over samples)."""
        groups: dict[str, tuple[list[Item], list[float]]] = {}
        for item_id, s in scores.items():
            if not s:
                continue
            it = items[item_id]
            members, copy_scores = groups.setdefault(it.cluster, ([], []))
            members.append(it)
            copy_scores.append(_mean(s))
        for members, copy_scores in groups.values():
            order = sorted(range(len(members)), key=lambda i: members[i].metadata.get("copy", 0))
            members[:] = [members[i] for i in order]
            copy_scores[:] = [copy_scores[i] for i in order]
        return groups


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _percent(units: list[Unit]) -> float:
    return 100.0 * sum(u.score for u in units) / len(units) if units else 0.0
