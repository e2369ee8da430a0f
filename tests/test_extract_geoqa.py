"""Answer extraction for GeoQA: the strict default and R3V's rule (data_process/geoqa/calculate.py)."""
from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.core.types import Item
from tasks.geoqa import GeoQA

ITEM = Item(id="0", question="q", target="D", choices=("40°", "60°", "120°", "140°"))


def strict(output: str, item: Item = ITEM) -> str | None:
    return GeoQA(extract="strict").extract(output, item)


def r3v(output: str, item: Item = ITEM) -> str | None:
    return GeoQA(extract="r3v").extract(output, item)


@pytest.mark.parametrize(
    "output, expected",
    [
        ("Answer: B", "B"),
        ("answer: B", "B"),  # the marker is case-insensitive
        ("ANSWER: (B)", "B"),
        ("So the answer is B) 60°", "B"),
        ("Answer: B: 60°", "B"),
        ("angle 2 = 60°, so the answer is B.", "B"),
        ("Answer: A or B? I think C", "C"),  # the last option letter after the marker
        ("Answer: (A)\nWait, that is wrong. Answer: (D)", "D"),  # the last marker
        ("Answer: 120°", "C"),  # the exact text of a choice
        ("Answer:   140°.", "D"),
        ("Answer: angle A = 60°", "A"),  # a bare point name reads as a letter (the rule's limit)...
        ("Answer: ∠A = 60°", "B"),  # ...but "∠A" is a point, so the choice text decides
        ("The value is 140°. Answer: 40°", "A"),  # only the text after the marker counts
        ("Answer: 20°", None),  # "20°" is not read inside "120°"
        ("Answer: E", None),  # not one of this item's options
        ("Answer: ABC", None),  # letters inside a word are not options
        ("Answer: b", None),  # option letters are upper case
        ("B", None),  # no "answer" marker: unparsed
        ("The correct option is (B) 60°", None),
        ("", None),
    ],
)
def test_strict(output: str, expected: str | None) -> None:
    assert strict(output) == expected


def test_strict_picks_the_last_mentioned_choice_text() -> None:
    assert strict("Answer: not 60°, it is 120°") == "C"
    assert strict("Answer: not 120°, it is 60°") == "B"


@pytest.mark.parametrize(
    "output, expected",
    [
        ("Answer: B", "B"),  # no lowercase "answer": the whole text, its last letter is B
        ("The answer is (C), not D", "C"),  # a "(X)" beats a later bare letter
        ("the answer is b", "B"),  # any letter, upper-cased
        ("the answer is x", "X"),  # ... even one that is not an option (scored wrong)
        ("Answer: 120°", "R"),  # "Answer" is not cut, so the last letter is the r of "Answer"
        ("so the answer: 120°", "C"),  # no letter after the cut: a choice text it contains
        ("I pick (D) since 140° fits", "D"),  # no marker at all: "(X)" over the whole text
        ("the answer: 7", None),  # nothing found: R3V gives random credit, we give None
        ("the answer", None),
        ("", None),
    ],
)
def test_r3v(output: str, expected: str | None) -> None:
    assert r3v(output) == expected


def test_r3v_choice_fallback_takes_the_last_option_contained() -> None:
    # R3V tests `choice in text` option by option and keeps the last hit, so "140°" also
    # matches the later option "40°": the quirk is reproduced, not fixed.
    item = Item(id="1", question="q", target="A", choices=("140°", "40°", "50°", "60°"))
    assert r3v("so the answer: 140°", item) == "B"
    assert strict("so the answer: 140°", item) == "A"


def test_score_maps_the_extracted_letter_to_the_gold() -> None:
    task = GeoQA()
    assert task.score(task.extract("Answer: 140°", ITEM), ITEM) == 1.0
    assert task.score(task.extract("Answer: (D)", ITEM), ITEM) == 1.0
    assert task.score(task.extract("Answer: (A)", ITEM), ITEM) == 0.0
    assert task.score(None, ITEM) == 0.0


def test_unknown_extract_mode_is_a_clear_error() -> None:
    with pytest.raises(HarnessError, match="strict, r3v"):
        GeoQA(extract="lenient")
