"""GeoQA loader on the real G-LLaVA files, bad input, and the bundled generator."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness.errors import HarnessError
from tasks.geoqa import R3V_INSTRUCTION, GeoQA
from tasks.synth import geoqa as synth

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "geoqa" / "gllava"


# --- the real test split -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (REAL / "test_questions.jsonl").is_file():
        pytest.skip(f"real GeoQA files not found at {REAL}")
    root = tmp_path_factory.mktemp("real")
    (root / "geoqa").symlink_to(REAL, target_is_directory=True)  # D/geoqa/ layout
    return root


def _raw(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_real_test_split_loads(real_dir: Path) -> None:
    items = GeoQA().load(real_dir, "test")
    gold = {str(r["question_id"]): r["text"] for r in _raw(REAL / "test_answers.jsonl")}
    assert len(items) == 754
    assert {i.id for i in items} == set(gold)
    assert all(i.target == gold[i.id] and i.target in "ABCD" for i in items)
    assert all(len(i.choices) == 4 and all(i.choices) for i in items)
    assert len({i.id for i in items}) == len(items)
    first = next(i for i in items if i.id == "0")
    assert first.question.startswith("As shown in the figure, in triangle ABC")
    assert "DE parallel BC" in first.question  # the file's double space is collapsed
    assert first.choices == ("40°", "60°", "120°", "140°") and first.target == "D"
    assert first.images == (real_dir / "geoqa" / "images" / "test" / "0.png",)
    # Loading never needs the images (they are not in the real folder).
    assert not first.images[0].exists()
    assert not any("Question:" in i.question or "First perform" in i.question for i in items)
    assert {i.category for i in items} == {"angle", "geoqa"}


def test_real_prompt_and_target_round_trip(real_dir: Path) -> None:
    items = GeoQA().load(real_dir, "test")
    prompt = GeoQA().prompt(items[0])
    assert prompt.splitlines()[1:6] == ["Choices:", "(A) 40°", "(B) 60°", "(C) 120°", "(D) 140°"]
    assert prompt.endswith(R3V_INSTRUCTION)
    for mode in ("strict", "r3v"):
        task = GeoQA(extract=mode)
        assert all(task.extract(task.target_text(i), i) == i.target for i in items), mode


# --- bad input ------------------------------------------------------------------------------------
def _write(root: Path, questions: list[str], answers: list[str], split: str = "test") -> Path:
    (root / "geoqa").mkdir(parents=True, exist_ok=True)
    (root / "geoqa" / f"{split}_questions.jsonl").write_text("\n".join(questions) + "\n", encoding="utf-8")
    (root / "geoqa" / f"{split}_answers.jsonl").write_text("\n".join(answers) + "\n", encoding="utf-8")
    return root


def _question(qid: int, text: str = "Question:angle 1 = 50.0, then angle 2 is ()\nChoices:\nA:50°\nB:130°") -> str:
    return json.dumps({"question_id": qid, "image": f"test/{qid}.png", "text": text})


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    root = _write(tmp_path, [_question(0), '{"question_id": 1, "image": '], ['{"question_id": 0, "text": "A"}'])
    with pytest.raises(HarnessError, match=r"test_questions\.jsonl:2: malformed JSON"):
        GeoQA().load(root, "test")


def test_missing_answer_names_the_id(tmp_path: Path) -> None:
    root = _write(tmp_path, [_question(0), _question(7)], ['{"question_id": 0, "text": "B"}'])
    with pytest.raises(HarnessError, match=r"no answer for question_id 7"):
        GeoQA().load(root, "test")


def test_answer_without_question_names_the_id(tmp_path: Path) -> None:
    root = _write(tmp_path, [_question(0)], ['{"question_id": 0, "text": "B"}', '{"question_id": 9, "text": "A"}'])
    with pytest.raises(HarnessError, match=r"question_id 9 has no question"):
        GeoQA().load(root, "test")


@pytest.mark.parametrize(
    "question, answer, message",
    [
        (_question(0), '{"question_id": 0, "text": "C"}', "not one of its options"),
        (_question(0, "Question:no choices here"), '{"question_id": 0, "text": "A"}', "no 'Choices:' block"),
        (_question(0, "Question:q\nChoices:\nA:1\nC:2"), '{"question_id": 0, "text": "A"}', "lettered A, B"),
        (json.dumps({"question_id": 0, "image": "../x.png", "text": "Question:q\nChoices:\nA:1\nB:2"}),
         '{"question_id": 0, "text": "A"}', "must be relative"),
    ],
)
def test_bad_rows_are_clear_errors(tmp_path: Path, question: str, answer: str, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        GeoQA().load(_write(tmp_path, [question], [answer]), "test")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"train_questions\.jsonl"):
        GeoQA().load(tmp_path, "train")


def test_parser_tolerates_spacing_variants(tmp_path: Path) -> None:
    text = "Question:  angle 1 =  50.0 ()\nChoices:\n(A) 50 °\n\nB. 130°\nC: 40°\n  D:80°  "
    items = GeoQA().load(_write(tmp_path, [_question(3, text)], ['{"question_id": 3, "text": " D "}']), "test")
    assert items[0].question == "angle 1 = 50.0 ()"
    assert items[0].choices == ("50 °", "130°", "40°", "80°") and items[0].target == "D"


# --- the bundled generator ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundled")
    synth.build(root, "test", 96, seed=1)
    synth.build(root, "train", 32, seed=2)
    return root


def test_bundled_set_loads_and_targets_round_trip(bundled: Path) -> None:
    test_items = GeoQA().load(bundled, "test")
    assert len(test_items) == 96
    # The worked targets end with the chosen value ("Answer: 130°"): strict maps it to its letter;
    # R3V's rule reads the last letter instead, so it is checked on the bare-letter form only.
    task = GeoQA()
    for item in test_items:
        target = task.target_text(item)
        assert task.extract(target, item) == item.target, target
        assert GeoQA(extract="r3v").extract(f"Answer: ({item.target})", item) == item.target
        assert f"{item.metadata['answer_value']}°" in target  # a chain of thought, not just the letter
        assert item.choices[ord(item.target) - ord("A")] == f"{item.metadata['answer_value']}°"


def test_bundled_items_follow_the_relations(bundled: Path) -> None:
    for item in GeoQA().load(bundled, "test"):
        x = item.metadata["x"]
        assert f"angle 1 = {x}.0" in item.question
        assert sorted(item.choices) == sorted(f"{v}°" for v in (x, 180 - x, 90 - x, 2 * x))
        assert item.category == item.metadata["type"] in synth.TYPES


def test_bundled_answers_are_balanced(bundled: Path) -> None:
    items = GeoQA().load(bundled, "test")
    per_type = Counter(i.category for i in items)
    assert set(per_type) == set(synth.TYPES) and max(per_type.values()) - min(per_type.values()) <= 1
    for kind in synth.TYPES:
        letters = Counter(i.target for i in items if i.category == kind)
        assert set(letters) == set("ABCD") and max(letters.values()) - min(letters.values()) <= 1, kind


def test_bundled_text_alone_is_at_chance(bundled: Path) -> None:
    # Text-only strategies (always a letter, always one relation, always the largest or the
    # smallest value) must stay near 25%: only the diagram tells the relation.
    items = GeoQA().load(bundled, "test")

    def accuracy(pick) -> float:
        return sum(pick(i) == i.target for i in items) / len(items)

    def by_value(rule):
        def pick(item):
            x = item.metadata["x"]
            return "ABCD"[item.choices.index(f"{rule(x, item)}°")]
        return pick

    values = lambda item: [int(c.rstrip("°")) for c in item.choices]  # noqa: E731
    strategies = [lambda i, L=L: L for L in "ABCD"] + [
        by_value(lambda x, i: x), by_value(lambda x, i: 180 - x), by_value(lambda x, i: 90 - x),
        by_value(lambda x, i: 2 * x), by_value(lambda x, i: max(values(i))), by_value(lambda x, i: min(values(i))),
    ]
    for pick in strategies:
        assert accuracy(pick) <= 0.40


def test_bundled_images_and_ids(bundled: Path) -> None:
    from PIL import Image

    test_items = GeoQA().load(bundled, "test")
    train_items = GeoQA().load(bundled, "train")
    assert len(train_items) == 32
    assert not {i.id for i in test_items} & {i.id for i in train_items}
    for item in test_items + train_items:
        path = item.images[0]
        assert path.is_file() and path.stat().st_size < 8000
        with Image.open(path) as image:
            assert image.size == (128, 128)
    raw = _raw(bundled / "geoqa" / "test_questions.jsonl")
    assert all(set(row) == {"question_id", "image", "text"} for row in raw)  # only the real keys
    assert raw[0]["text"].startswith("\nFirst perform reasoning") and "\nChoices:\nA:" in raw[0]["text"]


def test_bundled_build_is_deterministic_and_type_restrictable(tmp_path: Path, bundled: Path) -> None:
    synth.build(tmp_path / "same", "train", 32, seed=2)
    synth.build(tmp_path / "other", "train", 32, seed=3)
    for name in ("train_questions.jsonl", "train_answers.jsonl", "train_meta.jsonl", "images/train/100000.png"):
        assert (tmp_path / "same" / "geoqa" / name).read_bytes() == (bundled / "geoqa" / name).read_bytes()
    assert (tmp_path / "other" / "geoqa" / "train_questions.jsonl").read_bytes() != (
        bundled / "geoqa" / "train_questions.jsonl"
    ).read_bytes()
    synth.build(tmp_path / "central", "train", 8, seed=2, types=["central"])
    assert {i.category for i in GeoQA().load(tmp_path / "central", "train")} == {"central"}
    with pytest.raises(ValueError, match="unknown GeoQA types"):
        synth.build(tmp_path / "bad", "train", 4, seed=2, types=["reflex"])
