"""`harness eval`: settings from the flags, then a Session runs the tasks (judged ones through harness.judge)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.common import (add_model_flags, add_task_options, make_tasks, print_summaries, session_from_args,
                                     settings_from_args, task_option_flags)
from harness.commands.flags import add_flags
from harness.core.runner import EvalResult, EvalSettings
from harness.core.task import Task
from harness.core.types import GenConfig
from harness.errors import HarnessError


def run_eval(args: argparse.Namespace, tasks: list[Task]) -> list[EvalResult]:
    """Evaluate one checkpoint on `tasks` (not judged ones); print and return what summary.json holds."""
    from harness.core.parallel import current_shard

    settings = settings_from_args(args)
    # Under `accelerate launch` / torchrun each rank evaluates a shard on its own device (harness.core.parallel).
    shard = current_shard()
    with session_from_args(args, device=args.device or shard.device, show_progress=shard.is_main) as s:
        # Fail fast: data, images and the checkpoint reference are checked before loading a model.
        loaded = [(task, s.load(task, settings.limit)) for task in tasks]
        ref = s.checkpoint(args.ckpt, args.base)
        backend = s.backend(ref, max_images=max((len(it.images) for _, items in loaded for it in items), default=1))
        results = [s.evaluate(backend, task, items, settings, shard=shard) for task, items in loaded]
    if not shard.is_main:
        return []  # rank 0 merged the shards and reports
    print_summaries([r.summary for r in results], title=f"{backend.name}{' (blind)' if settings.blind else ''}")
    return results


# --- the CLI adapter -----------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        raise HarnessError("--tasks is empty; give a comma-separated list, e.g. --tasks geoqa,mmbench")
    if args.engine == "lmms-eval":
        return _eval_with_lmms(args, names)
    if args.lmms_metric:
        raise HarnessError("--lmms-metric applies only with --engine lmms-eval")
    tasks = make_tasks(names, args)
    # Judged tasks (critic) are scored by a second model; harness.judge runs them.
    judged = [t for t in tasks if t.judged]
    if (args.judge or args.vs) and not judged:
        raise HarnessError("--judge and --vs apply only to judged tasks (critic); add one to --tasks or drop them")
    if len(judged) < len(tasks):
        run_eval(args, [t for t in tasks if not t.judged])
    if judged:
        from harness.core.parallel import current_shard

        if not current_shard().is_main:
            return 0  # judged tasks are not sharded: under a parallel launch rank 0 runs them whole
        run_judged_eval(args, judged)
    return 0


def run_judged_eval(args: argparse.Namespace, tasks: list[Task]) -> list[dict]:
    """`harness eval` for judged tasks: generate answers (ordinary runs), then judge the run folders.

    With --blind only the answering checkpoints see blanked images; the judge always sees them.
    """
    from harness.core.rundir import read_run
    from harness.judge.pipeline import Judge, JudgeSettings
    from harness.judge.runs import bootstrap_only, judge_runs, print_judged

    ci_method = bootstrap_only(args.ci_method)
    settings = settings_from_args(args)
    with session_from_args(args, engine="hf") as s:
        loaded = [(task, s.load(task, settings.limit)) for task in tasks]  # fail fast: data and images before any model
        ref = s.checkpoint(args.ckpt, args.base)
        judge_ref = s.checkpoint(args.judge or "tiny")
        answerers = [ref]
        if args.vs:
            vs_ref = s.checkpoint(args.vs)
            if vs_ref.content_hash == ref.content_hash:
                raise HarnessError(f"--vs {args.vs} is the same checkpoint as --ckpt {args.ckpt}; compare two different ones")
            if vs_ref.name == ref.name:
                raise HarnessError(f"--ckpt and --vs are both named {ref.name!r}, so their runs would share a folder; rename one")
            answerers.append(vs_ref)
        judge = Judge(s.backend(judge_ref), s.cache, JudgeSettings(batch_size=args.batch_size, ci_method=ci_method,
                                                                   seed=args.seed), s.progress)
        summaries = []
        for task, items in loaded:
            item_map = {it.id: it for it in items}
            runs = []
            for r in answerers:  # ordinary runs, then read back as any reader reads them
                run_dir = s.run_dir(r.name, task, settings.blind)
                s.evaluate(s.backend(r), task, items, settings, run_dir)
                runs.append(read_run(run_dir, task, item_map))
            vs = runs[1] if len(runs) > 1 else None
            result = judge_runs(judge, task, item_map, runs[0], vs, answerers[-1].name,
                                vs.record.checkpoint if vs is not None and vs.record else None)
            summaries.append(result.summary)
    title = ref.name + (f" vs {answerers[1].name}" if args.vs else "") + f" (judge {judge_ref.name})"
    print_judged(summaries, title)
    return summaries


def _eval_with_lmms(args: argparse.Namespace, specs: list[str]) -> int:
    from harness.bridges.lmms import WRAPPERS, LmmsRun, parse_task_specs, run_lmms_eval
    from harness.models.checkpoints import resolve_checkpoint

    given = [k for k in task_option_flags() if getattr(args, k, None) is not None]
    if given or args.judge or args.vs:
        flags = ", ".join("--" + k.replace("_", "-") for k in given + [k for k in ("judge", "vs") if getattr(args, k)])
        raise HarnessError(f"{flags} do not apply with --engine lmms-eval (its tasks carry their own settings)")
    if getattr(args, "backend", None) not in (None, "hf"):
        raise HarnessError("--backend does not apply with --engine lmms-eval (its wrappers run transformers)")
    if args.data_dir:
        raise HarnessError("--data-dir does not apply with --engine lmms-eval: a task YAML names its data "
                           "(re-export ours with `harness export-lmms-task TASK --data-dir D`)")
    settings = settings_from_args(args)
    if settings.blind:
        raise HarnessError("--blind is not available with --engine lmms-eval (its tasks load the images); drop it")
    parse_task_specs(specs)  # a missing task YAML is named before any checkpoint is resolved
    ref = resolve_checkpoint(args.ckpt, base=args.base, trust_remote_code=args.trust_remote_code)
    run = LmmsRun(settings, Path(args.output_dir), device=args.device, dtype=args.dtype, metric=args.lmms_metric)
    summaries = run_lmms_eval(ref, specs, run)
    print_summaries(summaries, title=f"{ref.name} (lmms-eval, {WRAPPERS[ref.model_type]})")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on tasks")
    p.add_argument("--ckpt", required=True, help="`tiny`, a local HF checkpoint dir, a PEFT adapter dir, or openai:MODEL (a served model, with --api-base)")
    p.add_argument("--base", default=None, help="base checkpoint for an adapter (overrides adapter_config.json)")
    p.add_argument("--tasks", required=True, help="comma-separated task names (see `harness tasks`)")
    add_flags(p, EvalSettings, only=["limit", "n_samples", "batch_size"])
    p.add_argument("--output-dir", default="runs", help="where runs/<ckpt>/<task>/ go (default: runs)")
    add_flags(p, GenConfig)
    add_flags(p, EvalSettings, only=["blind"])
    add_model_flags(p)
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
    add_task_options(p)
    p.set_defaults(func=cmd_eval)
