"""Bridges: our tasks exported to lmms-eval, lmms-eval runs imported into our store, generic LMUData
TSVs, VLMEvalKit result files, and our MMBench extraction against VLMEvalKit's `can_infer`."""
from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import logging
import os
import sys
import types
from pathlib import Path

import pytest

from conftest import BUNDLED, run_cli
from harness.bridges import lmms, lmms_import
from harness.bridges.lmms_export import export_task
from harness.errors import HarnessError
from harness.core.task import get_task

HAS_LMMS = importlib.util.find_spec("lmms_eval") is not None and importlib.util.find_spec("decord") is not None


def _load_utils(yaml_path: Path):
    path = yaml_path.with_name(yaml_path.stem + "_utils.py")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- export-lmms-task ---------------------------------------------------------------------------
def test_exported_geoqa_task_scores_like_our_task(tmp_path):
    task = get_task("geoqa", extract="r3v")
    path = export_task(task, BUNDLED, tmp_path)
    assert path.name == "harness_geoqa_extract_r3v.yaml"
    names, include = lmms.parse_task_specs([str(path)])
    assert names == ["harness_geoqa_extract_r3v"] and include == [str(tmp_path.resolve())]
    text = path.read_text()
    assert "dataset_path: json" in text and str(BUNDLED.resolve() / "geoqa" / "test_questions.jsonl") in text
    utils = _load_utils(path)
    item = task.load(BUNDLED)[0]
    doc = {"question_id": int(item.id), "image": "test/0.png", "text": "..."}
    assert utils.doc_to_text(doc) == task.prompt(item)
    assert utils.doc_to_target(doc) == item.target
    assert utils.doc_to_visual(doc)[0].mode == "RGB"
    for output in (f"so (B) then ... answer {item.target}", "no marker at all", ""):
        got = utils.process_results(doc, [output])
        extracted = task.extract(output, item)
        assert got == {"accuracy": task.score(extracted, item), "parsed": float(extracted is not None)}


def test_exported_aokvqa_da_keeps_the_rows_our_loader_keeps(tmp_path):
    datasets = pytest.importorskip("datasets")
    path = export_task(get_task("aokvqa_da"), BUNDLED, tmp_path)
    utils = _load_utils(path)
    rows = datasets.load_dataset("json", data_files={"test": str(BUNDLED / "aokvqa" / "aokvqa_v1p0_val.json")},
                                 cache_dir=str(tmp_path / "hf"))["test"]
    kept = utils.process_docs(rows)
    items = get_task("aokvqa_da").load(BUNDLED)
    assert len(kept) == len(items) < len(rows)  # difficult questions dropped, as in our task
    assert kept[0]["harness_category"] == items[0].category
    assert utils.process_results(kept[0], [items[0].target[0]])["accuracy"] > 0


@pytest.mark.parametrize("args, message", [
    (["export-lmms-task", "mmbench", "--out", "X"], "lmms-eval has its own MMBench"),
    (["export-lmms-task", "aokvqa_mc", "--mc-mode", "likelihood", "--out", "X"], "only generation modes"),
    (["eval", "--engine", "lmms-eval", "--ckpt", "tiny", "--tasks", "geoqa", "--extract", "r3v"], "--extract do not apply"),
    (["eval", "--ckpt", "tiny", "--tasks", "geoqa", "--lmms-metric", "acc"], "only with --engine lmms-eval"),
    (["eval", "--engine", "lmms-eval", "--ckpt", "tiny", "--tasks", "missing.yaml"], "task YAML not found"),
])
def test_bridge_commands_reject_bad_inputs(tmp_path, args, message):
    res = run_cli(*[str(tmp_path / a) if a == "X" else a for a in args])
    assert res.returncode == 2 and message in res.stderr, res.stderr


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision present: the wrapper can load")
def test_qwen2_vl_wrapper_without_torchvision_is_refused_up_front(tmp_path):
    from trainers.tiny_model import build_tiny, build_tokenizer

    ckpt = build_tiny("qwen2vl", build_tokenizer(["what colour is it"], vocab_size=300), tmp_path / "q", image_size=32,
                      patch_size=8, hidden=32, layers=1, heads=2, vision_hidden=16, vision_layers=1, vision_heads=2)
    export_task(get_task("geoqa"), BUNDLED, tmp_path / "t")
    res = run_cli("eval", "--engine", "lmms-eval", "--ckpt", str(ckpt), "--tasks", str(tmp_path / "t" / "harness_geoqa.yaml"),
                  "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 2 and "qwen2_vl wrapper needs torchvision" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_lmms_eval_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lmms_eval", None)  # makes `import lmms_eval` raise ImportError
    with pytest.raises(HarnessError, match=r"pip install '\.\[lmms\]'"):
        lmms.require_lmms()


