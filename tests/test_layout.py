"""The package's shape: imports point one way (the engine never imports tasks/ or trainers/), no
import cycles, and one source for generation settings and CLI flags."""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from harness.core.config import add_flags, from_args
from harness.core.runner import EvalSettings
from harness.core.types import GenConfig

REPO = Path(__file__).resolve().parents[1]


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every project module `path` imports, lazily (inside functions) or not."""
    found: set[str] = set()
    me = _module(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            while name and name not in modules:  # `from harness.core import files` names a module
                name = name.rpartition(".")[0]
            if name and name != me:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for d in ("harness", "tasks", "trainers") for p in (REPO / d).rglob("*.py")]
    modules = {_module(p) for p in files}
    packages = {m for m in modules if (REPO / m.replace(".", "/") / "__init__.py").is_file()}
    # A package's own __init__ is not an edge (importing harness.core.x runs harness/__init__ anyway).
    return {_module(p): _imports(p, modules) - packages for p in files}


def test_the_engine_never_imports_tasks_or_trainers():
    # DESIGN.md: the CLI -> engine, tasks, trainers. The CLI's commands `harness train` and
    # `harness leaderboard` hand training to trainers/ (its only way in); no command imports a task.
    allowed = {("harness.commands.train", "trainers.cli"), ("harness.commands.leaderboard", "trainers.recipes")}
    bad = sorted(f"{m} -> {t}" for m, targets in _graph().items() if m.split(".")[0] == "harness"
                 for t in targets if t.split(".")[0] in ("tasks", "trainers") and (m, t) not in allowed)
    assert not bad, bad


def test_tasks_never_import_trainers():
    bad = sorted(f"{m} -> {t}" for m, ts in _graph().items() if m.startswith("tasks") for t in ts if t.startswith("trainers"))
    assert not bad, bad


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_walker_sees_a_lazy_import(tmp_path):
    # The checks above would pass vacuously if lazy imports were missed: show one is found.
    graph = _graph()
    assert "harness.session" in graph["harness.commands.eval"]  # imported inside run_eval
    assert "harness.stats.ci" in graph["harness.core.scoring"]  # `from harness.stats import ci`


# --- one source for generation settings ---------------------------------------------------------
def test_max_new_tokens_none_means_the_task_budget_and_64_stays_64():
    from harness.core.task import get_task

    task = get_task("geoqa")
    assert task.max_new_tokens != 64  # else the check below could not tell the two apart
    assert EvalSettings().gen_for(task).max_new_tokens == task.max_new_tokens
    assert EvalSettings(gen=GenConfig(max_new_tokens=64)).gen_for(task).max_new_tokens == 64


class _Recorder:
    name, content_hash = "recorder", "feedfacefeedface"

    def __init__(self) -> None:
        self.budgets: list[int] = []

    def generate(self, prompts, gen, n=1, blind=False, seeds=None):
        self.budgets.append(gen.max_new_tokens)
        return [["Answer: A"] * n for _ in prompts]


@pytest.mark.parametrize("flag, expected", [([], 48), (["--max-new-tokens", "64"], 64)])
def test_cli_max_new_tokens_reaches_the_backend(flag, expected, tmp_path):
    from harness.cli import build_parser
    from harness.commands.common import settings_from_args
    from harness.core.runner import evaluate
    from harness.core.store import GenerationCache
    from harness.core.task import BUNDLED_DATA, get_task

    args = build_parser().parse_args(["eval", "--ckpt", "tiny", "--tasks", "geoqa", *flag])
    settings = settings_from_args(args)
    task, backend = get_task("geoqa"), _Recorder()
    assert task.max_new_tokens == 48
    cache = GenerationCache(tmp_path / "cache.sqlite")
    try:
        result = evaluate(backend, task, task.load(BUNDLED_DATA)[:3], settings, tmp_path / "run", cache)
    finally:
        cache.close()
    assert set(backend.budgets) == {expected}
    assert result.summary["generation"]["max_new_tokens"] == expected
    assert len(result.units) == 3 and result.summary["n"] == 3


def test_flags_come_from_the_settings_dataclasses():
    parser = argparse.ArgumentParser()
    add_flags(parser, GenConfig)
    add_flags(parser, EvalSettings)
    args = parser.parse_args(["--temperature", "0.5", "--n-samples", "3", "--blind", "--ci", "wilson"])
    settings = from_args(EvalSettings, args, gen=from_args(GenConfig, args))
    assert settings == EvalSettings(gen=GenConfig(temperature=0.5), n_samples=3, blind=True, ci_method="wilson")
    helps = {a.dest: a.help for a in parser._actions if a.dest != "help"}
    assert helps["n_samples"] == EvalSettings.__dataclass_fields__["n_samples"].metadata["help"]
    with pytest.raises(SystemExit):  # the field's "kind" checks the value at parse time
        parser.parse_args(["--top-p", "1.5"])


def test_eval_and_compare_take_their_flags_from_the_dataclasses():
    from harness.cli import build_parser
    from harness.commands.compare import CompareConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {name: {a.dest: a for a in p._actions} for name, p in sub.choices.items()}
    for cls in (GenConfig, EvalSettings):
        for name, f in cls.__dataclass_fields__.items():
            if "help" in f.metadata:
                assert flags["eval"][name].help == f.metadata["help"], name
    for name in ("samples", "subsets", "temperature", "top_p", "max_new_tokens", "bootstrap"):
        assert flags["compare"][name].help == CompareConfig.__dataclass_fields__[name].metadata["help"]
    assert flags["compare"]["temperature"].default == 0.7
    # Task option flags come from the tasks' own option_help.
    assert "answer extraction mode (geoqa: strict|r3v)" == flags["eval"]["extract"].help


def test_tasks_describe_their_generators_and_exports():
    from harness.bridges.lmms_export import exportable
    from harness.bridges.vlmeval import tsv_tasks
    from harness.core.task import task_classes
    from tasks.synth.__main__ import generators

    classes = task_classes()
    assert {m for m, _, _ in generators()} == {c.synth for c in classes.values() if c.synth}
    assert "tasks.synth.critic" in {m for m, _, _ in generators()}  # `make data` rebuilds data/critic
    for module, _, dirs in generators():
        assert all((REPO / "data" / d).is_dir() for d in dirs), module
    assert exportable() == ["aokvqa_da", "aokvqa_mc", "geoqa"]
    assert set(tsv_tasks()) == {"mmbench", "lmudata_mc"}


def test_trainers_use_the_backends_public_members():
    import re

    reach_ins = [f"{p.name}:{n}" for p in sorted((REPO / "trainers").glob("*.py"))
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"\b(backend|b)\._[a-z]", line)]
    assert not reach_ins, reach_ins
