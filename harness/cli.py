"""`harness` command line. Heavy libraries are imported inside the commands, so --help is instant."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from harness.core.config import _positive_int, add_flags
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


class _Parser(argparse.ArgumentParser):
    """Usage errors as ONE line (like every other error), naming the flag and `--help`."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _add_task_options(p: argparse.ArgumentParser) -> None:
    from harness.core.runner import EvalSettings

    for name, help_text in task_option_flags().items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=help_text)
    p.add_argument("--data-dir", default=None, help="benchmark data root (default: $HARNESS_DATA, else the bundled mini-sets)")
    add_flags(p, EvalSettings, only=["ci_method"])


def _make_tasks(names: list[str], args: argparse.Namespace):
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


# --- commands ---------------------------------------------------------------------------------
def cmd_tasks(args: argparse.Namespace) -> int:
    from importlib.metadata import entry_points

    # Plain lines rather than a table: paths must stay copyable at any terminal width.
    for ep in sorted(entry_points(group="harness.tasks"), key=lambda e: e.name):
        cls = ep.load()
        print(f"{ep.name}: {cls.description}")
        print(f"  data:    {cls.data_layout}")
        if cls.options:
            print("  options: " + "; ".join(f"--{k.replace('_', '-')} {'|'.join(v)}"
                                            + (f" ({cls.option_help[k]})" if k in cls.option_help else "")
                                            for k, v in cls.options.items()))
    print("Data root: --data-dir, else $HARNESS_DATA, else the bundled mini-sets (data/).")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from harness.models.families import table

    # Plain lines, like `harness tasks`: the notes stay readable at any terminal width.
    for row in table():
        print(f"{row['family']}: lmms-eval {row['lmms-eval']}")
        print(f"  tested: {row['tested']}")
        print(f"  limits: {row['limits']}")
    print("Other model types run through their own processor (generic path), untested.")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from harness.commands.eval import run_eval

    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        raise HarnessError("--tasks is empty; give a comma-separated list, e.g. --tasks geoqa,mmbench")
    if args.engine == "lmms-eval":
        return _eval_with_lmms(args, names)
    if args.lmms_metric:
        raise HarnessError("--lmms-metric applies only with --engine lmms-eval")
    tasks = _make_tasks(names, args)
    # Judged tasks (critic) are scored by a second model; harness.judge runs them.
    judged = [t for t in tasks if getattr(t, "judged", False)]
    if (args.judge or args.vs) and not judged:
        raise HarnessError("--judge and --vs apply only to judged tasks (critic); add one to --tasks or drop them")
    if len(judged) < len(tasks):
        run_eval(args, [t for t in tasks if not getattr(t, "judged", False)])
    if judged:
        from harness.judge.runs import run_judged_eval
        from harness.core.parallel import current_shard

        if not current_shard().is_main:
            return 0  # judged tasks are not sharded: under a parallel launch rank 0 runs them whole
        run_judged_eval(args, judged)
    return 0


def _eval_with_lmms(args: argparse.Namespace, specs: list[str]) -> int:
    from harness.bridges.lmms import run_lmms_eval

    given = [k for k in task_option_flags() if getattr(args, k, None) is not None]
    if given or args.judge or args.vs:
        flags = ", ".join("--" + k.replace("_", "-") for k in given + [k for k in ("judge", "vs") if getattr(args, k)])
        raise HarnessError(f"{flags} do not apply with --engine lmms-eval (its tasks carry their own settings)")
    if getattr(args, "backend", None) not in (None, "hf"):
        raise HarnessError("--backend does not apply with --engine lmms-eval (its wrappers run transformers)")
    if args.data_dir:
        raise HarnessError("--data-dir does not apply with --engine lmms-eval: a task YAML names its data "
                           "(re-export ours with `harness export-lmms-task TASK --data-dir D`)")
    run_lmms_eval(args, specs)
    return 0


