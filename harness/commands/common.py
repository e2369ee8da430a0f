"""What several commands share: the flags every task declares (`--extract`, `--mc-mode` ...), the data
root and CI method; Task objects and EvalSettings from the flags; the summary table they print."""
from __future__ import annotations

import argparse
from typing import Any

from harness.commands.flags import add_flags, from_args
from harness.core.runner import EvalSettings
from harness.core.types import GenConfig
from harness.errors import HarnessError


def task_option_flags() -> dict[str, str]:
    """option -> flag help, gathered from every registered task's `options` and `option_help`."""
    from harness.core.task import task_classes

    helps: dict[str, list[str]] = {}
    for name, cls in task_classes().items():
        for opt, values in cls.options.items():
            what = cls.option_help.get(opt, opt.replace("_", " "))
            helps.setdefault(opt, []).append(f"{what} ({name}: {'|'.join(values)})")
    return {opt: "; ".join(texts) for opt, texts in helps.items()}


def add_task_options(p: argparse.ArgumentParser) -> None:
    for name, help_text in task_option_flags().items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=help_text)
    p.add_argument("--data-dir", default=None, help="benchmark data root (default: $HARNESS_DATA, else the bundled mini-sets)")
    add_flags(p, EvalSettings, only=["ci_method"])


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """Where and how a checkpoint loads (eval, compare, critic agreement)."""
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--trust-remote-code", action="store_true", help="allow checkpoint code (InternVL); off by default")
    from harness.models.openai_backend import ServedSettings

    add_flags(p, ServedSettings)  # --api-base ... for openai:MODEL checkpoints


def make_tasks(names: list[str], args: argparse.Namespace):
    from harness.core.task import task_class

    given = {k: getattr(args, k) for k in task_option_flags() if getattr(args, k, None) is not None}
    tasks = []
    used: set[str] = set()
    for name in names:
        cls = task_class(name)
        opts = {k: v for k, v in given.items() if k in cls.options}
        used |= opts.keys()
        tasks.append(cls(**opts))
    unused = set(given) - used
    if unused:
        flags = ", ".join("--" + u.replace("_", "-") for u in sorted(unused))
        raise HarnessError(f"{flags} does not apply to task(s) {', '.join(names)}; see `harness tasks` for each task's options")
    return tasks


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    return from_args(EvalSettings, args, gen=from_args(GenConfig, args))


def session_from_args(args: argparse.Namespace, **overrides: Any):
    """The one place a Session is built from flags: the fields a command has (`--backend` is the
    Session's engine), then `overrides`."""
    import dataclasses

    from harness.session import Session

    names = {f.name for f in dataclasses.fields(Session) if not f.name.startswith("_")}
    values = {name: getattr(args, name) for name in names - {"engine", "served"} if hasattr(args, name)}
    if hasattr(args, "backend"):
        values["engine"] = args.backend
    if hasattr(args, "api_base"):  # commands with the model flags (add_model_flags) serve openai: checkpoints too
        values["served"] = served_settings(args)
    return Session(**{**values, **overrides})


def served_settings(args: argparse.Namespace):
    """ServedSettings (harness/models/openai_backend.py) from parsed flags; those a command does not
    declare keep their defaults."""
    from harness.models.openai_backend import ServedSettings

    return from_args(ServedSettings, args)


def print_summaries(summaries: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from harness.core.text import visible

    table = Table(title=visible(title))
    # Items left unscored (score --allow-missing) or excluded by the official rule are shown, never silent.
    shown = [c for c in ("missing", "excluded") if any(s.get(c) for s in summaries)]
    for col in ("task", "n", "score", "95% CI", "unparsed", *shown):
        table.add_column(col, justify="right" if col != "task" else "left")
    for s in summaries:
        table.add_row(visible(s["task"]), str(s["n"]), f"{s['score']:.1f}", f"[{s['ci_low']:.1f}, {s['ci_high']:.1f}]",
                      str(s["unparsed"]), *(str(s.get(c, 0)) for c in shown))
    Console().print(table)
