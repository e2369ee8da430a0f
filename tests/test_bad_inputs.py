"""A corpus of bad inputs: each must end in exit status != 0, ONE error line naming the thing, and
no new file anywhere under the test's folder (no half-written results, no stray run folders).

Cases call the CLI's main() in-process (no subprocess start-up, no model load unless the case is
about something only a loaded model can see), so the whole corpus runs in seconds.
"""
from __future__ import annotations

import errno
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from harness.cli import main

BUNDLED = Path(__file__).resolve().parents[1] / "data"


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def expect_error(tmp_path: Path, capsys, argv: list[str], needle: str, info: tuple[str, ...] = ()) -> str:
    """Run `harness argv`; assert a non-zero exit, one stderr line containing `needle`, no new files.
    `info`: starts of progress lines printed before the failure (training's loaded-data summary)."""
    capsys.readouterr()
    before = _files(tmp_path)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse usage errors exit from inside the parser
        rc = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(info or "\0")]
    assert rc not in (0, None), f"exit {rc} for {argv}: {err}"
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    assert lines[0].startswith("error:"), lines[0]
    new = _files(tmp_path) - before
    assert not new, f"new files after a failed command: {sorted(map(str, new))}"
    return lines[0]


@pytest.fixture
def geoqa(tmp_path: Path) -> Path:
    """A data dir holding the first 3 bundled geoqa test items and their images."""
    root = tmp_path / "data"
    (root / "geoqa").mkdir(parents=True)
    for name in ("test_questions.jsonl", "test_answers.jsonl", "test_meta.jsonl"):
        lines = (BUNDLED / "geoqa" / name).read_text(encoding="utf-8").splitlines()[:3]
        (root / "geoqa" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    for line in (root / "geoqa" / "test_questions.jsonl").read_text().splitlines():
        image = json.loads(line)["image"]
        dest = root / "geoqa" / "images" / image
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BUNDLED / "geoqa" / "images" / image, dest)
    return root


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders (runs/, leaderboards/) land here
    monkeypatch.delenv("HARNESS_DATA", raising=False)


def _eval(geoqa: Path, *extra: str) -> list[str]:
    return ["eval", "--ckpt", "tiny", "--tasks", "geoqa", "--data-dir", str(geoqa),
            "--output-dir", str(geoqa.parent / "runs"), *extra]


def _first_image(geoqa: Path) -> Path:
    image = json.loads((geoqa / "geoqa" / "test_questions.jsonl").read_text().splitlines()[0])["image"]
    return geoqa / "geoqa" / "images" / image


# --- data files ----------------------------------------------------------------------------------
def test_data_file_not_utf8(tmp_path, capsys, geoqa):
    path = geoqa / "geoqa" / "test_questions.jsonl"
    path.write_bytes(path.read_bytes() + b'{"question_id": 9, "text": "caf\xe9"}\n')
    expect_error(tmp_path, capsys, _eval(geoqa), "test_questions.jsonl: not UTF-8")


def test_data_file_malformed_line(tmp_path, capsys, geoqa):
    path = geoqa / "geoqa" / "test_questions.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    expect_error(tmp_path, capsys, _eval(geoqa), "test_questions.jsonl:4: malformed JSON")


def test_data_file_missing(tmp_path, capsys, geoqa):
    (geoqa / "geoqa" / "test_answers.jsonl").unlink()
    expect_error(tmp_path, capsys, _eval(geoqa), "test_answers.jsonl")


def test_data_dir_missing(tmp_path, capsys):
    expect_error(tmp_path, capsys, ["eval", "--ckpt", "tiny", "--tasks", "geoqa", "--data-dir", str(tmp_path / "nope")],
                 "data dir not found")


def test_aokvqa_file_not_utf8(tmp_path, capsys):
    (tmp_path / "d" / "aokvqa").mkdir(parents=True)
    (tmp_path / "d" / "aokvqa" / "aokvqa_v1p0_val.json").write_bytes(b'[{"question": "\xff\xfe"}]')
    expect_error(tmp_path, capsys, ["eval", "--ckpt", "tiny", "--tasks", "aokvqa_mc", "--data-dir", str(tmp_path / "d")],
                 "aokvqa_v1p0_val.json: not UTF-8")


