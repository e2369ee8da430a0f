"""Training on a researcher's own data files (trainers/formats.py): every layout in data/examples
loads and trains, repeats follow MMPR's repeat_time, bad rows fail in one line, manifests and
recipe stamps record the files."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from tests.conftest import BUNDLED, REPO

EX = BUNDLED / "examples"

# file -> (detected format, rows after repeats, row kind)
EXAMPLES = {
    "llava.json": ("llava", 4, "conversation"),
    "sharegpt.json": ("sharegpt", 3, "conversation"),
    "messages.jsonl": ("messages", 3, "conversation"),
    "messages_disk": ("messages", 3, "conversation"),
    "preference.jsonl": ("preference", 4, "preference"),
    "preference.parquet": ("preference", 4, "preference"),
    "mmpr_meta.json": ("mmpr", 4 * 2 + 2, "preference"),  # colours 4 rows x2, shapes 4 rows x0.5
}


def load(spec, **kw):
    from trainers.data import load_data_files
    from trainers.formats import parse_spec

    return load_data_files(parse_spec(spec, kw.pop("image_folder", None)), **kw)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_each_example_format_loads(name, capsys):
    fmt, rows, kind = EXAMPLES[name]
    examples, records = load(str(EX / name))
    (rec,) = records
    assert (rec["format"], rec["rows"], rec["kind"]) == (fmt, rows, kind)
    assert len(examples) == rows and len(rec["hash"]) == 16
    for e in examples:
        placeholders = sum(m["content"].count("<image>") for m in e.messages if m["role"] == "user")
        assert placeholders == len(e.images) == 1 and e.images[0].size == (32, 32)
        assert "<image>" not in e.text and e.target == e.messages[-1]["content"] and e.task is None
        assert (e.rejected is not None) == (kind == "preference")
    summary = capsys.readouterr().err.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith("data: ") and f"{rows} rows" in summary[0]


def test_layout_details_survive_loading():
    (llava,), _ = load(str(EX / "llava.json"), limit=1)
    assert [m["role"] for m in llava.messages] == ["user", "assistant", "user", "assistant"]  # multi-turn kept
    assert llava.text == "And which shape is it?" and llava.target == "It is a circle."  # the last turn
    (share,), _ = load(str(EX / "sharegpt.json"), limit=1)
    assert share.messages[0] == {"role": "system", "content": "You answer questions about pictures."}
    (parts,), _ = load(str(EX / "messages.jsonl"), limit=1)  # TRL content parts -> one placeholder
    assert parts.messages[0]["content"] == "<image>What colour is the shape?"


def test_mmpr_repeat_time_sets_the_row_count(tmp_path):
    from trainers.formats import load_source, parse_spec

    meta = json.loads((EX / "mmpr_meta.json").read_text())
    shutil.copytree(EX / "images", tmp_path / "images")
    shutil.copytree(EX / "mmpr", tmp_path / "mmpr")

    def rows(colours: float, shapes: float, spec_ratio: str = "") -> dict[str, int]:
        meta["colours"]["repeat_time"], meta["shapes"]["repeat_time"] = colours, shapes
        (tmp_path / "meta.json").write_text(json.dumps(meta))
        (src,) = parse_spec(str(tmp_path / "meta.json") + spec_ratio)
        loaded = load_source(src)
        by_name = {d["name"]: d["rows"] for d in loaded.record["datasets"]}
        assert sum(by_name.values()) == loaded.record["rows"] == len(loaded.rows)
        return by_name

    assert rows(1, 1) == {"colours": 4, "shapes": 4}
    assert rows(3, 0.25) == {"colours": 12, "shapes": 1}  # int(4 * 0.25) sampled rows, as InternVL does
    assert rows(2, 0.5, ":2") == {"colours": 16, "shapes": 4}  # the spec's ratio multiplies repeat_time
    assert rows(1.5, 1) == {"colours": 6, "shapes": 4}  # 4 + int(4 * 0.5)
    # a fraction is a seeded sample without repeats: the same rows every time
    (src,) = parse_spec(str(tmp_path / "meta.json") + ":0.5")
    ids = [r.id for r in load_source(src).rows]
    assert ids == [r.id for r in load_source(src).rows] and len(set(ids)) == len(ids)


def test_spec_syntax():
    from trainers.formats import parse_spec

    a, b = parse_spec("x/a.json:2,b.jsonl:0.5")
    assert (str(a.path), a.ratio, str(b.path), b.ratio) == ("x/a.json", 2.0, "b.jsonl", 0.5)
    (c,) = parse_spec([{"path": "m.json", "ratio": 3, "format": "mmpr", "image_folder": "imgs"}])
    assert (c.ratio, c.format, str(c.image_folder)) == (3.0, "mmpr", "imgs")
    with pytest.raises(HarnessError, match="ratio must be > 0"):
        parse_spec("a.json:0")
    with pytest.raises(HarnessError, match="unknown format 'alpaca'"):
        parse_spec([{"path": "a.json", "format": "alpaca"}])
    with pytest.raises(HarnessError, match="needs 'path'"):
        parse_spec([{"file": "a.json"}])


def _write(tmp_path: Path, name: str, rows) -> str:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    shutil.copytree(EX / "images", tmp_path / "images", dirs_exist_ok=True)
    return str(path)


GOOD_LLAVA = {"id": "a", "image": "images/red_circle.png",
              "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}]}
BAD_ROWS = [  # (file, rows, what the one-line error says)
    ("l.json", [GOOD_LLAVA, {"id": "b", "image": "images/red_circle.png"}],
     r"l\.json row 1: missing key 'conversations'"),
    ("l.json", [{**GOOD_LLAVA, "image": "images/nope.png"}],
     r"l\.json row 0: image images/nope.png not found in .*; fix the path or set the source's image_folder"),
    ("l.json", [{**GOOD_LLAVA, "conversations": [{"from": "human", "value": "<image><image> Colour?"},
                                                  {"from": "gpt", "value": "red"}]}],
     r"row 0: 2 <image> placeholder\(s\) but 1 image\(s\); put one <image> in the user turns per image"),
    ("p.jsonl", [{"prompt": "<image>Colour?", "chosen": "red", "rejected": "  ", "images": ["images/red_circle.png"]}],
     r"p\.jsonl line 1: 'rejected' is empty; give the rejected reply text"),
    ("p.jsonl", [{"prompt": "Colour?", "chosen": "", "rejected": "blue"}], r"line 1: 'chosen' is empty"),
    ("l.json", [{**GOOD_LLAVA, "conversations": "human: hi"}],
     r"row 0: 'conversations' must be a non-empty list of \{from, value\}, got str"),
    ("m.jsonl", [{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}],
     r"line 1: 'messages'\[0\]\.content must be a string, got int"),
    ("m.jsonl", [{"messages": [{"role": "user", "content": "hi"}], "images": []}],
     r"must end with an assistant reply"),
    ("l.json", [{**GOOD_LLAVA, "image": 7}], r"row 0: 'image' must be an image path or a list of them, got int"),
]


@pytest.mark.parametrize("name,rows,message", BAD_ROWS)
def test_bad_rows_fail_in_one_line(tmp_path, name, rows, message):
    path = _write(tmp_path, name, rows)
    with pytest.raises(HarnessError, match=message) as err:
        load(path)
    assert "\n" not in str(err.value) and path in str(err.value)


def test_bad_data_fails_before_any_model_loads(tmp_path, capsys):
    from harness.cli import main

    path = _write(tmp_path, "l.json", [{**GOOD_LLAVA, "image": "images/nope.png"}])
    t0 = time.time()
    assert main(["train", "sft", "--base", "tiny", "--data", path, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "image images/nope.png not found" in err
    assert not (tmp_path / "o").exists() and time.time() - t0 < 20
    assert main(["train", "average", "--data", path, "--out", str(tmp_path / "o"), "adapters=a,b"]) == 2
    assert "--data does not apply to average" in capsys.readouterr().err
    assert main(["train", "self_train", "--base", "tiny", "--data", path, "--out", str(tmp_path / "o")]) == 2
    assert "self_train needs --task" in capsys.readouterr().err
    assert main(["train", "sft", "--base", "tiny", "--data", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")]) == 2
    assert "none.json not found" in capsys.readouterr().err


def test_conversation_labels_cover_every_reply_and_single_turn_matches_eval():
    import torch

    from trainers.common import load_base
    from trainers.data import PairCollator, SFTCollator, given_pairs

    backend, _ = load_base("tiny")
    examples, _ = load(f"{EX / 'llava.json'},{EX / 'preference.jsonl'}")
    batch = SFTCollator(backend, examples)([{"idx": 0}])
    labelled = backend.tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != -100])
    assert labelled == " The circle is red. Answer: red</s> It is a circle.</s>"  # both assistant turns, nothing else
    single = examples[1]  # one turn, one image: exactly the tokens evaluation builds
    ref = backend.batch_inputs([single.text], [single.images], [single.target])
    got = SFTCollator(backend, examples)([{"idx": 1}])
    assert torch.equal(ref["input_ids"], got["input_ids"]) and torch.equal(ref["labels"], got["labels"])
    pairs = given_pairs(examples)
    assert len(pairs) == 4 and all(p.index >= 4 for p in pairs)
    pb = PairCollator(backend, examples, pairs)([{"idx": 0}])
    replies = [backend.tokenizer.decode(pb["input_ids"][r][pb["completion_mask"][r] == 1]) for r in range(2)]
    assert replies == [" The circle is red. Answer: red</s>", " The circle is blue. Answer: blue</s>"]


def _train(tmp_path, treatment: str, data, task=None, **config):
    from trainers.cli import build_config, train

    cfg = build_config(treatment, None, [], {"max_steps": 1, "batch_size": 2, "lora_r": 2, "seed": 0, "logging_steps": 1, **config})
    out = tmp_path / f"{treatment}-{abs(hash(str(data))) % 10**6}"
    t0 = time.time()
    manifest = train(treatment, cfg, "tiny", task, out, progress=False, data=data)
    assert any(out.rglob("adapter_model.safetensors")) and manifest["metrics"]["steps"] >= 1
    return manifest, time.time() - t0


@pytest.mark.parametrize("name", ["llava.json", "sharegpt.json", "messages.jsonl", "messages_disk"])
def test_sft_trains_on_each_conversation_format(tmp_path, name):
    manifest, _ = _train(tmp_path, "sft", str(EX / name))
    (src,) = manifest["data"]["sources"]
    assert src["path"] == str(EX / name) and src["rows"] == EXAMPLES[name][1]
    assert manifest["metrics"]["train_loss"] > 0


@pytest.mark.parametrize("name", ["preference.jsonl", "preference.parquet", "mmpr_meta.json"])
def test_mpo_trains_on_given_pairs(tmp_path, name):
    manifest, _ = _train(tmp_path, "mpo", str(EX / name))
    data = manifest["data"]
    assert data["given_pairs"] == data["pairs"] == EXAMPLES[name][1] and data["sample_accuracy"] is None
    logged = manifest["metrics"]["last_logged"]
    assert {"loss/dpo", "loss/bco", "loss/sft"} <= set(logged)


def test_mpo_dropout_ntp_adds_pairs_to_given_ones(tmp_path):
    manifest, _ = _train(tmp_path, "mpo", str(EX / "preference.jsonl"), dropout_ntp=True)
    data = manifest["data"]
    assert data["given_pairs"] == 4 and data["pairs"] == 4 + data["dropout_ntp_pairs"] and data["dropout_ntp_pairs"] >= 1


def test_remgcl_trains_on_a_data_file(tmp_path):
    manifest, _ = _train(tmp_path, "remgcl", str(EX / "llava.json"))
    assert manifest["metrics"]["alignment"]["global"]["pairs"] >= 1


def test_mixed_task_and_mmpr_run_records_both(tmp_path):
    from trainers.formats import source_hash, parse_spec

    manifest, _ = _train(tmp_path, "sft", [{"path": str(EX / "mmpr_meta.json"), "ratio": 0.5}], task="geoqa", limit=3)
    data = manifest["data"]
    assert data["n_per_task"] == {"geoqa": 3}
    (src,) = data["sources"]
    # limit=3 rows per MMPR dataset, then repeat_time x ratio: colours 3 x (2 * 0.5), shapes int(3 x 0.25)
    assert src["path"] == str(EX / "mmpr_meta.json") and src["ratio"] == 0.5 and src["rows"] == 3 + 0
    assert src["hash"] == source_hash(parse_spec(str(EX / "mmpr_meta.json"))[0])
    assert data["n"] == 3 + src["rows"]


def test_recipe_stamp_goes_stale_when_a_data_file_changes(tmp_path):
    from harness.report.leaderboard import CheckpointSpec, check_recipe_current, stamp_recipe
    from trainers.recipes import data_fingerprint

    shutil.copytree(EX / "images", tmp_path / "images")
    shutil.copytree(EX / "mmpr", tmp_path / "mmpr")
    shutil.copy(EX / "mmpr_meta.json", tmp_path / "mmpr_meta.json")
    recipe = {"trainer": "mpo", "base": "tiny", "data": f"{tmp_path / 'mmpr_meta.json'}:2"}
    ckpt = tmp_path / "built"
    ckpt.mkdir()
    spec = CheckpointSpec("mine", str(ckpt), recipe)
    stamp_recipe(spec, data_fingerprint)
    check_recipe_current(spec, data_fingerprint)  # unchanged: fine
    ann = tmp_path / "mmpr" / "shapes.jsonl"
    ann.write_text(ann.read_text().replace("A circle.", "A round circle."))  # an annotation, not the meta file
    with pytest.raises(HarnessError, match="built from different data files; delete"):
        check_recipe_current(spec, data_fingerprint)
    assert data_fingerprint({"trainer": "sft", "task": "geoqa"}) is None  # recipes without data keep old stamps


def test_readme_shows_one_command_per_format():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Train on your own data"):]
    for name in EXAMPLES:
        assert f"--data data/examples/{name}" in section


def test_self_critique_judges_data_file_prompts(tmp_path):
    manifest, _ = _train(tmp_path, "self_critique", f"{EX / 'llava.json'},{EX / 'mmpr_meta.json'}", max_new_tokens=12)
    data = manifest["data"]
    assert 0 < data["pairs"] <= data["candidates"] <= 14 and data["chosen_correct"] is None


@pytest.mark.slow  # ~20 s: sampling and an error measurement before the SFT
def test_self_train_and_data_engine_add_data_files_to_their_sft(tmp_path):
    # max_steps=-1, batch_size=1: one step per trained example, so the step count shows the files were trained on
    st, _ = _train(tmp_path, "self_train", str(EX / "sharegpt.json"), task="geoqa", limit=2, iterations=1,
                   samples_per_question=2, max_new_tokens=16, max_steps=-1, batch_size=1)
    assert st["data"]["sources"][0]["rows"] == 2 and st["data"]["n_per_task"] == {"geoqa": 2}  # limit: per source too
    items = st["iterations"][0]["train_items"]
    assert items["data_files"] == 2 and st["metrics"]["steps"] == items["total"] + 2
    de, _ = _train(tmp_path, "data_engine", str(EX / "messages.jsonl"), task="geoqa", rounds=1, items_per_round=2,
                   eval_per_type=1, max_new_tokens=8, max_steps=-1, batch_size=1)
    assert de["data"]["sources"][0]["rows"] == 3 and de["metrics"]["steps"] == de["metrics"]["rounds"][0]["n"] + 3


def test_sharegpt_preference_rows_and_format_override(tmp_path):
    from trainers.formats import load_source, parse_spec

    row = {"conversations": [{"from": "human", "value": "<image>Colour?"}], "images": ["images/red_circle.png"],
           "chosen": {"from": "gpt", "value": "red"}, "rejected": {"from": "gpt", "value": "blue"}}
    path = _write(tmp_path, "dpo.json", [row])
    (src,) = parse_spec(path)
    loaded = load_source(src)
    assert loaded.record["format"] == "sharegpt" and loaded.record["kind"] == "preference"
    assert loaded.rows[0].messages[-1] == {"role": "assistant", "content": "red"} and loaded.rows[0].rejected == "blue"
    (forced,) = parse_spec([{"path": str(EX / "messages.jsonl"), "format": "preference"}])
    with pytest.raises(HarnessError, match=r"messages\.jsonl line 1: missing key 'prompt' \(or 'question'\)"):
        load_source(forced)


def test_recipe_data_key_trains_the_files(tmp_path):
    from harness.report.leaderboard import CheckpointSpec
    from trainers.recipes import build_recipe

    recipe = {"trainer": "sft", "base": "tiny", "data": [{"path": str(EX / "llava.json"), "ratio": 2}],
              "config": {"max_steps": 1, "batch_size": 2, "lora_r": 2}}
    manifest = build_recipe(CheckpointSpec("mine", str(tmp_path / "mine"), recipe))
    (src,) = manifest["data"]["sources"]
    assert (src["format"], src["ratio"], src["rows_read"], src["rows"]) == ("llava", 2.0, 4, 8)


# --- bounds (issue 30) -----------------------------------------------------------------------------
def test_repeat_budget_is_checked_before_the_list_is_built():
    import random

    from trainers.formats import repeat, repeated_count

    rows = list(range(4))
    assert repeated_count(4, 2.5) == 10 and len(repeat(rows, 2.5, random.Random(0))) == 10
    with pytest.raises(HarnessError, match=r"data: x: 4 rows x 1e\+09 = 4,000,000,000 rows, over the budget of 5,000,000"):
        repeat(rows, 1e9, random.Random(0), "data: x")  # 4e9 rows would take all memory before the check
    with pytest.raises(HarnessError, match="ratio must be a finite number > 0, got nan"):
        repeat(rows, float("nan"), random.Random(0), "data: x")


def test_a_reply_longer_than_the_context_is_refused_or_cut():
    from trainers.common import load_base
    from trainers.data import SFTCollator, load_data_files
    from trainers.formats import parse_spec

    backend, _ = load_base("tiny")
    long_reply = "ab " * 5_000  # 10,000 tokens; the context is 1,024
    for mode in ("refuse", "truncate"):
        (e,), _ = load_data_files(parse_spec(str(EX / "llava.json"), None, mode), limit=1)
        e.target = long_reply
        e.messages[-1] = {"role": "assistant", "content": long_reply}
        if mode == "refuse":
            with pytest.raises(HarnessError, match="row llava:shape0 has over 10,0[0-9][0-9] tokens, more than the model's context of 1,024"):
                SFTCollator(backend, [e])
            continue
        batch = SFTCollator(backend, [e])([{"idx": 0}])
        assert 900 < batch["input_ids"].shape[1] <= 1024  # cut to fit, not dropped
        assert long_reply.startswith(e.target) and e.messages[-1]["content"] == e.target