# --- importing lmms-eval samples ------------------------------------------------------------------
def _logged(doc_id, doc, output, filtered, **metrics):
    return {"doc_id": doc_id, "doc": doc, "target": "x", "arguments": ["prompt"], "resps": [[output]],
            "filtered_resps": [filtered], "input": "prompt", **metrics}


OK_VQA_CONFIG = {"metric_list": [{"metric": "submission"}, {"metric": "exact_match"}]}


def test_import_of_a_generic_lmms_task_follows_our_contract(tmp_path):
    samples = [
        _logged(0, {"question_id": 7, "question_type": "color"}, "Red.", "red", exact_match=1.0, submission={"a": 1}),
        _logged(1, {"question_id": 9, "question_type": "count"}, "maybe", "[invalid]", exact_match=0.0, submission={}),
        _logged(2, {"question_id": 11, "question_type": "count"}, "3", "3", exact_match=1.0, submission={}),
    ]
    summary = lmms_import.import_task_samples("ok_vqa", samples, OK_VQA_CONFIG, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == ["7", "9", "11"]  # the benchmark's id, not lmms-eval's position
    for r in lines:
        assert {"id", "sample", "output", "extracted", "score", "category"} <= r.keys() and r["lmms_metric"] == "exact_match"
    assert lines[0]["output"] == "Red." and lines[0]["extracted"] == "red" and lines[1]["extracted"] is None
    assert summary["task"] == "lmms-ok_vqa" and summary["n"] == 3 and summary["unparsed"] == 1
    assert summary["score"] == pytest.approx(200 / 3) and summary["ci_low"] < summary["score"] < summary["ci_high"]
    assert summary["categories"] == {"color": 100.0, "count": 50.0}
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["score"] == summary["score"]


def test_import_refuses_tasks_without_per_sample_scores(tmp_path):
    judged = [_logged(0, {"index": 1}, "B", "B", gpt_eval_score={"prediction": "B"})]
    with pytest.raises(HarnessError, match="no metric with a per-sample number"):
        lmms_import.import_task_samples("mmbench_en_dev", judged, {"metric_list": [{"metric": "gpt_eval_score"}]}, tmp_path)
    with pytest.raises(HarnessError, match="--lmms-metric 'submission' has no number"):
        lmms_import.import_task_samples("ok_vqa", [_logged(0, {}, "a", "a", exact_match=1.0, submission={})],
                                 OK_VQA_CONFIG, tmp_path, metric="submission")
    empty = [_logged(0, {}, "", "", exact_match=0.0)]
    with pytest.raises(HarnessError, match="every output is empty"):
        lmms_import.import_task_samples("ok_vqa", empty, OK_VQA_CONFIG, tmp_path)
    assert not (tmp_path / "samples.jsonl").exists()


def test_import_of_an_exported_task_rescored_by_our_rule(tmp_path):
    task = get_task("geoqa")
    items = task.load(BUNDLED)[:2]
    outputs = [f"x Answer: {items[0].target}", "no answer"]
    samples = [_logged(i, {"question_id": int(it.id)}, out, out, accuracy=float(i == 0)) for i, (it, out) in enumerate(zip(items, outputs))]
    config = {"metadata": {"harness_task": "geoqa", "harness_options": {"extract": "strict"}, "harness_data_dir": str(BUNDLED)}}
    summary = lmms_import.import_task_samples("harness_geoqa", samples, config, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["extracted"] for r in lines] == [items[0].target, None] and [r["score"] for r in lines] == [1.0, 0.0]
    assert summary["lmms_disagreements"] == 0 and summary["categories"]
    # Repeats (--n-samples 2): one request per repeat, each scored on its own by our rule.
    repeated = dict(samples[0], resps=[[outputs[0]], ["nothing"]], filtered_resps=[outputs[0], "nothing"])
    lmms_import.import_task_samples("harness_geoqa", [repeated], config, tmp_path / "k")
    lines = [json.loads(x) for x in (tmp_path / "k" / "samples.jsonl").read_text().splitlines()]
    assert [(r["sample"], r["output"], r["score"]) for r in lines] == [(0, outputs[0], 1.0), (1, "nothing", 0.0)]
    with pytest.raises(HarnessError, match="--n-samples > 1"):
        lmms_import.import_task_samples("ok_vqa", [dict(repeated, exact_match=1.0)], OK_VQA_CONFIG, tmp_path / "g")


def test_tiny_gets_the_processor_config_llava_hf_needs(tmp_path):
    import shutil

    from transformers import AutoProcessor
    from PIL import Image

    from harness.models.checkpoints import resolve_checkpoint, tiny_path

    assert lmms.model_dir(resolve_checkpoint("tiny"), tmp_path) == tiny_path()  # tiny ships one (save_for_engines)
    bare = tmp_path / "bare"  # a LLaVA checkpoint saved without processor_config.json
    shutil.copytree(tiny_path(), bare, ignore=shutil.ignore_patterns("processor_config.json"))
    ref = resolve_checkpoint(str(bare))
    view = lmms.model_dir(ref, tmp_path)
    assert view == tmp_path / ref.content_hash and lmms.model_dir(ref, tmp_path) == view  # built once
    config = json.loads((view / "processor_config.json").read_text())
    assert config["patch_size"] == 16 and config["num_additional_image_tokens"] == 1
    processor = AutoProcessor.from_pretrained(view)
    side = json.loads((tiny_path() / "preprocessor_config.json").read_text())["crop_size"]["height"]
    batch = processor(images=[Image.new("RGB", (side, side))], text="USER: <image>\nq ASSISTANT:", return_tensors="pt")
    assert int((batch["input_ids"] == 3).sum()) == (side // 16) ** 2  # one token per patch, CLS dropped as in HFBackend


LMMS_LOADS_TASK = """
import json, os, sys
os.environ["HF_DATASETS_OFFLINE"] = "1"
from lmms_eval.tasks import TaskManager, get_task_dict
manager = TaskManager("WARNING", include_path=sys.argv[1], include_defaults=False)
task = get_task_dict(["harness_aokvqa_mc"], manager)["harness_aokvqa_mc"]
docs = task.test_docs()
doc = docs[0]
print(json.dumps({"n": len(docs), "text": task.doc_to_text(doc), "target": task.doc_to_target(doc),
                  "images": len(task.doc_to_visual(doc)), "result": task.process_results(doc, ["(B)"])}))
"""


@pytest.mark.skipif(not HAS_LMMS, reason="lmms-eval not installed (make setup installs it; README: Bridges)")
def test_lmms_eval_loads_the_exported_task(tmp_path):
    """lmms-eval's own TaskManager reads the exported YAML over the bundled data (no model: ~15 s,
    most of it importing lmms-eval, in a subprocess so its logging setup stays out of pytest)."""
    import subprocess

    task = get_task("aokvqa_mc")
    export_task(task, BUNDLED, tmp_path)
    res = subprocess.run([sys.executable, "-c", LMMS_LOADS_TASK, str(tmp_path)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "HF_HOME": str(tmp_path / "hf")})
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    item = task.load(BUNDLED)[0]
    assert got["n"] == len(task.load(BUNDLED)) and got["text"] == task.prompt(item) and got["target"] == item.target
    assert got["images"] == 1 and got["result"] == {"accuracy": task.score("B", item), "parsed": 1.0}


# In CI on purpose (about 20 s): the issue asks for lmms-eval on tiny with a local task YAML.
@pytest.mark.skipif(not HAS_LMMS, reason="lmms-eval not installed (make setup installs it; README: Bridges)")
def test_lmms_eval_runs_the_exported_task_on_tiny(tmp_path):
    """lmms-eval's simple_evaluate + llava_hf wrapper on the exported task, imported into our store;
    its outputs must be the ones our own engine generates for the same items (same template)."""
    export = run_cli("export-lmms-task", "geoqa", "--out", str(tmp_path / "t"))
    assert export.returncode == 0, export.stderr
    res = run_cli("eval", "--engine", "lmms-eval", "--ckpt", "tiny", "--tasks", str(tmp_path / "t" / "harness_geoqa.yaml"),
                  "--limit", "3", "--output-dir", str(tmp_path / "runs"), "--device", "cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "tiny" / "lmms-harness_geoqa"
    ours = run_cli("eval", "--ckpt", "tiny", "--tasks", "geoqa", "--limit", "3", "--output-dir", str(tmp_path / "runs"))
    assert ours.returncode == 0, ours.stderr
    theirs = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    mine = {r["id"]: r for r in map(json.loads, (tmp_path / "runs" / "tiny" / "geoqa" / "samples.jsonl").read_text().splitlines())}
    assert [r["id"] for r in theirs] == [it.id for it in get_task("geoqa").load(BUNDLED)[:3]]
    for r in theirs:
        assert r["output"].strip() == mine[r["id"]]["output"] and r["score"] == mine[r["id"]]["score"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n"] == 3 and summary["engine"] == "lmms-eval" and summary["lmms_disagreements"] == 0
    assert list((tmp_path / "runs" / "tiny" / "lmms-eval-logs").glob("*/*_samples_harness_geoqa.jsonl"))


@pytest.mark.skipif(not HAS_LMMS, reason="lmms-eval not installed (make setup installs it; README: Bridges)")
def test_leaderboard_spec_names_an_lmms_eval_task(tmp_path, random_tiny, monkeypatch):
    """`{lmms: task.yaml}` in a spec: each row (not its blind run) gets an lmms-<task> column with our
    statistics, paired item by item; an unchanged re-run does not run lmms-eval again."""
    from harness.report.leaderboard import load_spec, run_leaderboard

    assert run_cli("export-lmms-task", "geoqa", "--out", str(tmp_path / "t")).returncode == 0
    spec = tmp_path / "lb.yaml"
    spec.write_text(
        f"baseline: tiny\ncheckpoints: [tiny, {{name: other, path: {random_tiny}}}]\nblind: [tiny]\n"
        f"tasks: [geoqa, {{lmms: {tmp_path / 't' / 'harness_geoqa.yaml'}}}]\nlimit: 4\nbootstrap: 200\n"
        f"output_dir: {tmp_path / 'runs'}\ngeneration: {{max_new_tokens: 24}}\n")
    df = run_leaderboard(load_spec(spec), device="cpu")
    cells = {(r.checkpoint, r.task): r for r in df.itertuples()}
    assert ("tiny+blind", "lmms-harness_geoqa") not in cells
    ours, theirs = cells[("tiny", "geoqa")], cells[("tiny", "lmms-harness_geoqa")]
    assert theirs.n == 4 and theirs.score == ours.score  # same outputs, scored by the same rule
    assert cells[("other", "lmms-harness_geoqa")].n == 4 and "delta" in df.columns
    assert (tmp_path / "runs" / "other" / "lmms-harness_geoqa" / "samples.jsonl").is_file()

    monkeypatch.setattr(lmms, "_simple_evaluate", lambda *a, **k: pytest.fail("lmms-eval ran again"))
    again = run_leaderboard(load_spec(spec), device="cpu")
    assert again.equals(df)


def test_leaderboard_spec_rejects_a_malformed_lmms_entry(tmp_path):
    from harness.report.leaderboard import load_spec

    spec = tmp_path / "lb.yaml"
    spec.write_text("baseline: tiny\ncheckpoints: [tiny]\ntasks: [{lmms: geo.yaml, metrc: acc}]\n")
    with pytest.raises(HarnessError, match=r"task entry .*\{lmms: TASK, metric: M\}"):
        load_spec(spec)


# --- LMUData TSVs and VLMEvalKit result files -----------------------------------------------------
def _png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _seed_tsv(path: Path) -> Path:
    """A SEEDBench-like LMUData file: five options on one row, no hint column, a shared image."""
    cols = ["index", "question", "A", "B", "C", "D", "E", "answer", "category", "l2-category", "image"]
    rows = [
        ["10", "What colour?", "red", "blue", "green", "grey", "dark red", "A", "colour", "perception", _png()],
        ["11", "How many?", "1", "2", "3", "", "", "C", "count", "reasoning", "10"],
        ["12", "Which shape?", "circle", "square", "", "", "", "B", "shape", "perception", "10"],
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(cols)
        w.writerows(rows)
    return path


def test_lmudata_mc_reads_any_lmudata_tsv(tmp_path):
    _seed_tsv(tmp_path / "LMUData" / "SEED_Mini.tsv")
    task = get_task("lmudata_mc", tsv="SEED_Mini")
    items = task.load(tmp_path)
    assert [it.id for it in items] == ["10", "11", "12"] and items[0].choices[-1] == "dark red"
    assert items[1].choices == ("1", "2", "3") and items[1].images == items[0].images  # image by reference
    assert "E. dark red" in task.prompt(items[0]) and task.prompt(items[2]).count("\n") == 4
    assert task.extract("dark red", items[0]) == "E" and task.extract("The answer is (C).", items[1]) == "C"
    with pytest.raises(HarnessError, match="needs --tsv"):
        get_task("lmudata_mc")
    with pytest.raises(HarnessError, match="LMUData/MISSING.tsv"):
        get_task("lmudata_mc", tsv="MISSING").load(tmp_path)


def _scored_run(tmp_path, task_args, outputs) -> Path:
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": i, "output": o}) + "\n" for i, o in outputs.items()))
    res = run_cli("score", *task_args, "--predictions", str(preds), "--out", str(tmp_path / "run"), "--allow-missing")
    assert res.returncode == 0, res.stderr
    return tmp_path / "run"


def test_lmudata_run_exports_to_vlmevalkit_layout(tmp_path):
    tsv = _seed_tsv(tmp_path / "data" / "SEED_Mini.tsv")
    run = _scored_run(tmp_path, ["--task", "lmudata_mc", "--tsv", str(tsv)], {"10": "red", "11": "2", "12": "square"})
    summary = json.loads((run / "summary.json").read_text())
    assert summary["score"] == pytest.approx(200 / 3) and summary["per_l2_category"] == {"perception": 100.0, "reasoning": 0.0}
    res = run_cli("export", "--format", "vlmeval", "--run", str(run), "--out", str(tmp_path / "m_SEED_Mini.tsv"))
    assert res.returncode == 0, res.stderr
    with (tmp_path / "m_SEED_Mini.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert list(rows[0]) == ["index", "question", "A", "B", "C", "D", "E", "answer", "category", "l2-category", "prediction"]
    assert [(r["index"], r["prediction"]) for r in rows] == [("10", "red"), ("11", "2"), ("12", "square")]
    assert '"10"\t"What colour?"' in (tmp_path / "m_SEED_Mini.tsv").read_text()  # quoted as VLMEvalKit dumps


def test_mmbench_export_adds_the_circular_copies_we_built(tmp_path):
    csv.field_size_limit(2**31 - 1)
    with (BUNDLED / "mmbench" / "MMBench_DEV_EN.tsv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        header, rows = reader.fieldnames, [r for r in reader if int(r["index"]) < 1_000_000][:2]
    data = tmp_path / "data"
    (data / "mmbench").mkdir(parents=True)
    with (data / "mmbench" / "MMBench_DEV_EN.tsv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)  # base rows only: the loader builds the rotated copies
    items = get_task("mmbench").load(data)
    built = next(it for it in items if it.metadata.get("built"))
    run = _scored_run(tmp_path, ["--task", "mmbench", "--data-dir", str(data)], {it.id: it.target for it in items})
    res = run_cli("export", "--format", "vlmeval", "--run", str(run), "--out", str(tmp_path / "m_MMBench_DEV_EN.tsv"))
    assert res.returncode == 0, res.stderr
    with (tmp_path / "m_MMBench_DEV_EN.tsv").open(newline="") as f:
        out = {r["index"]: r for r in csv.DictReader(f, delimiter="\t")}
    assert set(out) == {it.id for it in items} and "image" not in out[built.id]
    assert [out[built.id][c] for c in built.metadata["letters"]] == list(built.choices)
    assert out[built.id]["answer"] == built.target == out[built.id]["prediction"]


def test_export_rejects_runs_it_cannot_write(tmp_path):
    run = _scored_run(tmp_path, ["--task", "geoqa"], {"0": "Answer: A"})
    res = run_cli("export", "--format", "vlmeval", "--run", str(run), "--out", str(tmp_path / "x.tsv"))
    assert res.returncode == 2 and "LMUData TSV tasks" in res.stderr
    res = run_cli("export", "--format", "vlmeval", "--run", str(tmp_path), "--out", str(tmp_path / "x.tsv"))
    assert res.returncode == 2 and "not a run folder" in res.stderr
    assert not (tmp_path / "x.tsv").exists()


# --- conformance with VLMEvalKit's rule-based extraction ----------------------------------------------
def _vlmeval_can_infer(monkeypatch):
    """VLMEvalKit's `can_infer`, from its installed vlmeval/utils/matching_util.py loaded on its own:
    the package __init__ is never run (it needs VLMEvalKit's heavy dependencies and switches off
    SSL verification process-wide); the module's one import, a logger, gets a stand-in."""
    spec = importlib.util.find_spec("vlmeval")  # locates the package without importing it
    path = Path(next(iter(spec.submodule_search_locations or []), "")) / "utils" / "matching_util.py" if spec else None
    if path is None or not path.is_file():
        pytest.skip("vlmeval not installed (README: Bridges says how)")
    for name in ("vlmeval", "vlmeval.smp", "vlmeval.smp.log", "vlmeval.utils"):
        stub = types.ModuleType(name)
        stub.__path__ = []
        stub.get_logger = logging.getLogger
        monkeypatch.setitem(sys.modules, name, stub)
    module_spec = importlib.util.spec_from_file_location("vlmeval.utils.matching_util", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.can_infer


OPTS = ("red", "blue", "green", "dark red")
# Outputs both rules read the same way (None: neither reads an answer).
AGREE = ["B", "(C)", "B.", "C:", "blue", "green", "Blue.", "The answer is B", "B. blue", "(D) dark red",
         "I think it is C", "It is B", "blue or green", "B or C", "nothing", "", "Z", "C) green"]
# Documented differences (README, Bridges): ours first, then why VLMEvalKit differs.
DIFFER = [
    ("The answer is C, not B.", OPTS, "C", "an explicit 'answer is X' wins over other letters; can_infer sees two letters"),
    ("b", OPTS, "B", "a lone lowercase letter is read; can_infer counts capitals only"),
    ("dark red", OPTS, "D", "a matched option inside a longer matched one yields to it; can_infer sees two texts"),
    ("category", ("cat", "category", "dog", "bird"), "B", "option texts match whole words; can_infer finds 'cat' inside"),
]


def test_mmbench_extraction_conforms_to_vlmevalkit_can_infer(monkeypatch):
    from tasks.lmudata import extract_option

    can_infer = _vlmeval_can_infer(monkeypatch)
    letters = ("A", "B", "C", "D")

    def theirs(output, options=OPTS):
        got = can_infer(output, dict(zip(letters, options)))
        return got if got in letters else None  # False (unreadable) and 'Z' (refusal) are unparsed

    for output in AGREE:
        assert extract_option(output, letters, OPTS) == theirs(output), output
    for output, options, ours, why in DIFFER:
        assert extract_option(output, letters, options) == ours, why
        assert theirs(output, options) != ours, why