def test_mmbench_tsv_not_utf8(tmp_path, capsys):
    (tmp_path / "d" / "mmbench").mkdir(parents=True)
    (tmp_path / "d" / "mmbench" / "MMBench_DEV_EN.tsv").write_bytes(b"index\tquestion\n1\t\xff\xfe\n")
    expect_error(tmp_path, capsys, ["eval", "--ckpt", "tiny", "--tasks", "mmbench", "--data-dir", str(tmp_path / "d")],
                 "MMBench_DEV_EN.tsv")


# --- images (decoded before any model loads) ----------------------------------------------------
def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("kind,content,needle", [
    ("zero-byte", b"", "empty file"),
    ("text", b"this is not an image\n", "cannot identify"),
    ("bomb", _png(40_000, 40_000), "decompression bomb"),
])
def test_unreadable_image(tmp_path, capsys, geoqa, kind, content, needle):
    _first_image(geoqa).write_bytes(content)
    line = expect_error(tmp_path, capsys, _eval(geoqa), needle)
    assert _first_image(geoqa).name in line


def test_truncated_image(tmp_path, capsys, geoqa):
    path = _first_image(geoqa)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    expect_error(tmp_path, capsys, _eval(geoqa), path.name)


def test_truncated_jpeg_named_png(tmp_path, capsys, geoqa):
    from PIL import Image

    path = _first_image(geoqa)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(path, format="JPEG")
    path.write_bytes(path.read_bytes()[:300])
    expect_error(tmp_path, capsys, _eval(geoqa), path.name)


def test_missing_image(tmp_path, capsys, geoqa):
    _first_image(geoqa).unlink()
    expect_error(tmp_path, capsys, _eval(geoqa), "image(s) missing")


# --- predictions (harness score) -----------------------------------------------------------------
def _score(tmp_path: Path, geoqa: Path, content: bytes | str, *extra: str) -> list[str]:
    path = tmp_path / "preds.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return ["score", "--task", "geoqa", "--data-dir", str(geoqa), "--predictions", str(path),
            "--out", str(tmp_path / "scored"), *extra]


def _pred(i: int, output="Answer: A", **more) -> str:
    return json.dumps({"id": i, "output": output, **more}) + "\n"


@pytest.mark.parametrize("content,needle", [
    (b'{"id": 0, "output": "caf\xe9"}\n', "preds.jsonl: not UTF-8"),
    ("{oops\n", "preds.jsonl:1: malformed JSON"),
    ("[1, 2]\n", "preds.jsonl:1: expected"),
    (_pred(12345), "id '12345' is not in the benchmark"),
    (json.dumps({"id": 0, "output": 7}) + "\n", '"output" must be a string'),
    (_pred(0, sample=-1), '"sample" must be a non-negative integer'),
    (_pred(0) + _pred(0), "duplicate output for id '0'"),
    ("\n\n", "no predictions found"),
    (_pred(0), "2 of 3 geoqa item(s) have no prediction"),
])
def test_bad_predictions(tmp_path, capsys, geoqa, content, needle):
    expect_error(tmp_path, capsys, _score(tmp_path, geoqa, content), needle)


def test_predictions_file_missing(tmp_path, capsys, geoqa):
    argv = _score(tmp_path, geoqa, "")
    (tmp_path / "preds.jsonl").unlink()
    expect_error(tmp_path, capsys, argv, "predictions file not found")


# --- checkpoints ---------------------------------------------------------------------------------
def test_checkpoint_missing(tmp_path, capsys, geoqa):
    expect_error(tmp_path, capsys, _eval(geoqa)[:2] + [str(tmp_path / "nope")] + _eval(geoqa)[3:], "nope")


def test_checkpoint_folder_without_model(tmp_path, capsys, geoqa):
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path, capsys, _eval(geoqa)[:2] + [str(tmp_path / "empty")] + _eval(geoqa)[3:], "empty")


def test_checkpoint_with_unsafe_name(tmp_path, capsys, geoqa):
    from harness.models.checkpoints import resolve_checkpoint

    bad = tmp_path / "=cmd|' C calc'!A0"
    shutil.copytree(resolve_checkpoint("tiny").path, bad)
    expect_error(tmp_path, capsys, _eval(geoqa)[:2] + [str(bad)] + _eval(geoqa)[3:], "not a safe name")


def test_checkpoint_with_broken_weights(tmp_path, capsys, geoqa):
    from harness.models.checkpoints import resolve_checkpoint

    broken = tmp_path / "broken"
    shutil.copytree(resolve_checkpoint("tiny").path, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"\0" * 100)
    expect_error(tmp_path, capsys, _eval(geoqa)[:2] + [str(broken)] + _eval(geoqa)[3:], "broken")


