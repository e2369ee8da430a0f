"""MMBench: real TSV layout, circular copies, image references, circular scoring, extraction,
and the bundled generator."""
from __future__ import annotations

import base64
import collections
import csv
import json
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.core.images import open_image
from harness.core.types import Item
from tasks.mmbench import MMBench
from tasks.synth import mmbench as synth

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "mmbench"
# The column order of the LMUData MMBench_DEV_EN.tsv (shared/data/real/README.md).
REAL_COLUMNS = [
    "index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
    "source", "l2-category", "comment", "split",
]


def write_tsv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=REAL_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in REAL_COLUMNS})


def real_samples() -> list[dict]:
    if not (REAL / "samples.json").is_file():
        pytest.skip("shared real data not present")
    samples = json.loads((REAL / "samples.json").read_text(encoding="utf-8"))
    return [s for s in samples if s["benchmark"] == "MMBench" and s["lang"] == "en"]


# Question 2368 ships with hand-rotated circular copies whose image cells name the base row,
# as the official file does; every other question has only its base row.
WITH_COPIES = 2368


@pytest.fixture
def real_dir(tmp_path: Path) -> Path:
    rows = []
    for s in real_samples():
        opts = s["options"]
        row = {
            "index": str(s["sample_index"]), "question": s["question"], "hint": "",
            "answer": s["answer"], "category": s["category"], "l2-category": "unknown",
            "image": base64.b64encode((REAL / s["image"]).read_bytes()).decode(),
            "source": "mmbench_sample", "split": "dev", **opts,
        }
        rows.append(row)
        if s["sample_index"] == WITH_COPIES:
            letters = sorted(opts)
            texts = [opts[k] for k in letters]
            for j in range(1, len(texts)):
                rotated = texts[j:] + texts[:j]
                rows.append({
                    **row, "index": str(WITH_COPIES + j * 1_000_000), "image": str(WITH_COPIES),
                    "answer": letters[rotated.index(opts[s["answer"]])], **dict(zip(letters, rotated)),
                })
    write_tsv(tmp_path / "mmbench" / "MMBench_DEV_EN.tsv", rows)
    return tmp_path


def by_id(items: list[Item]) -> dict[str, Item]:
    return {it.id: it for it in items}


def answer_text(item: Item) -> str:
    return item.choices["ABCDE".index(item.target)]


# --- loading the real layout -------------------------------------------------------------------
def test_real_samples_load_with_images_and_groups(real_dir: Path) -> None:
    samples = real_samples()
    items = MMBench().load(real_dir)
    assert len(items) == sum(len(s["options"]) for s in samples)  # every question x its rotations
    got = by_id(items)
    for s in samples:
        base = got[str(s["sample_index"])]
        assert base.question == s["question"] and base.target == s["answer"]
        assert base.choices == tuple(s["options"][k].strip() for k in sorted(s["options"]))
        assert base.category == s["category"] and base.metadata["l2_category"] == "unknown"
        assert base.images[0] == (REAL / s["image"]).read_bytes()
        assert open_image(base.images[0]).size[0] > 0
        copies = [it for it in items if it.group == str(s["sample_index"])]
        assert len(copies) == len(s["options"])


def test_circular_copies_built_when_missing(real_dir: Path) -> None:
    got = by_id(MMBench().load(real_dir))
    # "What will happen next?" (3 options, answer C = "The egg will be broken")
    assert got["1002222"].choices == ("This egg will fall down", "The egg will be broken", "This egg will become cooked")
    assert got["1002222"].target == "B"
    assert got["2002222"].choices == ("The egg will be broken", "This egg will become cooked", "This egg will fall down")
    assert got["2002222"].target == "A"
    assert "3002222" not in got
    for s in real_samples():
        g = s["sample_index"]
        copies = [got[str(g + j * 1_000_000)] for j in range(len(s["options"]))]
        assert {answer_text(c) for c in copies} == {s["options"][s["answer"]].strip()}
        assert sorted(c.target for c in copies) == sorted(s["options"])  # the answer visits every letter
        assert all(c.group == str(g) and c.images == copies[0].images for c in copies)
        assert all(bool(c.metadata.get("built")) == (j > 0 and g != WITH_COPIES) for j, c in enumerate(copies))


def test_short_image_cell_resolves_to_the_named_row(real_dir: Path) -> None:
    got = by_id(MMBench().load(real_dir))
    real_bytes = (REAL / "images" / "MMBench" / f"{WITH_COPIES}.jpg").read_bytes()
    for j in range(4):
        assert got[str(WITH_COPIES + j * 1_000_000)].images == (real_bytes,)


