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


def expect_error(tmp_path: Path, capsys, argv: list[str], needle: str) -> str:
    """Run `harness argv`; assert a non-zero exit, one stderr line containing `needle`, no new files."""
    capsys.readouterr()
    before = _files(tmp_path)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse usage errors exit from inside the parser
        rc = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
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
