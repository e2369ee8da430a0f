"""The README's "Add a task" example, run as written: generator, loader, prompt, scoring, an eval
with the tiny model, and the registry-derived pieces (CLI flag, `make data`)."""
from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Add a task"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    path = tmp_path_factory.mktemp("example") / "colour_task.py"
    path.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("colour_task", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["colour_task"] = module  # dataclass-free, but keep the import machinery happy
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("colour_task", None)


def test_generator_and_loader(example, tmp_path):
    example.build(tmp_path, "test", 6, seed=1)
    again = tmp_path / "again"
    example.build(again, "test", 6, seed=1)
    assert (tmp_path / "colour" / "test.jsonl").read_bytes() == (again / "colour" / "test.jsonl").read_bytes()
    items = example.Colour().load(tmp_path)
    assert len(items) == 6 and all(it.images[0].is_file() for it in items)
    task, item = example.Colour(), items[0]
    assert task.score(task.extract(f" {item.target.title()}.", item), item) == 1.0
    assert example.Colour(case="exact").score(example.Colour(case="exact").extract(item.target.title(), item), item) == 0.0


def test_the_example_task_evaluates_like_any_task(example, tmp_path):
    import harness

    example.build(tmp_path / "data", "test", 6, seed=1)
    result = harness.evaluate("tiny", tasks=[example.Colour()], data_dir=tmp_path / "data",
                              output_dir=tmp_path / "runs", batch_size=3)["colour"]
    assert result.summary["n"] == 6 and result.summary["generation"]["max_new_tokens"] == 8
    assert result.summary["ci_low"] <= result.summary["score"] <= result.summary["ci_high"]
    assert (tmp_path / "runs" / "tiny" / "colour" / "samples.jsonl").is_file()


def test_registering_it_is_all_the_cli_and_make_data_need(example, monkeypatch):
    import harness.core.task as task_module
    from harness.cli import build_parser, task_option_flags
    from tasks.synth.__main__ import generators

    registered = {**task_module.task_classes(), "colour": example.Colour}
    monkeypatch.setattr(task_module, "task_classes", lambda: registered)
    assert task_option_flags()["case"] == "how the answer is compared (colour: lower|exact)"
    args = build_parser().parse_args(["eval", "--ckpt", "tiny", "--tasks", "colour", "--case", "exact"])
    assert args.case == "exact"
    assert ("tasks.synth.colour", (60, 120), ("colour",)) in generators()
