"""`harness critic agreement`: how often judges agree with reference votes (harness.judge.runs).

Several `--judge`s on the same votes are compared item by item: each later judge's agreement minus
the first's, with a paired CI over questions (a trained critic against tiny as a judge).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.commands.common import add_model_flags
from harness.commands.flags import _positive_int, add_flags
from harness.errors import ContextOverflow, HarnessError

def _votes_files(args: argparse.Namespace) -> list[Path]:
    if args.votes:
        return [Path(v) for v in args.votes]
    from harness.core.task import resolve_data_dir
    from harness.judge.runs import GOLD_VOTES

    return [resolve_data_dir(args.data_dir) / GOLD_VOTES]


def _out_dir(args: argparse.Namespace, output_dir: Path, judge: str, votes: Path, single: bool) -> Path:
    if args.out and single:
        return Path(args.out)
    if args.out:
        return Path(args.out) / f"{judge}-{votes.stem}"
    return output_dir / judge / f"critic-agreement-{votes.stem}"


def _agreement_units(out_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Per comparison: 1 when the judge's verdict (as the reference saw the pair) matches, from
    the judgements it just wrote. An unparsable reply counts as disagreement here (its agreement
    figure leaves it out), so two judges are compared on the same votes whatever they parse."""
    from harness.core.files import read_jsonl

    rows = list(read_jsonl(out_dir / "judgements.jsonl"))
    return ({r["id"]: float(r["verdict"] == r["reference"]) for r in rows},
            {r["id"]: r["cluster"] for r in rows})


def cmd_critic_agreement(args: argparse.Namespace) -> int:
    from harness.commands.common import session_from_args
    from harness.core.outputs import refuse_protected
    from harness.core.store import atomic_write_json
    from harness.core.task import task_class
    from harness.judge.pipeline import JUDGED_FILE, Judge, JudgeSettings, agreement, shorten_answers, within_context
    from harness.judge.runs import bootstrap_only, print_agreement, print_judge_comparison
    from harness.stats.ci import paired_difference

    votes_files = _votes_files(args)
    # The votes format belongs to the critic task; it is found through the registry like any task.
    votes = {path: list(task_class("critic").read_votes(path))[: args.limit] for path in votes_files}
    shortened: dict[Path, dict[str, int]] = {}
    if args.answer_words:  # long reference answers past a small judge's context: cut, and say how many
        for path in votes:
            votes[path], cut = shorten_answers(votes[path], args.answer_words)
            shortened[path] = {"answer_words": args.answer_words, "answers_cut": cut}
    if args.out:  # only the judge's own files are (re)written there, never anything else removed
        refuse_protected(args.out)
    settings = JudgeSettings(batch_size=args.batch_size, ci_method=bootstrap_only(args.ci_method),
                             max_new_tokens=args.max_new_tokens)
    judges = args.judge or ["tiny"]
    single = len(judges) == 1 and len(votes_files) == 1
    report: dict[str, Any] = {"votes": {}, "comparisons": []}
    with session_from_args(args) as s:
        refs = [s.checkpoint(j) for j in judges]
        if len({r.name for r in refs}) != len(refs):
            raise HarnessError("--judge names the same checkpoint twice; give each judge once")
        units: dict[tuple[str, Path], tuple[dict[str, float], dict[str, str]]] = {}
        for ref in refs:
            judge = Judge(s.backend(ref), s.cache, settings, s.progress)
            for path, comparisons in votes.items():
                out_dir = _out_dir(args, s.output_dir, ref.name, path, single)
                meta: dict[str, Any] = {"votes_file": str(path)}
                if args.answer_words:  # votes still past the context (long questions) are left out, counted
                    comparisons, past = within_context(judge, comparisons)
                    meta.update(shortened[path], votes_past_context=past)
                try:
                    summary = agreement(judge, comparisons, out_dir, meta)
                except ContextOverflow as e:
                    if args.answer_words:
                        raise
                    raise HarnessError(f"{path}: {e}; or cut the answers with --answer-words N") from None
                cut = (f" (answers cut to {args.answer_words} words: {meta['answers_cut']}; votes past the "
                       f"context left out: {meta['votes_past_context']})") if args.answer_words else ""
                print_agreement(summary, f"judge {ref.name} vs {path.name}{cut}")
                print(f"wrote {out_dir}/judgements.jsonl and {JUDGED_FILE}")
                report["votes"].setdefault(str(path), {})[ref.name] = summary
                units[ref.name, path] = _agreement_units(out_dir)
            s.release_models()
    for path in votes:
        first = refs[0].name
        for ref in refs[1:]:
            (a, clusters), (b, _) = units[ref.name, path], units[first, path]
            d = paired_difference(list(a.values()), list(b.values()), list(a), list(b), seed=settings.seed,
                                  clusters=clusters)
            report["comparisons"].append({"votes_file": str(path), "judge": ref.name, "vs": first, **vars(d)})
    if report["comparisons"]:
        print_judge_comparison(report["comparisons"])
        where = Path(args.out) if args.out else s.output_dir
        atomic_write_json(where / "critic-agreement.json", report)
        print(f"wrote {where / 'critic-agreement.json'}")
    return 0


def add_parser(sub) -> None:
    from harness.judge.pipeline import JudgeSettings

    p = sub.add_parser("critic", help="judge tools: agreement of a judge with reference verdicts")
    critic = p.add_subparsers(dest="critic_command", metavar="SUBCOMMAND", required=True)
    p = critic.add_parser("agreement", help="how often judges agree with reference votes (MLLM-Bench format)")
    p.add_argument("--judge", action="append", default=None,
                   help="a judge checkpoint (default: tiny); repeat to compare judges item by item against the first")
    p.add_argument("--votes", action="append", default=None,
                   help="MLLM-Bench pairwise votes JSON, images resolved beside it; repeatable "
                        "(default: the bundled gold votes, <data-dir>/critic/votes_gold.json)")
    p.add_argument("--data-dir", default=None, help="where the default votes live (default: $HARNESS_DATA, else data/)")
    p.add_argument("--out", default=None, help="default: <output-dir>/<judge>/critic-agreement-<votes file stem>/")
    p.add_argument("--output-dir", default="runs", help="root of runs and the generation cache (default: runs)")
    p.add_argument("--limit", type=_positive_int, default=None, help="use only the first N votes")
    p.add_argument("--answer-words", type=_positive_int, default=None,
                   help="cut each answer to its first N words (' ...' marks a cut) so long answers fit a small "
                        "judge's context; votes still past it are left out; the report counts both (default: answers whole)")
    add_flags(p, JudgeSettings, only=["batch_size", "max_new_tokens", "ci_method"])
    add_model_flags(p)
    p.set_defaults(func=cmd_critic_agreement)
