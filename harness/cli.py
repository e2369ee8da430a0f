"""`harness` command line. Heavy libraries are imported inside the commands, so --help is instant."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from harness.commands import (bench, compare, critic, export, export_lmms_task, leaderboard, models, power, score, tasks,
                              train, view)
from harness.commands import eval as eval_
from harness.commands.common import task_option_flags  # noqa: F401  (kept importable from harness.cli)
from harness.errors import HarnessError


class _Parser(argparse.ArgumentParser):
    """Usage errors as ONE line (like every other error), naming the flag and `--help`."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


# One module per command (view.py: view and diff), each with `add_parser(subparsers)` and its `cmd_*`;
# this order is the order of `harness --help`. Heavy libraries load only inside a running command.
COMMANDS = (eval_, score, leaderboard, power, compare, critic, train, export_lmms_task, export, view, tasks, models, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harness",
        description="Evaluate vision-language models on benchmarks with confidence intervals.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
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
        from harness.core.text import visible

        print(f"error: {visible(e, keep_lines=False)}", file=sys.stderr)  # names from files: no raw escapes
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
