"""The package's shape: imports point one way (the engine never imports tasks/ or trainers/), no
import cycles, and one source for generation settings and CLI flags."""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from harness.commands.flags import add_flags, from_args
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
    assert "harness.session" in graph["harness.commands.common"]  # imported inside session_from_args
    assert "harness.stats.ci" in graph["harness.core.record"]  # `from harness.stats import ci` inside build_record


# --- one source for generation settings ---------------------------------------------------------
def test_max_new_tokens_none_means_the_task_budget_and_64_stays_64():
    from harness.core.task import get_task

    task = get_task("geoqa")
    assert task.max_new_tokens != 64  # else the check below could not tell the two apart
    assert EvalSettings().gen_for(task).max_new_tokens == task.max_new_tokens
    assert EvalSettings(gen=GenConfig(max_new_tokens=64)).gen_for(task).max_new_tokens == 64


@pytest.mark.parametrize("flag, expected", [([], 48), (["--max-new-tokens", "64"], 64)])
def test_cli_max_new_tokens_reaches_the_backend(flag, expected, tmp_path):
    from harness.cli import build_parser
    from harness.commands.common import settings_from_args
    from harness.core.runner import evaluate
    from harness.core.store import GenerationCache
    from harness.core.task import BUNDLED_DATA, get_task
    from harness.models.mock import MockBackend

    args = build_parser().parse_args(["eval", "--ckpt", "tiny", "--tasks", "geoqa", *flag])
    settings = settings_from_args(args)
    task, backend = get_task("geoqa"), MockBackend("Answer: A")
    assert task.max_new_tokens == 48
    cache = GenerationCache(tmp_path / "cache.sqlite")
    try:
        result = evaluate(backend, task, task.load(BUNDLED_DATA)[:3], settings, tmp_path / "run", cache)
    finally:
        cache.close()
    assert {r.gen.max_new_tokens for r in backend.requests} == {expected}
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
    for name in ("samples", "subsets", "bootstrap"):
        assert flags["compare"][name].help == CompareConfig.__dataclass_fields__[name].metadata["help"]
    # compare's sampling flags are GenConfig's and EvalSettings' fields (type and check), with
    # compare's own help and default temperature.
    from harness.commands.compare import SAMPLING_HELP

    for name in ("temperature", "top_p", "top_k", "max_new_tokens", "seed", "batch_size", "limit"):
        assert flags["compare"][name].type is flags["eval"][name].type, name
        assert flags["compare"][name].help == SAMPLING_HELP.get(name, flags["eval"][name].help), name
    assert flags["compare"]["temperature"].default == 0.7 and "temperature" not in CompareConfig.__dataclass_fields__
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


# --- the seams: argparse in the CLI only, the engine above no command, statistics drive no model ----
def _harness_files() -> list[Path]:
    return sorted((REPO / "harness").rglob("*.py"))


def _cli_module(path: Path) -> bool:
    rel = path.relative_to(REPO / "harness").as_posix()
    return rel == "cli.py" or rel.startswith("commands/")


def test_argparse_lives_in_the_cli_and_its_commands_only():
    # Settings travel as dataclasses (EvalSettings, GenConfig, JudgeSettings, ...), never as a namespace.
    bad = sorted(str(p.relative_to(REPO)) for p in _harness_files()
                 if not _cli_module(p) and "harness.commands" not in _module(p)
                 and ("argparse" in _imports_raw(p) or "Namespace" in p.read_text(encoding="utf-8")))
    assert not bad, bad


def _imports_raw(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_no_engine_module_imports_a_command():
    bad = sorted(f"{m} -> {t}" for m, targets in _graph().items()
                 if m.startswith("harness.") and not (m == "harness.cli" or m.startswith("harness.commands"))
                 for t in targets if t.startswith("harness.commands"))
    assert not bad, bad


MODEL_CODE = ("harness.models", "harness.core.runner", "harness.session", "harness.api", "harness.callback",
              "harness.self_select", "harness.judge")


def test_statistics_import_no_model_code():
    graph = _graph()
    bad = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith("harness.stats")
                 for t in targets if t.startswith(MODEL_CODE))
    heavy = sorted(f"{_module(p)} imports {lib}" for p in (REPO / "harness" / "stats").rglob("*.py")
                   for lib in _imports_raw(p) & {"torch", "transformers", "peft", "vllm"})
    assert not bad and not heavy, bad + heavy


def test_the_run_record_has_one_writer():
    # summary.json is written by harness.core.record.write_record only (a judge writes judged.json).
    writers = set()
    for p in _harness_files():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")).startswith("atomic_write"):
                text = ast.unparse(node)
                if "summary.json" in text or "RECORD_FILE" in text:
                    writers.add(_module(p))
    assert writers == {"harness.core.record"}, writers


def test_task_capabilities_are_declared_not_probed():
    # Feature flags are typed attributes of Task, read directly: no getattr(task, "flag", default).
    from harness.core.task import Task

    declared = {n for n in dir(Task) if not n.startswith("_")}
    bad = []
    for p in _harness_files():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr") and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant) and node.args[1].value in declared
                    and "task" in ast.unparse(node.args[0]).lower()):
                bad.append(f"{p.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, bad


def test_no_benchmark_name_decides_anything_outside_its_task_file():
    # The engine may mention a task in help text, but never branches on one, maps one to a file, or
    # names a benchmark's data file (vlmeval's MMBench mapping lives in tasks/mmbench.py).
    from harness.core.task import task_names

    names = set(task_names())
    bad = []
    for p in _harness_files():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            consts = []
            if isinstance(node, ast.Compare):
                consts = [c for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
            elif isinstance(node, ast.Dict):
                consts = [k for k in node.keys if isinstance(k, ast.Constant)]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".tsv") \
                    and node.value.startswith("MMBench"):
                bad.append(f"{p.relative_to(REPO)}:{node.lineno}: {node.value}")
            bad += [f"{p.relative_to(REPO)}:{c.lineno}: {c.value}" for c in consts if c.value in names]
    assert not bad, bad


def test_tests_script_models_with_the_one_mock_backend():
    # One stand-in for a model (harness.models.mock.MockBackend); a test wrapping a real backend
    # (to count its calls) is not a scripted model.
    bad = []
    for p in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
                if "generate" in methods and "inner" not in ast.unparse(node):
                    bad.append(f"{p.name}: class {node.name}")
    assert not bad, bad
