"""`harness eval`: settings from the flags, then a Session runs the tasks (judged ones through harness.judge)."""
from __future__ import annotations

import argparse

from harness.commands.common import (add_model_flags, add_task_options, make_tasks, print_summaries, settings_from_args,
                                     task_option_flags)
from harness.core.config import add_flags
from harness.core.runner import EvalResult, EvalSettings
from harness.core.task import Task
from harness.core.types import GenConfig
from harness.errors import HarnessError
from harness.models.openai_backend import served_settings


def run_eval(args: argparse.Namespace, tasks: list[Task]) -> list[EvalResult]:
    """Evaluate one checkpoint on `tasks` (not judged ones); print and return what summary.json holds."""
    from harness.core.parallel import current_shard
    from harness.session import Session

    settings = settings_from_args(args)
    # Under `accelerate launch` / torchrun each rank evaluates a shard on its own device (harness.core.parallel).
    shard = current_shard()
    engine = getattr(args, "backend", "hf")
    if engine == "vllm" and any(t.request_type != "generate" for t in tasks):
        raise HarnessError("--backend vllm only generates; likelihood-scored tasks (--mc-mode likelihood) "
                           "need the default backend")
    with Session(args.output_dir, args.data_dir, device=args.device or shard.device, dtype=args.dtype,
                 trust_remote_code=args.trust_remote_code, engine=engine, show_progress=shard.is_main,
                 served=served_settings(args)) as s:
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
