"""Answer normalisation of the official VQA evaluation (Antol et al., 2015; vqaEval.py).

The VQA v2 / A-OKVQA / TextVQA family compares short answers after the same clean-up:
newlines and tabs become spaces; punctuation is removed (or turned into a space, see
`strip_punctuation`); a period not followed by a digit is dropped; the text is lower-cased,
number words zero..ten become digits, the articles a/an/the are removed and apostrophe-less
contractions get their apostrophes back ("dont" -> "don't"). A-OKVQA direct answers and the
older MultimodalOCR text-VQA rule (tasks/ocrbench.py, rule `ocr_vqa`) both use it.
"""
from __future__ import annotations

import itertools
import re

# Punctuation the official evaluation treats (note: no apostrophe, colon or period here;
# apostrophes are kept for contractions, periods are handled by _PERIOD_NOT_DECIMAL).
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")  # "1,000": the official rule then deletes punctuation
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")  # keeps "3.5", drops "end." and "u.s."

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})

# Canonical spellings of the contractions the official table restores. Words that are also
# ordinary English without the apostrophe ("we'll"/"well", "it's"/"its", "she'll"/"shell")
# are absent there and here; so are the "I" forms, whose capitalised keys in the official
# table never match after lower-casing.
_CONTRACTIONS = (
    "ain't", "aren't", "can't", "could've", "couldn't", "couldn't've", "didn't", "doesn't", "don't",
    "hadn't", "hadn't've", "hasn't", "haven't", "he'd", "he'd've", "he's", "how'd", "how'll",
    "how's", "isn't", "it'd", "it'd've", "it'll", "ma'am", "mightn't", "mightn't've", "might've",
    "mustn't", "must've", "needn't", "not've", "o'clock", "oughtn't", "'ow's'at", "shan't",
    "she'd've", "should've", "shouldn't", "shouldn't've", "somebody'd've", "somebody'll",
    "somebody's", "someone'd", "someone'd've", "someone'll", "someone's", "something'd",
    "something'd've", "something'll", "that's", "there'd", "there'd've", "there're", "there's",
    "they'd", "they'd've", "they'll", "they're", "they've", "'twas", "wasn't", "we'd've", "we've",
    "weren't", "what'll", "what're", "what's", "what've", "when's", "where'd", "where's",
    "where've", "who'd", "who'd've", "who'll", "who's", "who've", "why'll", "why're", "why's",
    "won't", "would've", "wouldn't", "wouldn't've", "y'all", "y'all'll", "y'all'd've", "you'd",
    "you'd've", "you'll", "you're", "you've",
)


def _contraction_table() -> dict[str, str]:
    """Every spelling with one or more of the apostrophes dropped -> the canonical spelling."""
    table: dict[str, str] = {}
    for canonical in _CONTRACTIONS:
        parts = canonical.split("'")
        n_gaps = len(parts) - 1
        for keep in itertools.product((True, False), repeat=n_gaps):
            if all(keep):
                continue  # the canonical form itself needs no mapping
            joined = parts[0] + "".join(("'" if k else "") + p for k, p in zip(keep, parts[1:]))
            table.setdefault(joined, canonical)
    return table


_CONTRACTION_FIX = _contraction_table()


def strip_punctuation(text: str) -> str:
    """The official punctuation step.

    A punctuation mark touching a space (or any mark, when the text has a digit,digit pattern
    such as "1,000") is deleted; otherwise it becomes a space ("black-and-white" ->
    "black and white"). Then periods not followed by a digit are deleted.
    """
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCTUATION:
        if has_digit_comma or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_DECIMAL.sub("", out)


def digits_and_articles(text: str) -> str:
    """Lower-case, number words -> digits, drop articles, restore contractions, single spaces."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [_CONTRACTION_FIX.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """The full official normalisation of one answer string."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return digits_and_articles(strip_punctuation(text))
