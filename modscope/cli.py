"""The command line: `modscope SCRIPT` (the app) and the headless `tree`, `run` and `check`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from modscope import __version__
from modscope.core.exit_codes import ExitCode

COMMANDS = ("tree", "run", "check")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", help="the model script (a Python file)")
    parser.add_argument("--model", metavar="NAME", help="which top-level name is the model")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of the headless commands (`tree`, `run`, `check`)."""
    parser = argparse.ArgumentParser(
        prog="modscope",
        description="A keyboard-driven terminal debugger for the insides of PyTorch modules.",
        epilog="`modscope SCRIPT [--hook SPEC]...` opens the interactive app.",
    )
    parser.add_argument("--version", action="version", version=f"modscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tree = sub.add_parser("tree", help="print the module tree")
    _add_common(tree)
    tree.add_argument("--json", action="store_true", help="one JSON object on stdout")
    tree.add_argument("--depth", type=_positive, metavar="N", help="show N levels of children")

    run = sub.add_parser("run", help="run N training iterations headless")
    _add_common(run)
    run.add_argument("--steps", type=_positive, default=1, metavar="N", help="iterations to run")
    run.add_argument("--json", action="store_true", help="JSON lines on stdout")
    run.add_argument("--eval", action="store_true", help="run in eval mode (model.eval())")
    run.add_argument(
        "--hook",
        action="append",
        default=[],
        metavar="SPEC",
        help="MODULE:KIND[:ACTION[=ARG]], e.g. logModel:forward-pre:scale=2 (repeatable)",
    )
    run.add_argument(
        "--hooks",
        choices=["all"],
        help="observe forward-pre, forward, backward and backward-pre on every module",
    )
    run.add_argument("--save-state", metavar="PATH", help="write the final state_dict here")

    check = sub.add_parser("check", help="find nn.Module pitfalls (the doctor)")
    _add_common(check)
    check.add_argument(
        "--steps", type=_positive, default=1, metavar="N", help="iterations the checks run"
    )
    check.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return parser


def build_app_parser() -> argparse.ArgumentParser:
    """The parser of `modscope SCRIPT`, the interactive app."""
    parser = argparse.ArgumentParser(
        prog="modscope",
        usage="modscope SCRIPT [--hook SPEC]... [--model NAME]\n"
        "       modscope {tree,run,check} SCRIPT ...",
        description="Open the interactive debugger on a model script. Headless commands: "
        "tree, run, check (see `modscope run --help`).",
    )
    parser.add_argument("--version", action="version", version=f"modscope {__version__}")
    _add_common(parser)
    parser.add_argument(
        "--hook",
        action="append",
        default=[],
        metavar="SPEC",
        help="attach MODULE:KIND[:ACTION[=ARG]] at start (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 check findings, 2 failure)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args_list if not a.startswith("-")), None)
    if first in COMMANDS or not args_list or args_list[0] in ("-h", "--help"):
        args = build_parser().parse_args(args_list)
    else:
        args = build_app_parser().parse_args(args_list)
        args.command = None
    try:
        if args.command is None:
            from modscope.launch import run_app

            return run_app(
                args.script, hooks=args.hook, model_name=args.model, traceback=args.traceback
            )
        if args.command == "tree":
            from modscope.report.tree_command import tree_command

            return tree_command(args)
        if args.command == "run":
            from modscope.report.run_command import run_command

            return run_command(args)
        from modscope.report.check_command import check_command

        return check_command(args)
    except KeyboardInterrupt:
        print("modscope: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # `modscope run ... | head`: the reader left; stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OK
