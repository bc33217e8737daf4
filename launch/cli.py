"""`cpr`: the command line. One dispatch table of verbs; each verb module registers its own parser.

Bad input never shows a traceback: an InputError (or an argparse usage error) prints one line,
``cpr: error: <field>: <problem> (<fix>)``, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orchestrator import __version__
from orchestrator.errors import InputError

EXIT_OK = 0
EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = f"see `{self.prog} --help`"
        sys.stderr.write(f"cpr: error: {' '.join(message.split())} ({hint})\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from launch import adapt, blueprints, export, jobs, leaderboard, notify, replay, report, select, submit, ui

    parser = OneLineParser(
        prog="cpr",
        description="Capability-per-resource pretraining orchestrator: submit jobs, watch and stop them, replay the "
        "stop rule, handle gradient blueprints, adapt a model with them, and export a job's model.",
    )
    parser.add_argument("--version", action="version", version=f"cpr {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=OneLineParser)
    verbs.required = True
    for module in (submit, adapt, select, jobs, replay, blueprints, report, leaderboard, export, notify, ui):
        module.register(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or EXIT_OK)
    except InputError as err:
        sys.stderr.write(f"cpr: error: {err.one_line()}\n")
        return EXIT_USAGE
    except BrokenPipeError:  # `cpr ... | head`
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