def test_bad_files_raise_one_line_errors(tmp_path: Path) -> None:
    img = base64.b64encode(b"\xff\xd8 not really a jpeg but valid base64").decode()
    path = tmp_path / "mmbench" / "MMBench_DEV_EN.tsv"
    write_tsv(path, [{"index": "5", "question": "q?", "A": "x", "B": "y", "answer": "A", "image": "77"}])
    with pytest.raises(HarnessError, match="refers to row 77"):
        MMBench().load(tmp_path)
    write_tsv(path, [{"index": "5", "question": "q?", "A": "x", "B": "y", "answer": "C", "image": img}])
    with pytest.raises(HarnessError, match="index 5: answer 'C'"):
        MMBench().load(tmp_path)
    write_tsv(path, [{"index": "1000005", "question": "q?", "A": "x", "B": "y", "answer": "A", "image": img}])
    with pytest.raises(HarnessError, match="no base row 5"):
        MMBench().load(tmp_path)
    path.write_text("index\tquestion\tA\tB\timage\n1\tq?\tx\ty\t\n", encoding="utf-8")
    with pytest.raises(HarnessError, match="missing column.*answer"):
        MMBench().load(tmp_path)
    with pytest.raises(HarnessError, match="MMBench_TRAIN_EN.tsv"):
        MMBench().load(tmp_path, "train")


def test_prompt_shape(real_dir: Path) -> None:
    task = MMBench()
    item = by_id(task.load(real_dir))["2222"]
    assert task.prompt(item).splitlines() == [
        "Question: Based on this image, please predict what will happen next?",
        "Options:",
        "A. This egg will become cooked",
        "B. This egg will fall down",
        "C. The egg will be broken",
        "Answer with the option's letter from the given choices directly.",
    ]
    hinted = Item(id="1", question="Which is red?", target="A", choices=("x", "y"), metadata={"hint": "Look."})
    assert task.prompt(hinted).startswith("Hint: Look.\nQuestion: Which is red?\nOptions:\nA. x\nB. y\n")


# --- circular scoring --------------------------------------------------------------------------
def test_question_counts_only_when_every_copy_is_right(real_dir: Path) -> None:
    task = MMBench()
    items = by_id(task.load(real_dir))
    outputs = {}
    for g in ("2368", "2222"):
        for it in items.values():
            if it.group == g:
                outputs[it.id] = task.target_text(it)
    wrong = items["3002368"]
    outputs[wrong.id] = next(L for L in "ABCD" if L != wrong.target)  # 3 of 4 copies right
    scores = {i: [task.score(task.extract(o, items[i]), items[i])] for i, o in outputs.items()}
    assert sum(s[0] for s in scores.values()) == len(scores) - 1
    units = {u.id: u.score for u in task.units(items, scores)}
    assert units == {"2368": 0.0, "2222": 1.0}
    extras = task.extras(items, scores)
    assert extras["circular"] == 50.0
    assert extras["vanilla"] == 100.0  # only the index < 1e6 copies count, both right
    assert extras["circular_per_l2_category"] == {"unknown": 50.0}
    assert extras["vanilla_per_category"][items["2368"].category] == 100.0
    assert extras["incomplete_questions"] == 0
    # a wrong base copy shows in vanilla; scoring only base copies is flagged as incomplete
    base_only = {"2368": [0.0], "2222": [1.0]}
    extras = task.extras(items, base_only)
    assert extras["vanilla"] == 50.0 and extras["incomplete_questions"] == 2


# --- extraction ---------------------------------------------------------------------------------
COLOR_ITEM = Item(id="1", question="What color is the circle?", target="B", choices=("blue", "red", "green", "dark red"))


@pytest.mark.parametrize(
    "output, expected",
    [
        ("B", "B"), ("(B)", "B"), ("B.", "B"), ("**C**", "C"), ("b", "B"), ("The answer is B", "B"),
        ("B. red", "B"), ("red (B)", "B"),
        ("A", "A"), ("A.", "A"), ("(A) blue", "A"), ("Option A is right.", "A"), ("The answer is A", "A"),
        ("A red circle.", "B"),  # the article "A" is no option letter; the text "red" decides
        ("A circle.", None),
        ("B or C", None), ("A, B", None),
        ("B is wrong and D is wrong, so the answer is C.", "C"),
        ("It is green.", "C"), ("dark red", "D"), ("red or green", None),
        ("purple", None), ("", None), ("I don't know", None),
    ],
)
def test_extraction_cases(output: str, expected: str | None) -> None:
    assert MMBench().extract(output, COLOR_ITEM) == expected


