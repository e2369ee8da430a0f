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


def _module(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str], root: Path = REPO) -> set[str]:
    """Every project module `path` imports, lazily (inside functions) or not."""
    found: set[str] = set()
    me = _module(path, root)
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


def _graph(root: Path = REPO, packages_too: bool = False) -> dict[str, set[str]]:
    files = [p for d in ("harness", "tasks", "trainers") for p in (root / d).rglob("*.py")]
    modules = {_module(p, root) for p in files}
    packages = set() if packages_too else {m for m in modules if (root / m.replace(".", "/") / "__init__.py").is_file()}
    # A package's own __init__ is not an edge (importing harness.core.x runs harness/__init__ anyway).
    return {_module(p, root): _imports(p, modules, root) - packages for p in files}


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
# Each seam is a function over a source tree, so the planted-violation test below shows it fails.
def _harness_files(root: Path = REPO) -> list[Path]:
    return sorted((root / "harness").rglob("*.py"))


def _cli_module(path: Path, root: Path = REPO) -> bool:
    rel = path.relative_to(root / "harness").as_posix()
    return rel == "cli.py" or rel.startswith("commands/")


def _imports_raw(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def _reads_a_namespace(path: Path) -> bool:
    """A function that reads attributes off a parameter named `args`: a namespace passed along
    without importing argparse (how run_lmms_eval and judge/runs once took the CLI's settings)."""
    for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if "args" in {a.arg for a in fn.args.args + fn.args.kwonlyargs} and any(
                isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "args" for n in ast.walk(fn)):
            return True
    return False


def argparse_outside_the_cli(root: Path = REPO) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in _harness_files(root) if not _cli_module(p, root) and (
        "argparse" in _imports_raw(p) or "Namespace" in p.read_text(encoding="utf-8") or _reads_a_namespace(p)))


def engine_imports_of_commands(root: Path = REPO) -> list[str]:
    # packages_too: `from harness.commands import NAME` of a name defined in its __init__ counts too.
    return sorted(f"{m} -> {t}" for m, targets in _graph(root, packages_too=True).items()
                  if m.split(".")[0] == "harness" and not (m == "harness.cli" or m.startswith("harness.commands"))
                  for t in targets if t == "harness.commands" or t.startswith("harness.commands."))


MODEL_CODE = ("harness.models", "harness.core.runner", "harness.session", "harness.api", "harness.callback",
              "harness.self_select", "harness.judge")
HEAVY = {"torch", "transformers", "peft", "vllm"}


def statistics_reaching_model_code(root: Path = REPO) -> list[str]:
    """Every model module or heavy library a stats/ module reaches, directly or through any chain of
    project imports (stats -> core.x -> models is as much a leak as stats -> models)."""
    graph = _graph(root)
    files = {_module(p, root): p for p in _harness_files(root)}
    bad = []
    for start in sorted(m for m in graph if m == "harness.stats" or m.startswith("harness.stats.")):
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())
        bad += [f"{start} reaches {m}" for m in sorted(seen) if m.startswith(MODEL_CODE)]
        bad += [f"{start} reaches {m}, which imports {lib}" for m in sorted(seen & files.keys())
                for lib in sorted(_imports_raw(files[m]) & HEAVY)]
    return bad


def test_argparse_lives_in_the_cli_and_its_commands_only():
    # Settings travel as dataclasses (EvalSettings, GenConfig, JudgeSettings, ...), never as a namespace.
    assert argparse_outside_the_cli() == []


def test_no_engine_module_imports_a_command():
    assert engine_imports_of_commands() == []


def test_statistics_import_no_model_code():
    assert statistics_reaching_model_code() == []


def test_the_seam_checks_catch_a_planted_violation(tmp_path):
    # A tree with one leak of each kind: every check names exactly the planted modules.
    tree = {
        "harness/__init__.py": "def cli():\n    from harness import commands\n",
        "harness/cli.py": "import argparse\n",
        "harness/commands/__init__.py": "REGISTRY = {}\n", "harness/commands/eval.py": "import argparse\n",
        "harness/core/__init__.py": "", "harness/core/clean.py": "def f(*args):\n    return len(args)\n",
        "harness/core/parse.py": "import argparse\n",
        "harness/core/ducktyped.py": "def run(data, args):\n    return args.limit\n",
        "harness/core/lazy.py": "def f():\n    from harness.commands.eval import x\n",
        "harness/report/__init__.py": "", "harness/report/registry.py": "from harness.commands import REGISTRY\n",
        "harness/core/helper.py": "from harness.models import backend\n",
        "harness/models/__init__.py": "", "harness/models/backend.py": "import torch\n",
        "harness/stats/__init__.py": "", "harness/stats/est.py": "def f():\n    from harness.core import helper\n",
        "harness/stats/fine.py": "from harness.core import clean\n",
    }
    for rel, text in tree.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert argparse_outside_the_cli(tmp_path) == ["harness/core/ducktyped.py", "harness/core/parse.py"]
    assert engine_imports_of_commands(tmp_path) == ["harness -> harness.commands",
                                                    "harness.core.lazy -> harness.commands.eval",
                                                    "harness.report.registry -> harness.commands"]
    assert statistics_reaching_model_code(tmp_path) == [
        "harness.stats.est reaches harness.models.backend",
        "harness.stats.est reaches harness.models.backend, which imports torch"]


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
