"""OCRBench task: loader on the real file, both scoring rules, extras, and the bundled generator."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.core.images import missing_images, open_image
from harness.core.types import Item
from tasks.ocrbench import OCRBench
from tasks.synth import ocrbench as synth

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "ocrbench"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="real benchmark files (../shared) not present")


def _item(answers, dataset="IIIT5K", kind="Regular Text Recognition", id_="1") -> Item:
    answers = (answers,) if isinstance(answers, str) else tuple(answers)
    return Item(id=f"{dataset}/{id_}", question="what is written in the image?", target=answers,
                category=kind, metadata={"dataset_name": dataset})


def _score(prediction: str, item: Item, rule: str = "ocrbench") -> float:
    task = OCRBench(rule=rule)
    return task.score(task.extract(prediction, item), item)


def _write(tmp: Path, rows: list) -> Path:
    (tmp / "ocrbench").mkdir(parents=True)
    (tmp / "ocrbench" / "OCRBench.json").write_text(json.dumps(rows))
    return tmp


ROW = {"dataset_name": "IIIT5K", "id": 1, "image_path": "IIIT5K/test/1.png",
       "question": "what is written in the image?", "answers": "CENTRE", "type": "Regular Text Recognition"}


# --- real file -----------------------------------------------------------------------------
@needs_real
def test_real_file_loads_with_unique_composite_ids(tmp_path):
    (tmp_path / "ocrbench").mkdir()
    (tmp_path / "ocrbench" / "OCRBench.json").symlink_to(REAL / "OCRBench.json")
    raw = json.loads((REAL / "OCRBench.json").read_text())
    task = OCRBench()
    items = task.load(tmp_path)
    assert len(items) == 1000
    assert len({it.id for it in items}) == 1000
    assert len({row["id"] for row in raw}) < 1000  # the bare id repeats across sub-datasets
    assert len({it.category for it in items}) == 10
    for it, row in zip(items, raw):
        assert it.id == f"{row['dataset_name']}/{row['id']}"
        assert it.metadata["dataset_name"] == row["dataset_name"]
        assert it.target == (tuple(row["answers"]) if isinstance(row["answers"], list) else (row["answers"],))
        assert it.images[0] == tmp_path / "ocrbench" / "OCRBench_Images" / row["image_path"]
        assert task.prompt(it) == row["question"]
    assert Counter(isinstance(r["answers"], list) for r in raw)[True] > 0  # both forms exercised
    # the first answer, as a model reply, earns the point under both rules
    for rule in ("ocrbench", "ocr_vqa"):
        t = OCRBench(rule=rule)
        assert all(t.score(t.extract(t.target_text(it), it), it) == 1.0 for it in items)
    assert missing_images([items[0].images[0]])  # loading never needs the images


def test_missing_file_bad_rows_and_duplicates_are_errors(tmp_path):
    with pytest.raises(HarnessError, match="OCRBench.json"):
        OCRBench().load(tmp_path)
    with pytest.raises(HarnessError, match="row 1.*answers"):
        OCRBench().load(_write(tmp_path / "a", [ROW, {**ROW, "id": 2, "answers": []}]))
    with pytest.raises(HarnessError, match="row 1.*`type`"):
        OCRBench().load(_write(tmp_path / "b", [ROW, {**ROW, "id": 2, "type": None}]))
    with pytest.raises(HarnessError, match="duplicate.*IIIT5K/1"):
        OCRBench().load(_write(tmp_path / "c", [ROW, ROW]))
    items = OCRBench().load(_write(tmp_path / "d", [ROW, {**ROW, "dataset_name": "svt"}]))
    assert [it.id for it in items] == ["IIIT5K/1", "svt/1"]  # same id, different dataset: fine


# --- the OCRBench rule -----------------------------------------------------------------------
def test_ocrbench_rule_substring_case_and_newlines():
    item = _item("CENTRE")
    assert _score("The word is centre.", item) == 1.0  # substring, case-insensitive
    assert _score("centres", item) == 1.0  # substring, not a whole word
    assert _score("CENTER", item) == 0.0
    assert _score("", item) == 0.0 and OCRBench().extract("  \n", item) is None
    assert _score("New\nYork city", _item("new york")) == 1.0  # newline counts as a space
    assert _score("newyork", _item("new york")) == 0.0  # spaces still matter outside HME100k
    assert _score("123", _item("12", "ORAND", "Digit String Recognition")) == 1.0  # the official rule's looseness


def test_ocrbench_rule_list_answers_any():
    item = _item(["Coca Cola", "coca-cola"])
    assert _score("it says COCA-COLA", item) == 1.0
    assert _score("coca", item) == 0.0


def test_hme_rule_removes_spaces_and_keeps_case():
    item = _item(["x _ { 1 } = 2\n", "x_1 = 2\n"], "HME100k", "Handwritten Mathematical Expression Recognition")
    assert _score("$x_{1}=2$", item) == 1.0  # spaces gone on both sides
    assert _score("x_1=2", item) == 1.0
    assert _score("X_{1}=2", item) == 0.0  # case kept
    assert _score("x _ {\n1 } = 2", item) == 1.0  # a newline is a space, then removed


# --- the older text-VQA rule ---------------------------------------------------------------
def test_ocr_vqa_rule_whole_words_after_normalisation():
    assert _score("centres", _item("CENTRE"), "ocr_vqa") == 0.0  # whole words only
    assert _score("The sign says: Centre!", _item("CENTRE"), "ocr_vqa") == 1.0
    assert _score("There are two.", _item("2", "textVQA", "Scene Text-centric VQA"), "ocr_vqa") == 1.0
    assert _score("There are two.", _item("2", "textVQA", "Scene Text-centric VQA")) == 0.0  # ocrbench: no number words
    # answers that start with a non-word character still need free edges, not \b
    assert _score("the price is $12.50", _item("$12.50"), "ocr_vqa") == 1.0
    assert _score("the price is $12.500", _item("$12.50"), "ocr_vqa") == 0.0
    assert _score("new york", _item(["boston", "New York"]), "ocr_vqa") == 1.0
    hme = _item("x _ { 1 }", "HME100k", "Handwritten Mathematical Expression Recognition")
    assert _score("x_{1}", hme, "ocr_vqa") == 1.0 and _score("X_{1}", hme, "ocr_vqa") == 0.0
    with pytest.raises(HarnessError, match="rule"):
        OCRBench(rule="anls")


# --- aggregation -------------------------------------------------------------------------------
def test_units_and_extras_report_points_per_type_and_dataset():
    items = {
        "IIIT5K/1": _item("A", "IIIT5K", "Regular Text Recognition", "1"),
        "svt/1": _item("B", "svt", "Regular Text Recognition", "1"),
        "ORAND/2": _item("12", "ORAND", "Digit String Recognition", "2"),
        "docVQA/3": _item("x", "docVQA", "Doc-oriented VQA", "3"),
    }
    scores = {"IIIT5K/1": [1.0], "svt/1": [0.0], "ORAND/2": [1.0, 0.0], "docVQA/3": [1.0]}
    task = OCRBench()
    units = {u.id: u for u in task.units(items, scores)}
    assert units["ORAND/2"].score == 0.5 and units["svt/1"].extra == {"dataset_name": "svt"}
    extras = task.extras(items, scores)
    assert extras["points"] == 2.5 and extras["max_points"] == 4
    assert extras["text_recognition_points"] == 1.5  # docVQA is not a recognition type
    assert extras["type_percent"] == {"Digit String Recognition": 50.0, "Doc-oriented VQA": 100.0,
                                      "Regular Text Recognition": 50.0}
    assert extras["dataset_percent"] == {"IIIT5K": 100.0, "ORAND": 50.0, "docVQA": 100.0, "svt": 0.0}
    assert extras["type_points"]["Regular Text Recognition"] == 1.0


# --- bundled generator ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ocrbench_synth")
    synth.build(root, "test", 30, seed=1)
    synth.build(root, "train", 15, seed=2)
    return root


def test_bundled_set_reads_back_with_regions(bundled):
    task = OCRBench()
    test, train = task.load(bundled, "test"), task.load(bundled, "train")
    assert len(test) == 30 and len(train) == 15
    assert not {it.id for it in test} & {it.id for it in train}
    assert Counter(it.category for it in test) == {t: 10 for t in synth.TYPES}
    assert missing_images([ref for it in test + train for ref in it.images]) == []
    for it in test + train:
        img = open_image(it.images[0])
        assert img.size == (128, 128)
        regions = it.metadata["text_regions"]
        assert "".join(r["text"] for r in regions) == it.target[-1].replace(" ", "")
        for r in regions:
            x0, y0, x1, y1 = r["box"]
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
        # big text: the line spans at least half the width, so >= 32 px after a 64x64 resize
        assert max(r["box"][2] for r in regions) - min(r["box"][0] for r in regions) >= 64
        # the box really holds ink: its darkest pixel is much darker than the image corner
        x0, y0, x1, y1 = regions[0]["box"]
        grey = img.convert("L")
        assert grey.crop((x0, y0, x1, y1)).getextrema()[0] < grey.getpixel((0, 0)) - 100


def test_bundled_targets_round_trip(bundled):
    for rule in ("ocrbench", "ocr_vqa"):
        task = OCRBench(rule=rule)
        for item in task.load(bundled, "test") + task.load(bundled, "train"):
            assert task.score(task.extract(task.target_text(item), item), item) == 1.0, item.id


def test_bundled_answers_vary_and_words_are_not_substrings():
    assert len(set(synth.WORDS)) == len(synth.WORDS) >= 20
    assert all(len(w) <= 5 for w in synth.WORDS)
    assert not [(a, b) for a in synth.WORDS for b in synth.WORDS if a != b and a in b]


def test_bundled_build_is_deterministic_and_types_restrict(tmp_path):
    synth.build(tmp_path / "a", "train", 6, seed=3)
    synth.build(tmp_path / "b", "train", 6, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 7
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    synth.build(tmp_path / "c", "train", 4, seed=3, types=["Digit String Recognition"])
    items = OCRBench().load(tmp_path / "c", "train")
    assert {it.category for it in items} == {"Digit String Recognition"}
    assert all(it.target[0].isdigit() and 2 <= len(it.target[0]) <= 3 for it in items)
    with pytest.raises(HarnessError, match="unknown type"):
        synth.build(tmp_path / "d", "train", 2, seed=3, types=["Doc-oriented VQA"])