# --- flags ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags,needle", [
    (["--temperature", "inf"], "--temperature"),
    (["--temperature", "nan"], "--temperature"),
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "hot"], "--temperature"),
    (["--top-k", "-5"], "--top-k"),
    (["--top-p", "0"], "--top-p"),
    (["--top-p", "1.5"], "--top-p"),
    (["--batch-size", "0"], "--batch-size"),
    (["--limit", "abc"], "--limit"),
    (["--seed", "abc"], "--seed"),
    (["--n-samples", "4"], "--temperature > 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
])
def test_bad_eval_flags(tmp_path, capsys, geoqa, flags, needle):
    expect_error(tmp_path, capsys, _eval(geoqa, *flags), needle)


def test_unknown_task(tmp_path, capsys):
    expect_error(tmp_path, capsys, ["eval", "--ckpt", "tiny", "--tasks", "nope"], "unknown task 'nope'")


@pytest.mark.parametrize("ns,needle", [
    ("1..1000000000", "n=1000000000 exceeds"),
    ("5..1", "runs backwards"),
    ("1,x", "'x' is not a number"),
])
def test_bad_compare_n(tmp_path, capsys, geoqa, ns, needle):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(_pred(i, sample=k) for i in range(3) for k in range(2)))
    expect_error(tmp_path, capsys, ["compare", "majority-vote", "--task", "geoqa", "--data-dir", str(geoqa),
                                    "--predictions", str(preds), "--n", ns, "--out", str(tmp_path / "c")], needle)


# --- leaderboard specs ---------------------------------------------------------------------------
SPEC = """baseline: tiny
checkpoints: [tiny]
tasks: [geoqa]
"""


@pytest.mark.parametrize("spec,needle", [
    ("name: ../../evil\n" + SPEC, "leaderboard name '../../evil' is not a safe name"),
    ("name: a/b\n" + SPEC, "not a safe name"),
    ("baseline: tiny\ncheckpoints: [tiny, {name: ../x, recipe: {trainer: sft}}]\ntasks: [geoqa]\n",
     "checkpoint name '../x' is not a safe name"),
    ("baseline: tiny\ncheckpoints: [tiny, {name: 'a/b', recipe: {trainer: sft}}]\ntasks: [geoqa]\n",
     "checkpoint name 'a/b'"),
    ("baseline: tiny\ncheckpoints: [tiny, {name: \"=cmd|' /C calc'!A0\", path: x}]\ntasks: [geoqa]\n", "not a safe name"),
    ("baseline: tiny\ncheckpoints: [tiny, {name: ok, recipe: {trainer: ../sft}}]\ntasks: [geoqa]\n",
     "recipe trainer '../sft'"),
    ("baseline: tiny\ncheckpoints: [tiny, {name: ok, path: ../../out, recipe: {trainer: sft}}]\ntasks: [geoqa]\n",
     "without '..'"),
    ("baseline: tiny\ncheckpoints: [tiny, {name: ok, path: built/ok, recipe: {trainer: sft, out: ../up}}]\n"
     "tasks: [geoqa]\n", "out must be a folder path without '..'"),
    (SPEC + "seed: abc\n", "seed must be an integer, got 'abc'"),
    (SPEC + "seed: 1.5\n", "seed must be an integer"),
    (SPEC + "generation: {temperature: hot}\n", "temperature must be a number, got 'hot'"),
    (SPEC + "generation: {temperature: .inf}\n", "temperature must be a finite number"),
    (SPEC + "generation: {top_k: -5}\n", "top_k must be >= 0"),
    (SPEC + "generation: {top_p: 2}\n", "top_p must be in (0, 1]"),
    (SPEC + "generation: {batch_size: 1.5}\n", "batch_size must be an integer"),
    (SPEC + "generation: [1]\n", "generation must be a mapping"),
    (SPEC + "bootstrap: lots\n", "bootstrap must be an integer"),
    (SPEC + "colour: red\n", "unknown key(s) colour"),
    ("baseline: [oops\n", "not valid YAML"),
])
def test_bad_spec(tmp_path, capsys, spec, needle):
    (tmp_path / "lb").mkdir()
    path = tmp_path / "lb" / "spec.yaml"
    path.write_text(spec, encoding="utf-8")
    expect_error(tmp_path, capsys, ["leaderboard", "--spec", str(path)], needle)


