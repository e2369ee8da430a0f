"""`harness critic agreement`: how often a judge agrees with reference votes (harness.judge.runs)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.common import add_model_flags
from harness.core.config import _positive_int, add_flags


def cmd_critic_agreement(args: argparse.Namespace) -> int:
    from harness.core.task import task_class
    from harness.judge.runs import run_agreement

    # The votes format belongs to the critic task; it is found through the registry like any task.
    run_agreement(args, task_class("critic").read_votes(Path(args.votes)))
    return 0


def add_parser(sub) -> None:
    from harness.judge.pipeline import JudgeSettings

    p = sub.add_parser("critic", help="judge tools: agreement of a judge with reference verdicts")
    critic = p.add_subparsers(dest="critic_command", metavar="SUBCOMMAND", required=True)
    p = critic.add_parser("agreement", help="how often a judge agrees with reference votes (MLLM-Bench format)")
    p.add_argument("--judge", default="tiny", help="the judge checkpoint (default: tiny)")
    p.add_argument("--votes", required=True, help="MLLM-Bench pairwise votes JSON; images resolved beside it")
    p.add_argument("--out", default=None, help="default: <output-dir>/<judge>/critic-agreement-<votes file stem>/")
    p.add_argument("--output-dir", default="runs", help="root of runs and the generation cache (default: runs)")
    p.add_argument("--limit", type=_positive_int, default=None, help="use only the first N votes")
    add_flags(p, JudgeSettings, only=["batch_size", "max_new_tokens", "ci_method"])
    add_model_flags(p)
    p.set_defaults(func=cmd_critic_agreement)