def test_option_text_holding_a_capital_letter(real_dir: Path) -> None:
    task = MMBench()
    item = by_id(task.load(real_dir))["318"]  # B = "Solution B", C = "Solution A"
    assert task.extract("Solution A", item) == "C"
    assert task.extract("Solution B", item) == "B"
    assert task.extract("C. Solution A", item) == "C"
    assert task.extract(task.target_text(item), item) == item.target == "B"


def test_target_text_shape() -> None:
    assert MMBench().target_text(COLOR_ITEM) == "red"


# --- the bundled generator ---------------------------------------------------------------------
def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    csv.field_size_limit(2**31 - 1)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mmb")
    synth.build(out, "test", 150, seed=1)
    synth.build(out, "train", 300, seed=2)
    return out


def test_bundled_round_trip_and_layout(bundled: Path) -> None:
    task = MMBench()
    for split in ("test", "train"):
        items = task.load(bundled, split)
        assert all(task.score(task.extract(task.target_text(it), it), it) == 1.0 for it in items)
        assert not any(it.metadata.get("built") for it in items)  # copies are in the file
    header, rows = read_rows(bundled / "mmbench" / "MMBench_DEV_EN.tsv")
    assert header == REAL_COLUMNS
    assert {r["split"] for r in rows} == {"dev"} and {r["source"] for r in rows} == {"synthetic"}
    assert set(r["category"] for r in rows) == set(synth.TYPES)
    assert any(r["hint"] for r in rows) and any(not r["hint"] for r in rows)
    n_options = collections.Counter(sum(1 for c in "ABCD" if r[c]) for r in rows if int(r["index"]) < 1_000_000)
    assert n_options[4] > n_options[3] + n_options[2] and n_options[2] > 0 and n_options[3] > 0
    for r in rows:  # copies reuse the base row's image through a short cell
        g = int(r["index"]) % 1_000_000
        assert (r["image"] == str(g)) == (int(r["index"]) >= 1_000_000)
        assert len(base64.b64decode(r["image"])) < 6000 if int(r["index"]) < 1_000_000 else True


def test_bundled_copies_match_the_loader_rotation(bundled: Path, tmp_path: Path) -> None:
    header, rows = read_rows(bundled / "mmbench" / "MMBench_DEV_EN.tsv")
    write_tsv(tmp_path / "mmbench" / "MMBench_DEV_EN.tsv", [r for r in rows if int(r["index"]) < 1_000_000])
    from_file = by_id(MMBench().load(bundled))
    rebuilt = by_id(MMBench().load(tmp_path))
    assert from_file.keys() == rebuilt.keys()
    assert all((from_file[i].choices, from_file[i].target) == (rebuilt[i].choices, rebuilt[i].target) for i in from_file)


def test_bundled_answers_balanced_and_text_only_at_chance(bundled: Path) -> None:
    task = MMBench()
    test = [it for it in task.load(bundled, "test") if it.metadata["copy"] == 0]
    train = [it for it in task.load(bundled, "train") if it.metadata["copy"] == 0]
    for k in (2, 3, 4):
        letters = collections.Counter(it.target for it in test if len(it.choices) == k)
        expected = sum(letters.values()) / k
        assert set(letters) == set("ABCD"[:k])
        assert all(abs(n - expected) <= max(2, 0.15 * expected) for n in letters.values())
    # A text-only model: the train split's most frequent answer text for the same question.
    seen: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    overall: collections.Counter = collections.Counter()
    for it in train:
        seen[it.question][answer_text(it)] += 1
        overall[answer_text(it)] += 1
    hits = [max(it.choices, key=lambda o: (seen[it.question][o], overall[o])) == answer_text(it) for it in test]
    chance = sum(1 / len(it.choices) for it in test) / len(test)
    assert sum(hits) / len(hits) < chance + 0.1


def test_bundled_deterministic_disjoint_and_typed(bundled: Path, tmp_path: Path) -> None:
    synth.build(tmp_path / "again", "test", 150, seed=1)
    synth.build(tmp_path / "other", "test", 150, seed=5)
    name = "mmbench/MMBench_DEV_EN.tsv"
    assert (tmp_path / "again" / name).read_bytes() == (bundled / name).read_bytes()
    assert (tmp_path / "other" / name).read_bytes() != (bundled / name).read_bytes()
    test = MMBench().load(bundled, "test")
    train = MMBench().load(bundled, "train")
    assert not {it.group for it in test} & {it.group for it in train}
    synth.build(tmp_path / "typed", "test", 20, seed=1, types=["object_localization"])
    assert {it.category for it in MMBench().load(tmp_path / "typed")} == {"object_localization"}
    with pytest.raises(HarnessError, match="unknown type"):
        synth.build(tmp_path / "bad", "test", 5, seed=1, types=["counting"])