def test_spec_not_utf8(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_bytes(SPEC.encode() + b"name: caf\xe9\n")
    expect_error(tmp_path, capsys, ["leaderboard", "--spec", str(path)], "spec.yaml: not UTF-8")


# --- storage -------------------------------------------------------------------------------------
def test_disk_full_while_writing_results(tmp_path, capsys, geoqa, monkeypatch):
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    preds = "".join(_pred(i) for i in range(3))
    expect_error(tmp_path, capsys, _score(tmp_path, geoqa, preds)[:-2] + ["--out", str(tmp_path / "scored")],
                 "No space left on device; free disk space")


def test_read_only_output(tmp_path, capsys, geoqa, monkeypatch):
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "scored"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    preds = "".join(_pred(i) for i in range(3))
    expect_error(tmp_path, capsys, _score(tmp_path, geoqa, preds), "choose a writable output folder")


def test_cache_disk_full_is_one_line(tmp_path):
    import sqlite3

    from harness.errors import HarnessError
    from harness.core.store import GenerationCache

    cache = GenerationCache(tmp_path / "gen.sqlite")

    class Full:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def executemany(self, *a):
            raise sqlite3.OperationalError("database or disk is full")

    cache._conn = Full()
    with pytest.raises(HarnessError, match="gen.sqlite: cannot write .*free disk space"):
        cache.put_many([("k", "out", {})])


@pytest.mark.slow
def test_corrupt_generation_cache(tmp_path, capsys, geoqa):
    """Needs a model load (the cache is opened after the prompts are checked)."""
    cache = geoqa.parent / "runs" / ".cache" / "generations.sqlite"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"this is not a database" * 100)
    expect_error(tmp_path, capsys, _eval(geoqa, "--limit", "1"), "generations.sqlite is damaged")


@pytest.mark.slow
def test_prompt_longer_than_context(tmp_path, capsys, geoqa):
    """A 10 MB question is refused before generation (and never tokenized)."""
    path = geoqa / "geoqa" / "test_questions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["text"] = rows[0]["text"].replace("Question:", "Question:" + "x " * 5_000_000, 1)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    expect_error(tmp_path, capsys, _eval(geoqa), "exceeds the model's context")


@pytest.mark.parametrize("override,needle", [
    ("temperature=inf", "temperature must be a finite number"),   # self_critique's range is only "> 0"
    ("temperature=nan", "temperature must be a finite number"),
    ("learning_rate=.inf", "learning_rate must be a finite number"),
    ("top_p=2", "top_p must be in (0, 1]"),
    ("lora_r=abc", "lora_r"),
])
def test_bad_treatment_config(tmp_path, capsys, override, needle):
    """Treatment config values are checked before the base loads: nothing is written under --out."""
    expect_error(tmp_path, capsys, ["train", "self_critique", "--base", "tiny", "--task", "geoqa",
                                    "--out", str(tmp_path / "out"), override], needle)


# --- training outputs (issue 30): nothing a user owns is replaced ----------------------------------
def _train(out: str, *extra: str) -> list[str]:
    return ["train", "sft", "--base", "tiny", "--task", "geoqa", "--out", out, *extra, "limit=8"]


