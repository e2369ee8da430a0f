"""LMUData multiple-choice TSVs (VLMEvalKit's dataset files) read generically, and the task
`lmudata_mc` that evaluates any of them.

A file has columns index, question, A, B (C, D, ... as the file has them; an empty cell means no
option), answer (the letter) and image (base64, or a short cell naming another row's index whose
image it reuses); optional hint, category, l2-category, split, source. MMBench, SEEDBench_IMG,
AI2D_TEST, ScienceQA_TEST, MMStar, ... share this layout.

    harness eval --ckpt tiny --tasks lmudata_mc --tsv SEEDBench_IMG     # <data-dir>/LMUData/SEEDBench_IMG.tsv
    harness eval --ckpt tiny --tasks lmudata_mc --tsv /data/MMStar.tsv   # any path to such a file

Prompt (hint, question, lettered options, "Answer with the option's letter ...") and answer
extraction are MMBench's (tasks/mmbench.py, whose docstring lists how the extraction differs from
VLMEvalKit's `can_infer`: no GPT judge, no random fallback). Each row is scored on its own (plain
accuracy); MMBench's CircularEval stays with the `mmbench` task. When the file holds circular
copies (an index >= 1,000,000), rows are grouped by index % 1,000,000: the score stays the accuracy
over rows, but the CI resamples whole questions (copies of one question are not independent), and
summary.json says so (`clustered`, `clusters`). Categories: `category`, and `l2-category` reported
per category in summary.json.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.core import files
from harness.errors import HarnessError
from harness.core.task import Split, Task, Unit, per_category, require_file
from harness.core.types import Item

REQUIRED = ("index", "question", "answer", "image", "A", "B")
INSTRUCTION = "Answer with the option's letter from the given choices directly."
# Capital letters that are also English words: counted as options only when marked as letters.
_WORD_LETTERS = frozenset("AI")
COPY_STRIDE = 1_000_000  # MMBench's circular copy j of question g has index g + j * COPY_STRIDE
_IMAGE_REF_MAX = 64  # VLMEvalKit's rule: an image cell this short names another row's index

_LETTER = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])")
_ANSWER_CUE = re.compile(r"(?i:\banswer\b(?:\s+is)?\s*[:：]?\s*)[(\[*\s]*([A-Z])(?![A-Za-z0-9])")
_OPTION_CUE = re.compile(r"(?i:\b(?:option|choice)\s*)$")
_AFTER_MARK = re.compile(r"^[*\s]*(?:[.):\],;]|$)")
_MASK = " <option> "


def _missing(cell: str | None) -> bool:
    return cell is None or not cell.strip() or cell.strip() == "nan"


def read_tsv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of an LMUData TSV (csv with a raised field limit: base64 cells are large)."""
    header, rows = files.read_tsv(path, hint="expected the LMUData TSV layout")
    lacking = [c for c in REQUIRED if c not in header]
    if lacking:
        fix = (
            "test-split files hold no answers: use a dev/val file (e.g. MMBench_DEV_EN.tsv)"
            if lacking == ["answer"]
            else "expected the LMUData columns index, question, A, B, ..., answer, image"
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


def row_item(path: Path, row: dict[str, str], index: int, letters_all: list[str], image: bytes | None) -> Item:
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
    return Item(
        id=str(index),
        question=question,
        target=answer,
        choices=tuple(row[c].strip() for c in letters),
        images=(image,) if image is not None else (),
        category=(row.get("category") or "").strip(),
        metadata={
            "letters": letters,
            "hint": hint,
            "l2_category": (row.get("l2-category") or "").strip(),
            "split": (row.get("split") or "").strip(),
            "source": (row.get("source") or "").strip(),
            "index": index,
        },
    )


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


def read_items(path: Path) -> list[Item]:
    """One Item per row of an LMUData multiple-choice TSV (id = the `index` column)."""
    header, rows = read_tsv(path)
    letters_all = [c for c in header if len(c) == 1 and "A" <= c <= "Z"]
    indices: list[int] = []
    for n, row in enumerate(rows, 1):
        try:
            indices.append(int(float((row.get("index") or "").strip())))
        except ValueError:
            raise HarnessError(f"{path}: data row {n}: index {row.get('index')!r} is not an integer") from None
    seen: set[int] = set()
    for idx in indices:
        if idx in seen:
            raise HarnessError(f"{path}: index {idx} appears more than once; each row needs its own index")
        seen.add(idx)
    images = _decode_images(path, rows, indices)
    return [row_item(path, row, idx, letters_all, images[idx]) for row, idx in zip(rows, indices)]


def letters_of(item: Item) -> tuple[str, ...]:
    return tuple(item.metadata.get("letters") or "ABCDEFGHIJ"[: len(item.choices)])


def mc_prompt(item: Item) -> str:
    """Hint, question, lettered options and the instruction (MMBench's prompt)."""
    lines = []
    if item.metadata.get("hint"):
        lines.append(f"Hint: {item.metadata['hint']}")
    lines.append(f"Question: {item.question}")
    lines.append("Options:")
    lines.extend(f"{letter}. {text}" for letter, text in zip(letters_of(item), item.choices))
    lines.append(INSTRUCTION)
    return "\n".join(lines)


def resolve_tsv(data_dir: Path, tsv: str) -> Path:
    """`--tsv NAME` is <data-dir>/LMUData/NAME.tsv (VLMEvalKit's LMUData folder); a .tsv path is itself."""
    if tsv.endswith(".tsv") or "/" in tsv:
        return require_file(Path(tsv).expanduser().resolve(), "lmudata_mc", "pass --tsv a path to an LMUData .tsv file")
    return require_file(Path(data_dir) / "LMUData" / f"{tsv}.tsv", "lmudata_mc",
                        "put the file in <data-dir>/LMUData/ or pass --tsv a path to it")


class LMUDataMC(Task):
    name = "lmudata_mc"
    description = "any LMUData multiple-choice TSV (VLMEvalKit layout): accuracy per row, MMBench's prompt and extraction"
    data_layout = "LMUData/<NAME>.tsv (--tsv NAME), or --tsv /path/to/file.tsv; columns index, question, A.., answer, image"
    # Free-form: NAME is a placeholder, not a default; the task requires --tsv.
    options = {"tsv": ("NAME",)}
    option_help = {"tsv": "LMUData TSV: NAME for <data-dir>/LMUData/NAME.tsv, or a path to a .tsv file"}
    lmu_tsv = True
    request_type = "generate"
    max_new_tokens = 32

    def __init__(self, tsv: str | None = None, **opts: str) -> None:
        super().__init__(**opts)
        if not tsv or tsv == "NAME":
            raise HarnessError("task lmudata_mc needs --tsv NAME (<data-dir>/LMUData/NAME.tsv) or --tsv PATH.tsv")
        self.tsv = tsv
        self.opts["tsv"] = re.sub(r"[^\w.-]+", "_", Path(tsv).stem if tsv.endswith(".tsv") else tsv)

    def load(self, data_dir: Path, split: Split = "test") -> list[Item]:
        if split == "train":
            raise HarnessError("lmudata_mc has no train split; LMUData files are evaluation sets")
        path = resolve_tsv(data_dir, self.tsv)
        items = read_items(path)
        circular = any(it.metadata["index"] >= COPY_STRIDE for it in items)
        return [replace(it, group=str(it.metadata["index"] % COPY_STRIDE) if circular else it.group,
                        metadata={**it.metadata, "source_file": str(path)}) for it in items]

    def lmu_file(self, data_dir: Path) -> Path:
        return resolve_tsv(data_dir, self.tsv)

    @classmethod
    def reopen(cls, options: dict[str, str], record_extras: dict[str, Any]) -> LMUDataMC:
        """A run of `--tsv PATH` records only the file's stem as its option; the file is `source_file`."""
        return cls(tsv=record_extras.get("source_file") or options.get("tsv"))

    def prompt(self, item: Item) -> str:
        return mc_prompt(item)

    def extract(self, output: str, item: Item) -> str | None:
        return extract_option(output, letters_of(item), item.choices)

    def score(self, extracted: str | None, item: Item) -> float:
        return 1.0 if extracted is not None and extracted == item.target else 0.0

    def target_text(self, item: Item) -> str:
        return item.choices[letters_of(item).index(item.target)]

    def units(self, items: dict[str, Item], scores: dict[str, list[float]]) -> list[Unit]:
        return [
            Unit(i, sum(s) / len(s), items[i].category, {"l2_category": items[i].metadata.get("l2_category", "")},
                 cluster=items[i].group or None)
            for i, s in scores.items() if s
        ]

    def extras(self, items: dict[str, Item], scores: dict[str, list[float]]) -> dict[str, Any]:
        first = next(iter(items.values()), None)
        circular = any(it.group for it in items.values())
        return {
            "clustered": (f"circular copies grouped by index % {COPY_STRIDE}: the CI resamples whole questions"
                          if circular else None),
            "per_l2_category": per_category(self.units(items, scores), "l2_category"),
            "source_file": first.metadata.get("source_file") if first else None,
        }