def cmd_export_lmms_task(args: argparse.Namespace) -> int:
    from harness.bridges.lmms_export import export_task
    from harness.core.task import resolve_data_dir

    (task,) = _make_tasks([args.task], args)
    path = export_task(task, resolve_data_dir(args.data_dir), Path(args.out))
    print(f"wrote {path} and {path.stem}_utils.py; run: lmms-eval --tasks {path.stem} --include_path {path.parent} ...")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from harness.bridges.vlmeval import export_predictions

    path = export_predictions(Path(args.run), Path(args.out), data_dir=args.data_dir)
    print(f"wrote {path}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from harness.commands.eval import run_score

    (task,) = _make_tasks([args.task], args)
    if getattr(task, "judged", False):
        from harness.judge.runs import run_judged_score

        run_judged_score(args, task)
        return 0
    if args.judge:
        raise HarnessError(f"--judge applies only to judged tasks (critic), not {task.name}")
    run_score(args, task)
    return 0


def cmd_critic_agreement(args: argparse.Namespace) -> int:
    from harness.core.task import task_class
    from harness.judge.runs import run_agreement

    # The votes format belongs to the critic task; it is found through the registry like any task.
    run_agreement(args, task_class("critic").read_votes(Path(args.votes)))
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.report.leaderboard import load_spec, run_leaderboard

    spec = load_spec(Path(args.spec))
    spec.ci = args.ci or spec.ci
    spec.correction = args.correction or spec.correction
    build, fingerprint = _recipe_builder()
    run_leaderboard(spec, build_recipe=build, device=args.device, data_fingerprint=fingerprint)
    print(f"wrote {spec.out_dir}/leaderboard.{{md,csv,html}} and forest.png")
    return 0


def cmd_power(args: argparse.Namespace) -> int:
    from harness.commands.power import run_power

    (task,) = _make_tasks([args.task], args)
    run_power(args, task)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.commands.compare import CompareConfig, run_compare
    from harness.core.config import from_args
    from harness.stats.selection import parse_ns

    if args.ci_method not in ("auto", "bootstrap"):
        raise HarnessError("compare reports percentile-bootstrap CIs only (per-item scores are fractions); drop --ci")
    config = from_args(CompareConfig, args, ns=parse_ns(args.n, args.samples))
    (task,) = _make_tasks([args.task], args)
    run_compare(args, task, config)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib.util

    import harness

    # The benchmark lives in the repository's bench/ (not an installed package): load it from there.
    script = Path(harness.__file__).resolve().parents[1] / "bench" / "throughput.py"
    if not script.is_file():
        raise HarnessError(f"{script} not found; `harness bench` runs from a checkout of the repository")
    spec = importlib.util.spec_from_file_location("harness_bench_throughput", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(args.bench_args)


def cmd_train(args: argparse.Namespace) -> int:
    from trainers.cli import run_train  # the CLI may import trainers; the engine never does

    return run_train(args)


def _recipe_builder():
    """Training lives in trainers/; the engine receives it (and the data-file hashing of recipes'
    `data:`) as callbacks (imports point one way)."""
    try:
        from trainers.recipes import build_recipe, data_fingerprint
    except ImportError:
        return None, None
    return build_recipe, data_fingerprint


def build_parser() -> argparse.ArgumentParser:
    from harness.commands.compare import CompareConfig
    from harness.core.runner import CI_METHODS, EvalSettings
    from harness.core.types import GenConfig
    from harness.judge.pipeline import JudgeSettings

    parser = _Parser(
        prog="harness",
        description="Evaluate vision-language models on benchmarks with confidence intervals.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("eval", help="evaluate a checkpoint on tasks")
    p.add_argument("--ckpt", required=True, help="`tiny`, a local HF checkpoint dir, or a PEFT adapter dir")
    p.add_argument("--base", default=None, help="base checkpoint for an adapter (overrides adapter_config.json)")
    p.add_argument("--tasks", required=True, help="comma-separated task names (see `harness tasks`)")
    add_flags(p, EvalSettings, only=["limit", "n_samples", "batch_size"])
    p.add_argument("--output-dir", default="runs", help="where runs/<ckpt>/<task>/ go (default: runs)")
    add_flags(p, GenConfig)
    add_flags(p, EvalSettings, only=["blind"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--trust-remote-code", action="store_true", help="allow checkpoint code (InternVL); off by default")
    p.add_argument("--judge", default=None, help="judged tasks (critic): the checkpoint that scores the answers (default: tiny)")
    p.add_argument("--vs", default=None, help="judged tasks: compare with this checkpoint's answers (pairwise, both orders)")
    p.add_argument("--engine", default="harness", choices=["harness", "lmms-eval"],
                   help="lmms-eval: run lmms-eval's simple_evaluate (--tasks: its task names or task YAML paths) "
                        "and import its samples (needs pip install '.[lmms]')")
    p.add_argument("--lmms-metric", default=None, help="--engine lmms-eval: the per-sample metric to score by "
                   "(default: the task's first numeric one)")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"],
                   help="hf: transformers generate (default); vllm: vLLM engine for fast N-sample decoding on a GPU "
                        "(pip install vllm; tested here only against a stand-in of its API)")
    _add_task_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("score", help="re-score predictions made anywhere, with no model and no images")
    p.add_argument("--task", required=True)
    p.add_argument("--predictions", required=True, help='JSONL: {"id": ..., "output": "...", "sample": k (optional)} per line')
    p.add_argument("--out", required=True, help="folder for samples.jsonl and summary.json")
    p.add_argument("--allow-missing", action="store_true",
                   help="score the items that have predictions when some have none (the count is shown); "
                        "default: missing items are an error")
    p.add_argument("--judge", default=None, help="judged tasks (critic): the checkpoint that scores the answers (default: tiny)")
    p.add_argument("--device", default=None, help="judged tasks: where the judge runs (default: cuda if present)")
    _add_task_options(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("leaderboard", help="build, evaluate and render a leaderboard spec")
    p.add_argument("--spec", default="leaderboards/default.yaml")
    p.add_argument("--device", default=None)
    p.add_argument("--ci", default=None, choices=list(CI_METHODS), help="score CIs, overriding the spec's `ci:` (default auto)")
    p.add_argument("--correction", default=None, choices=["holm", "bh", "none"],
                   help="multiplicity correction of the stars, overriding the spec's `correction:` (default holm)")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("power", help="items needed to detect an effect, from a pilot run's samples (MDE at 80%% power)")
    p.add_argument("--task", required=True)
    p.add_argument("--run", required=True, help="pilot run folder with samples.jsonl (e.g. runs/tiny/geoqa)")
    p.add_argument("--vs", default=None, help="a second run on the same items: measures how often the two disagree")
    p.add_argument("--n", type=_positive_int, default=None, help="also give the MDE at this many units")
    p.add_argument("--delta", type=float, default=None, help="effect in points: how many units detect it")
    _add_task_options(p)
    p.set_defaults(func=cmd_power)

    p = sub.add_parser(
        "compare", help="test-time scaling curves: majority vote vs self-select vs pass@n against n",
        description="Sample K outputs per item once, then score selection methods at each n with 95% CIs. "
                    "Methods: majority-vote, self-select (needs --ckpt), pass@n (always added).",
    )
    p.add_argument("methods", nargs="+", metavar="METHOD", help="majority-vote, self-select, pass@n")
    p.add_argument("--task", required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="`tiny`, a local HF checkpoint dir, or a PEFT adapter dir")
    source.add_argument("--predictions", help='JSONL made elsewhere: {"id": ..., "output": "...", "sample": k} per line')
    p.add_argument("--n", required=True, help="n values: a range 1..10, a list 1,2,4,8 or one value")
    add_flags(p, CompareConfig, only=["samples", "subsets"])
    p.add_argument("--out", default=None, help="output folder (default: <output-dir>/compare/<ckpt>/<task>/)")
    p.add_argument("--output-dir", default="runs", help="root of runs and the generation cache (default: runs)")
    add_flags(p, CompareConfig, only=["limit", "batch_size", "temperature", "top_p", "top_k", "max_new_tokens", "seed",
                                      "bootstrap"])
    p.add_argument("--base", default=None, help="base checkpoint for an adapter (overrides adapter_config.json)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--trust-remote-code", action="store_true", help="allow checkpoint code (InternVL); off by default")
    _add_task_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("critic", help="judge tools: agreement of a judge with reference verdicts")
    critic = p.add_subparsers(dest="critic_command", metavar="SUBCOMMAND", required=True)
    p = critic.add_parser("agreement", help="how often a judge agrees with reference votes (MLLM-Bench format)")
    p.add_argument("--judge", default="tiny", help="the judge checkpoint (default: tiny)")
    p.add_argument("--votes", required=True, help="MLLM-Bench pairwise votes JSON; images resolved beside it")
    p.add_argument("--out", default=None, help="default: <output-dir>/<judge>/critic-agreement-<votes file stem>/")
    p.add_argument("--output-dir", default="runs", help="root of runs and the generation cache (default: runs)")
    p.add_argument("--limit", type=_positive_int, default=None, help="use only the first N votes")
    add_flags(p, JudgeSettings, only=["batch_size", "max_new_tokens", "ci_method"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--trust-remote-code", action="store_true", help="allow checkpoint code (InternVL); off by default")
    p.set_defaults(func=cmd_critic_agreement)

    from trainers.cli import EPILOG, TREATMENTS  # names only (no torch): the list lives with the trainers

    p = sub.add_parser(
        "train", help=f"train a treatment into a checkpoint folder ({', '.join(TREATMENTS)})",
        description="Train a treatment on a task's train split and/or your own data files (--data); the folder (a PEFT adapter + manifest.json) "
                    "loads with `harness eval --ckpt DIR`. key=value arguments set config fields.",
        epilog=EPILOG,
    )
    p.add_argument("treatment", help=" | ".join(TREATMENTS))
    p.add_argument("--base", default=None, help="`tiny` or a local checkpoint folder (average: default the adapters' base)")
    p.add_argument("--task", default=None, help="task(s) whose train split is used: geoqa, or geoqa,mmbench")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--config", default=None, help="YAML/JSON file of config fields (key=value arguments override it)")
    p.add_argument("--data-dir", default=None, help="data root (default: $HARNESS_DATA, else the bundled mini-sets)")
    p.add_argument("--data", default=None, metavar="PATH[:RATIO],...",
                   help="your own data files, alone or with --task: LLaVA / ShareGPT / MMPR meta JSON, TRL "
                        "JSONL/JSON/parquet or save_to_disk folder (format detected); :RATIO repeats (2) or subsamples (0.5)")
    p.add_argument("--image-folder", default=None, help="where --data rows' relative image paths point (default: each file's folder)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config fields, e.g. lora_r=8 epochs=2")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export-lmms-task", help="write an lmms-eval task YAML + utils module for one of our tasks",
                       description="lmms-eval then runs it over the data dir in place (geoqa, aokvqa_mc, aokvqa_da).")
    p.add_argument("task", help="geoqa | aokvqa_mc | aokvqa_da")
    p.add_argument("--out", required=True, help="folder for harness_<task>.yaml and its utils module")
    _add_task_options(p)
    p.set_defaults(func=cmd_export_lmms_task)

    p = sub.add_parser("export", help="write a run's predictions in another tool's result layout")
    p.add_argument("--format", required=True, choices=["vlmeval"], help="vlmeval: VLMEvalKit's <model>_<dataset>.xlsx/.tsv")
    p.add_argument("--run", required=True, help="a run folder (samples.jsonl + summary.json) of an LMUData TSV task")
    p.add_argument("--out", required=True, help="file to write: .tsv, or .xlsx (needs openpyxl)")
    p.add_argument("--data-dir", default=None, help="where the run's TSV lives (default: the run's own data dir)")
    p.set_defaults(func=cmd_export)

    from harness.commands.view import add_parsers as add_view_parsers

    add_view_parsers(sub)

    p = sub.add_parser("tasks", help="list tasks and where each expects its data")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("models", help="list the model families the harness drives, how each is tested, known limits")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("bench", add_help=False, help="throughput: our eval vs lmms-eval vs a naive loop, N-sample cost "
                       "(bench/throughput.py; `harness bench --help` lists its options)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot take positionals after options in a subcommand: fold train's key=value back in.
    if extra and getattr(args, "command", None) == "train" and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif getattr(args, "command", None) == "bench":
        args.bench_args = extra  # bench/throughput.py parses (and documents, with --help) its own flags
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    func: Callable[[Any], int] = args.func
    try:
        return func(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as e:  # a data, predictions or spec file that is not UTF-8 text
        print(f"error: a file is not UTF-8 text ({e.reason} at byte {e.start}); re-save it as UTF-8", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, read-only folder, permissions: the file and the reason, no traceback
        from harness.core.files import write_error

        print(f"error: {write_error(Path(e.filename or '?'), e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
