"""`harness critic agreement`: how often a judge agrees with reference votes (harness.judge.runs)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.common import add_model_flags
from harness.commands.flags import _positive_int, add_flags


def cmd_critic_agreement(args: argparse.Namespace) -> int:
    from harness.commands.common import session_from_args
    from harness.core.task import task_class
    from harness.judge.pipeline import JUDGED_FILE, Judge, JudgeSettings, agreement
    from harness.judge.runs import bootstrap_only, print_agreement

    # The votes format belongs to the critic task; it is found through the registry like any task.
    comparisons = list(task_class("critic").read_votes(Path(args.votes)))[: args.limit]
    settings = JudgeSettings(batch_size=args.batch_size, ci_method=bootstrap_only(args.ci_method),
                             max_new_tokens=args.max_new_tokens)
    with session_from_args(args) as s:
        judge_ref = s.checkpoint(args.judge)
        out_dir = Path(args.out) if args.out else s.output_dir / judge_ref.name / f"critic-agreement-{Path(args.votes).stem}"
        judge = Judge(s.backend(judge_ref), s.cache, settings, s.progress)
        summary = agreement(judge, comparisons, out_dir, {"votes_file": str(args.votes)})
    print_agreement(summary, f"judge {judge_ref.name} vs {Path(args.votes).name}")
    print(f"wrote {out_dir}/judgements.jsonl and {JUDGED_FILE}")
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