def test_overwrite_refuses_a_folder_of_anything_else(tmp_path, capsys):
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "notes.txt").write_text("precious")
    expect_error(tmp_path, capsys, _train("victim", "--overwrite"), "victim holds notes.txt and is not a checkpoint")
    assert (tmp_path / "victim" / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize("out,needle", [
    (".", "is the working directory"),
    ("..", "is a folder above the working directory"),
    (str(BUNDLED.parent), "is the project's root"),
])
def test_overwrite_never_replaces_the_working_directory(tmp_path, capsys, out, needle):
    (tmp_path / "mine.txt").write_text("kept")
    expect_error(tmp_path, capsys, _train(out, "--overwrite"), needle)
    assert (tmp_path / "mine.txt").read_text() == "kept"


def test_overwrite_refuses_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("kept")
    expect_error(tmp_path, capsys, _train("f", "--overwrite"), "f is a file")


@pytest.mark.parametrize("command", [
    ["score", "--task", "geoqa", "--predictions", "p.jsonl", "--out", "{out}"],
    ["view", "runs", "--out", "{out}"],
])
def test_score_and_view_refuse_a_folder_of_anything_else(tmp_path, capsys, command):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.json").write_text("[my own file]")
    argv = [a.replace("{out}", "mine") for a in command]
    expect_error(tmp_path, capsys, argv, "mine holds summary.json")
    assert (tmp_path / "mine" / "summary.json").read_text() == "[my own file]"
    expect_error(tmp_path, capsys, [a.replace("{out}", ".") for a in command], "is the working directory")


def test_leaderboard_refuses_a_folder_of_anything_else(tmp_path, capsys):
    (tmp_path / "lb" / "board").mkdir(parents=True)
    (tmp_path / "lb" / "board" / "thesis.tex").write_text("kept")
    (tmp_path / "lb" / "spec.yaml").write_text("name: board\n" + SPEC)
    expect_error(tmp_path, capsys, ["leaderboard", "--spec", str(tmp_path / "lb" / "spec.yaml")],
                 "leaderboard folder")


def test_train_refuses_an_out_another_run_holds(tmp_path, capsys):
    """The lock as a second process sees it (the real two-process race is in test_concurrency.py)."""
    import fcntl
    import os

    lock = tmp_path / ".held.harness-lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    os.write(fd, b"4242")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        import subprocess
        import sys

        code = ("import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))")
        res = subprocess.run([sys.executable, "-c", code, *_train("held")], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    finally:
        os.close(fd)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: held is being written by another harness process (pid 4242)")
    assert not (tmp_path / "held").exists()


# --- own training data (issue 30): bounded before anything large is built ---------------------------
def _meta(tmp_path: Path, repeat_time) -> Path:
    shutil.copytree(BUNDLED / "examples", tmp_path / "ex")
    meta = tmp_path / "ex" / "mmpr_meta.json"
    data = json.loads(meta.read_text())
    data["colours"]["repeat_time"] = repeat_time
    meta.write_text(json.dumps(data))  # json writes NaN as NaN, as a careless script would
    return meta


def _train_data(tmp_path: Path, spec: str, *extra: str) -> list[str]:
    return ["train", "sft", "--base", "tiny", "--data", spec, "--out", str(tmp_path / "o"), *extra, "max_steps=1"]


@pytest.mark.parametrize("repeat_time,needle", [
    (1e7, "40,000,000 rows, over the budget"),
    (1e9, "over the budget"),
    (float("nan"), "repeat_time must be a finite number > 0, got nan"),
    (float("inf"), "repeat_time must be a finite number > 0, got inf"),
    (-1, "repeat_time must be a finite number > 0"),
])
def test_mmpr_repeat_time_bounded(tmp_path, capsys, repeat_time, needle):
    meta = _meta(tmp_path, repeat_time)
    line = expect_error(tmp_path, capsys, _train_data(tmp_path, str(meta)), needle)
    assert "mmpr_meta.json" in line


def test_ratio_bounded(tmp_path, capsys):
    line = expect_error(tmp_path, capsys, _train_data(tmp_path, str(BUNDLED / "examples" / "llava.json") + ":1000000000"),
                        "over the budget")
    assert "llava.json" in line


@pytest.mark.parametrize("ratio", [".nan", ".inf", "0", "-2"])
def test_recipe_ratio_finite(tmp_path, capsys, ratio):
    import yaml

    from harness.errors import HarnessError
    from trainers.formats import parse_spec

    with pytest.raises(HarnessError, match="ratio must be a finite number > 0"):
        parse_spec([{"path": "a.json", "ratio": yaml.safe_load(ratio)}])


def test_deeply_nested_json(tmp_path, capsys):
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    expect_error(tmp_path, capsys, _train_data(tmp_path, str(tmp_path / "deep.json")), "deep.json: JSON nested too deeply")
    (tmp_path / "deep.jsonl").write_text('{"messages": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    expect_error(tmp_path, capsys, _train_data(tmp_path, str(tmp_path / "deep.jsonl")), "deep.jsonl")


def test_json_file_too_large(tmp_path, capsys, monkeypatch):
    import trainers.formats

    monkeypatch.setattr(trainers.formats, "MAX_JSON_BYTES", 100)
    expect_error(tmp_path, capsys, _train_data(tmp_path, str(BUNDLED / "examples" / "llava.json")),
                 "llava.json: 0.0 GiB is over")


def test_corrupt_save_to_disk_folder(tmp_path, capsys):
    shutil.copytree(BUNDLED / "examples" / "messages_disk", tmp_path / "disk")
    arrow = next((tmp_path / "disk").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:200])
    expect_error(tmp_path, capsys, _train_data(tmp_path, str(tmp_path / "disk")),
                 "disk: cannot read the save_to_disk folder")


def test_jsonl_data_not_utf8(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_bytes(b'{"messages": "caf\xe9"}\n')
    expect_error(tmp_path, capsys, _train_data(tmp_path, str(tmp_path / "bad.jsonl")), "bad.jsonl: not UTF-8")


def _long_reply(tmp_path: Path, chars: int) -> Path:
    rows = json.loads((BUNDLED / "examples" / "llava.json").read_text())[:2]
    rows[1]["conversations"][-1]["value"] = "ab " * (chars // 3)
    path = tmp_path / "long.json"
    path.write_text(json.dumps(rows))
    shutil.copytree(BUNDLED / "examples" / "images", tmp_path / "images")
    return path


@pytest.mark.parametrize("chars,needle", [
    (2_000_000, "row long:shape1 has over 31,2"),   # never tokenized: it cannot fit
    (15_000, "row long:shape1 has over 10,0"),      # 10,000 text tokens: never collated either
])
def test_row_longer_than_the_context(tmp_path, capsys, chars, needle):
    line = expect_error(tmp_path, capsys, _train_data(tmp_path, str(_long_reply(tmp_path, chars))), needle,
                        info=("data: ",))
    assert "context of 1,024" in line and "--long-rows truncate" in line


@pytest.mark.slow
def test_long_rows_truncate_trains(tmp_path, capsys):
    path = _long_reply(tmp_path, 30_000)
    assert main(_train_data(tmp_path, str(path), "--long-rows", "truncate")) == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["data"]["sources"][0]["long_rows"] == "truncate"


@pytest.mark.slow
def test_disk_full_while_saving_a_checkpoint(tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    import peft.utils.save_and_load  # noqa: F401
    from peft import PeftModel

    def full(*a, **k):
        # the text of the installed safetensors on a full tmpfs (older ones say "code: 28, kind: StorageFull")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(PeftModel, "save_pretrained", full)
    expect_error(tmp_path, capsys, _train_data(tmp_path, str(BUNDLED / "examples" / "llava.json")),
                 "o: No space left on device; free disk space", info=("data: ", "sft "))


# --- run files (issue 30): every reader re-scores what it reads and names the line it rejects --------
def _scored_run(tmp_path: Path, data: Path, name: str, answers: str = "ABA") -> Path:
    """A real run folder: `harness score` of the 3-item geoqa fixture into NAME/geoqa."""
    preds = tmp_path / f"{name}.jsonl"
    preds.write_text("".join(_pred(i, f"Answer: {a}") for i, a in enumerate(answers)))
    run = tmp_path / name / "geoqa"
    assert main(["score", "--task", "geoqa", "--data-dir", str(data), "--predictions", str(preds), "--out", str(run)]) == 0
    return run


def _edit_line(run: Path, line: int, **fields) -> None:
    path = run / "samples.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[line - 1].update(fields)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # a NaN is written as JSON's NaN, as by hand


def _reader(name: str, run: Path, data: Path) -> list[str]:
    return {"view": ["view", str(run), "--out", str(run.parent / "pages")],
            "diff": ["diff", str(run), str(run), "--task", "geoqa", "--data-dir", str(data)],
            "power": ["power", "--task", "geoqa", "--run", str(run), "--data-dir", str(data)]}[name]


@pytest.mark.parametrize("bad", [float("nan"), "high", None, 50.0, -3], ids=["NaN", "string", "null", "50.0", "-3"])
@pytest.mark.parametrize("reader", ["view", "diff", "power"])
def test_readers_refuse_a_bad_stored_score(tmp_path, capsys, geoqa, reader, bad):
    """`harness view` on "score": NaN or "high", `harness power` on a NaN, string or null score: tracebacks once."""
    run = _scored_run(tmp_path, geoqa, "ckpt")
    _edit_line(run, 2, score=bad)
    expect_error(tmp_path, capsys, _reader(reader, run, geoqa), f"{run / 'samples.jsonl'}:2: score {bad!r}")


def test_power_refuses_a_vanishing_delta(tmp_path, capsys, geoqa):
    run = _scored_run(tmp_path, geoqa, "ckpt")
    expect_error(tmp_path, capsys, _reader("power", run, geoqa) + ["--delta", "1e-300"], "--delta 1e-300 must be between")


def _runs_board(tmp_path: Path, data: Path, *rows: str) -> list[str]:
    """A model-free board: one {name, runs: DIR} row per name (the first is the baseline)."""
    spec = tmp_path / "board.yaml"
    checkpoints = ", ".join(f"{{name: {r}, runs: {tmp_path / r}}}" for r in rows)
    spec.write_text(f"name: board\nbaseline: {rows[0]}\ncheckpoints: [{checkpoints}]\ntasks: [geoqa]\n"
                    f"data_dir: {data}\nbootstrap: 100\n")
    return ["leaderboard", "--spec", str(spec)]


@pytest.mark.parametrize("bad", [50.0, -3])
def test_runs_board_refuses_an_out_of_range_score(tmp_path, capsys, geoqa, bad):
    """It used to reach the forest plot and fail there (a ValueError)."""
    _scored_run(tmp_path, geoqa, "base")
    run = _scored_run(tmp_path, geoqa, "other", "AAA")
    _edit_line(run, 3, score=bad)
    expect_error(tmp_path, capsys, _runs_board(tmp_path, geoqa, "base", "other"), f"{run / 'samples.jsonl'}:3: score {bad}")


def test_runs_board_refuses_torn_lines_unless_allowed(tmp_path, capsys, geoqa):
    """Torn lines used to be skipped with a footnote that named no file (--allow-missing: test_run_reads)."""
    _scored_run(tmp_path, geoqa, "base")
    run = _scored_run(tmp_path, geoqa, "other", "AAA")
    with (run / "samples.jsonl").open("a") as f:
        f.write('{"id": "2", "sample": 1, "outp')
    line = expect_error(tmp_path, capsys, _runs_board(tmp_path, geoqa, "base", "other"),
                        f"{run / 'samples.jsonl'}:4: torn or malformed line")
    assert "--allow-missing" in line


def test_runs_board_refuses_runs_scored_on_other_data(tmp_path, capsys, geoqa):
    """Re-scored against another copy of the benchmark (same ids, other targets), a run's scores would
    be that copy's, published as a re-score; the record's data hash says it was scored elsewhere."""
    other = tmp_path / "other-data"
    shutil.copytree(geoqa, other)
    answers = other / "geoqa" / "test_answers.jsonl"
    rows = [json.loads(x) for x in answers.read_text().splitlines()]
    rows[0]["text"] = "D" if rows[0]["text"] != "D" else "C"
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _scored_run(tmp_path, geoqa, "base")
    _scored_run(tmp_path, other, "elsewhere")
    board = _runs_board(tmp_path, geoqa, "base", "elsewhere")
    expect_error(tmp_path, capsys, board, f"1 item(s) (e.g. '0') differ from the geoqa data it was scored on ({other})")
    shutil.rmtree(other)  # the copy it was scored on is gone: the hash alone tells
    expect_error(tmp_path, capsys, board, "scored on other geoqa items than the data dir here holds")


# --- terminal text (issue 30): control characters from files are shown, never sent ---------------------
def test_diff_shows_escape_sequences_instead_of_sending_them(tmp_path, capsys, geoqa):
    evil = "\x1b[2J\x1b]0;pwned\x07ckpt\u202e"
    for name, answer in (("a", "A"), ("b", "B")):
        preds = tmp_path / f"{name}.jsonl"
        preds.write_text("".join(_pred(i, f"Answer: {answer}\x1b[31m") for i in range(3)))
        assert main(["score", "--task", "geoqa", "--data-dir", str(geoqa), "--predictions", str(preds),
                     "--out", str(tmp_path / name)]) == 0
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        summary["checkpoint"] = {"name": evil + name}
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--task", "geoqa", "--data-dir", str(geoqa)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[2J\\x1b]0;pwned\\x07ckpt\\u202ea" in out  # the title names both checkpoints, visibly
    # error lines echo names the same way
    expect_error(tmp_path, capsys, ["diff", str(tmp_path / ("x" + evil)), str(tmp_path / "b"), "--task", "geoqa"],
                 "\\x1b[2J")


def test_power_shows_escape_sequences_in_a_pilot_path(tmp_path, capsys, geoqa):
    run = _scored_run(tmp_path, geoqa, "p\x1b[2J\x1b]0;pwned\x07", "CAB")
    capsys.readouterr()
    assert main(_reader("power", run, geoqa)) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "p\\x1b[2J\\x1b]0;pwned\\x07/geoqa" in out
