"""A-OKVQA tasks: loaders on the real files, the MC/DA rules, and the bundled generator."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.core.images import missing_images, open_image
from harness.core.types import Item
from tasks.aokvqa import AOKVQADirectAnswer, AOKVQAMultipleChoice, extract_choice_letter
from tasks.synth import aokvqa as synth
from tasks.vqa_normalize import normalize_answer

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "aokvqa"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="real benchmark files (../shared) not present")


def _data_dir(tmp: Path, annotations: Path | list) -> Path:
    """A data dir holding `annotations` as the val file (a symlink, or rows written out)."""
    (tmp / "aokvqa").mkdir(parents=True)
    target = tmp / "aokvqa" / "aokvqa_v1p0_val.json"
    if isinstance(annotations, Path):
        target.symlink_to(annotations)
    else:
        target.write_text(json.dumps(annotations))
    return tmp


def _row(qid: str, **over) -> dict:
    row = {
        "split": "val", "image_id": 7, "question_id": qid, "question": "What color is it?",
        "choices": ["red", "blue", "green", "yellow"], "correct_choice_idx": 1,
        "direct_answers": ["blue"] * 10, "difficult_direct_answer": False, "rationales": ["r1", "r2", "r3"],
    }
    return {**row, **over}


# --- real files ----------------------------------------------------------------------------
@needs_real
def test_real_val_loads_for_both_variants(tmp_path):
    data = _data_dir(tmp_path, REAL / "aokvqa_v1p0_val.json")
    raw = json.loads((REAL / "aokvqa_v1p0_val.json").read_text())
    mc = AOKVQAMultipleChoice().load(data)
    assert len(mc) == 1145
    assert len({it.id for it in mc}) == 1145
    for it, row in zip(mc, raw):
        assert it.id == row["question_id"]
        assert len(it.choices) == 4
        assert it.target == "ABCD"[row["correct_choice_idx"]]
        assert it.category == "aokvqa"
        assert it.images[0] == data / "coco" / "val2017" / f"{row['image_id']:012d}.jpg"
    # loading needs no images; the runner checks them later
    assert missing_images([it.images[0] for it in mc[:3]])

    da_task = AOKVQADirectAnswer()
    da = da_task.load(data)
    n_difficult = sum(row["difficult_direct_answer"] is True for row in raw)
    assert n_difficult > 0
    assert len(da) == 1145 - n_difficult
    assert not any(it.metadata["difficult_direct_answer"] for it in da)
    assert da_task.extras({it.id: it for it in da}, {})["difficult_excluded"] == n_difficult


@needs_real
def test_real_items_with_local_images_resolve(tmp_path):
    rows = json.loads((REAL / "aokvqa_val_with_local_images.json").read_text())
    data = _data_dir(tmp_path, REAL / "aokvqa_val_with_local_images.json")
    coco = data / "coco" / "val2017"
    coco.mkdir(parents=True)
    for row in rows:  # the COCO layout names files by the 12-digit id
        (coco / f"{row['image_id']:012d}.jpg").symlink_to(REAL / "coco_val2017_matched" / f"000000{row['image_id']:06d}.jpg")
    items = AOKVQAMultipleChoice().load(data)
    assert len(items) == 8
    assert missing_images([ref for it in items for ref in it.images]) == []
    assert min(open_image(items[0].images[0]).size) > 100


def test_missing_file_and_bad_rows_are_one_line_errors(tmp_path):
    with pytest.raises(HarnessError, match="aokvqa_v1p0_val.json"):
        AOKVQAMultipleChoice().load(tmp_path)
    data = _data_dir(tmp_path / "a", [_row("q1"), _row("q2", correct_choice_idx=4)])
    with pytest.raises(HarnessError, match="row 1.*correct_choice_idx"):
        AOKVQAMultipleChoice().load(data)
    data = _data_dir(tmp_path / "b", [_row("q1"), _row("q1")])
    with pytest.raises(HarnessError, match="duplicate question_id"):
        AOKVQAMultipleChoice().load(data)
    data = _data_dir(tmp_path / "c", [_row("q1", direct_answers="blue")])
    with pytest.raises(HarnessError, match="direct_answers"):
        AOKVQADirectAnswer().load(data)


# --- VQA normalisation and the direct-answer rule -------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("The dog.", "dog"),
    ("a cat", "cat"),
    ("An apple", "apple"),
    ("Two", "2"),
    ("none", "0"),
    ("ten dogs", "10 dogs"),
    ("Yes!", "yes"),
    ("black-and-white", "black and white"),  # punctuation between words becomes a space
    ("cat , dog", "cat dog"),  # punctuation touching a space is deleted
    ("1,000", "1000"),
    ("3.5", "3.5"),  # a decimal point stays
    ("dont", "don't"),
    ("isnt it", "isn't it"),
    ("  two\nwheeler\t", "2 wheeler"),
])
def test_vqa_normalisation(raw, expected):
    assert normalize_answer(raw) == expected


def _da_item(answers: list[str]) -> Item:
    return Item(id="q", question="How many?", target=tuple(answers))


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 1 / 3), (2, 2 / 3), (3, 1.0), (4, 1.0)])
def test_direct_answer_credit_is_min_one_matches_over_three(matches, expected):
    task = AOKVQADirectAnswer()
    item = _da_item(["dog"] * matches + ["cat"] * (10 - matches))
    assert task.score(task.extract("Dog.", item), item) == pytest.approx(expected)


def test_number_words_and_digits_match_by_default_but_not_raw():
    answers = ["2", "2", "two", "3", "2", "two", "2", "2", "3", "2"]
    item = _da_item(answers)
    task, raw = AOKVQADirectAnswer(), AOKVQADirectAnswer(compat="official-raw")
    assert task.score(task.extract("Two", item), item) == 1.0  # 8 answers normalise to "2"
    assert raw.score(raw.extract("Two", item), item) == 0.0
    assert raw.score(raw.extract("two", item), item) == pytest.approx(2 / 3)
    assert raw.score(raw.extract(" 2 \n", item), item) == 1.0  # raw still strips
    assert raw.extract("The 2.", item) == "The 2."


def test_empty_output_is_unparsed():
    task = AOKVQADirectAnswer()
    item = _da_item(["dog"] * 10)
    for output in ("", "   ", "."):
        assert task.extract(output, item) is None
        assert task.score(None, item) == 0.0
    assert AOKVQADirectAnswer(compat="official-raw").extract("  ", item) is None


def test_difficult_questions_are_left_out_of_direct_answer_only(tmp_path):
    rows = [_row("q1"), _row("q2", difficult_direct_answer=True), _row("q3")]
    data = _data_dir(tmp_path, rows)
    da = AOKVQADirectAnswer()
    items = da.load(data)
    assert [it.id for it in items] == ["q1", "q3"]
    assert da.extras({it.id: it for it in items}, {})["difficult_excluded"] == 1
    assert len(AOKVQAMultipleChoice().load(data)) == 3


def test_direct_answer_target_groups_spellings():
    item = _da_item(["two", "2", "two", "2", "2", "3", "3", "3", "3", "2"])
    task = AOKVQADirectAnswer()
    assert task.target_text(item) == "2"  # "2"/"two" together (6) beat "3" (4)
    assert task.score(task.extract(task.target_text(item), item), item) == 1.0
    assert task.prompt(item).endswith("Answer the question using a single word or phrase.")


# --- multiple choice -------------------------------------------------------------------------
CHOICES = ("red", "blue", "green", "light yellow")


@pytest.mark.parametrize("output", [
    "B", "(B)", "B.", "B)", "B:", " B\n", "B. blue", "(B) blue", "answer is B", "Answer: B",
    "The answer is (B).", "blue (B)", "blue", "Blue.", "I think it is blue.", "A big blue circle",
])
def test_mc_extraction_forms(output):
    assert extract_choice_letter(output, CHOICES) == "B"


@pytest.mark.parametrize("output", ["", "  ", "E", "(A) or (B)", "purple", "red or blue", "I am not sure"])
def test_mc_unparsed(output):
    assert extract_choice_letter(output, CHOICES) is None


def test_mc_exact_choice_text_wins_over_letters():
    assert extract_choice_letter("light yellow", CHOICES) == "D"  # the likelihood-mode output
    assert extract_choice_letter("A", ("B", "A", "C", "D")) == "B"  # a choice that is itself a letter


def test_mc_prompts_modes_and_scoring():
    item = Item(id="q", question="What color is the circle?", target="B", choices=CHOICES)
    gen, lik = AOKVQAMultipleChoice(), AOKVQAMultipleChoice(mc_mode="likelihood")
    assert gen.request_type == "generate" and lik.request_type == "choice_likelihood"
    assert gen.prompt(item) == (
        "What color is the circle?\n(A) red\n(B) blue\n(C) green\n(D) light yellow\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert "(A)" not in lik.prompt(item) and lik.prompt(item).startswith("What color is the circle?\n")
    assert gen.target_text(item) == "blue" and lik.target_text(item) == "blue"
    assert gen.score(gen.extract("blue (B)", item), item) == 1.0
    assert lik.score(lik.extract("blue", item), item) == 1.0
    assert gen.score(gen.extract("C", item), item) == 0.0
    assert gen.score(gen.extract("no idea", item), item) == 0.0
    with pytest.raises(HarnessError, match="mc-mode"):
        AOKVQAMultipleChoice(mc_mode="loglik")


# --- bundled generator ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aokvqa_synth")
    synth.build(root, "test", 80, seed=1)
    synth.build(root, "train", 40, seed=2)
    return root


def test_bundled_set_reads_back(bundled):
    test = AOKVQAMultipleChoice().load(bundled, "test")
    train = AOKVQAMultipleChoice().load(bundled, "train")
    assert len(test) == 80 and len(train) == 40
    assert not {it.id for it in test} & {it.id for it in train}
    assert all(len(it.id) == 22 for it in test + train)
    assert not {it.metadata["image_id"] for it in test} & {it.metadata["image_id"] for it in train}
    assert missing_images([ref for it in test + train for ref in it.images]) == []
    assert open_image(test[0].images[0]).size == (128, 128)
    assert {it.category for it in test} == set(synth.TYPES)
    rows = json.loads((bundled / "aokvqa" / "aokvqa_v1p0_val.json").read_text())
    assert set(rows[0]) >= {"split", "image_id", "question_id", "question", "choices", "correct_choice_idx",
                            "direct_answers", "difficult_direct_answer", "rationales"}
    assert {r["split"] for r in rows} == {"val"}
    assert all(len(r["direct_answers"]) == 10 and len(r["rationales"]) == 3 for r in rows)


@pytest.mark.parametrize("task", [
    AOKVQAMultipleChoice(), AOKVQAMultipleChoice(mc_mode="likelihood"),
    AOKVQADirectAnswer(), AOKVQADirectAnswer(compat="official-raw"),
], ids=["mc", "mc-likelihood", "da", "da-raw"])
def test_bundled_targets_round_trip(bundled, task):
    for split in ("test", "train"):
        for item in task.load(bundled, split):
            assert task.score(task.extract(task.target_text(item), item), item) == 1.0, item.id


def test_bundled_letters_balanced_and_answers_vary(bundled):
    items = AOKVQAMultipleChoice().load(bundled, "test")
    assert Counter(it.target for it in items) == {"A": 20, "B": 20, "C": 20, "D": 20}
    gold_by_type: dict[str, set[str]] = {}
    for it in items:
        gold_by_type.setdefault(it.category, set()).add(it.choices["ABCD".index(it.target)])
        assert len(set(it.choices)) == 4
    assert all(len(golds) >= 3 for golds in gold_by_type.values())  # no template has a fixed answer


def test_bundled_direct_answers_exercise_the_rule(bundled):
    rows = json.loads((bundled / "aokvqa" / "aokvqa_v1p0_train.json").read_text())
    rows += json.loads((bundled / "aokvqa" / "aokvqa_v1p0_val.json").read_text())
    gold = [r["choices"][r["correct_choice_idx"]] for r in rows]
    assert any(r["difficult_direct_answer"] for r in rows)
    partial = [r for r, g in zip(rows, gold) if any(a != g for a in r["direct_answers"])]
    assert len(partial) > len(rows) // 4  # near answers are common
    spelled = [r for r in rows if r["question_type"] == "count" and any(a.isalpha() for a in r["direct_answers"])]
    assert spelled  # "two" next to "2"


def test_bundled_build_is_deterministic_and_types_restrict(tmp_path):
    synth.build(tmp_path / "a", "train", 12, seed=5)
    synth.build(tmp_path / "b", "train", 12, seed=5)
    synth.build(tmp_path / "c", "train", 12, seed=6, types=["count"])
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files_a) == 13
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    other = AOKVQAMultipleChoice().load(tmp_path / "c", "train")
    assert {it.category for it in other} == {"count"}
    assert not {it.id for it in other} & {it.id for it in AOKVQAMultipleChoice().load(tmp_path / "a", "train")}
    with pytest.raises(HarnessError, match="unknown question type"):
        synth.build(tmp_path / "d", "train", 4, seed=1, types=["weather"])
