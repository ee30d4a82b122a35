"""The command line: `modscope SCRIPT` (the app) and the headless `tree`, `run` and `check`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

from modscope.core.contract.break_spec import CONDITIONS
from modscope.core.contract.exit_codes import ExitCode
from modscope.core.contract.sizes import SizeError, parse_size
from modscope.core.contract.version import VERSION as __version__
from modscope.core.script.interrupts import catching_ctrl_c

COMMANDS = ("tree", "run", "check", "replay", "compat")


class CommandLineParser(argparse.ArgumentParser):
    """argparse's parser, whose errors (exit 2 through `SystemExit`, as argparse's) also write
    the command's JSON failure on stdout when `--json` was asked for."""

    json_errors = False
    """Set when the command line holds `--json` (it may not have been parsed yet)."""
    command: str | None = None
    """`tree`, `run` or `check` for a subcommand's parser: which JSON failure shape to write."""

    def error(self, message: str) -> NoReturn:
        if self.json_errors:
            from modscope.report.common import error_event, write_json_failure

            write_json_failure(self.command, error_event(message))
        super().error(message)


def count(text: str) -> int:
    """An `N` of the command line (`--steps`, `--depth`): an integer 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 0 or more, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer 0 or more, got {value}")
    return value


def size(text: str) -> int | float:
    """A memory size (`--memory-budget`, `--rewind-budget`): bytes (`512MiB`, `2G`, `0`) or a
    share of the available memory (`25%`, a float)."""
    try:
        return parse_size(text)
    except SizeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def file_path(text: str) -> str:
    """A path modscope writes (`--save-state`): not empty; the rest is checked before the run."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file path, got an empty one")
    return text


class SharedOptions:
    """The options several commands take, each declared once: argparse parent parsers
    (`parents=[...]`), whose arguments come first in each command's help."""

    def __init__(self) -> None:
        self.version = CommandLineParser(add_help=False)
        """`modscope --version`, before a command or a script."""
        self.version.add_argument("--version", action="version", version=f"modscope {__version__}")

        self.script = CommandLineParser(add_help=False)
        """The script and how to read it: every command but `replay`, and the app."""
        self.script.add_argument("script", help="the model script (a Python file)")
        self.script.add_argument(
            "--model", metavar="NAME", help="which top-level name is the model"
        )
        self.script.add_argument(
            "--traceback", action="store_true", help="show the full traceback of an error"
        )

        self.hooks_and_breaks = CommandLineParser(add_help=False)
        """`run` and the app."""
        self.hooks_and_breaks.add_argument(
            "--hook",
            action="append",
            default=[],
            metavar="SPEC",
            help="MODULE:KIND[:ACTION[=ARG]], e.g. logModel:forward-pre:scale=2 (repeatable)",
        )
        self.hooks_and_breaks.add_argument(
            "--break",
            dest="breaks",
            action="append",
            default=[],
            metavar="COND",
            help=f"stop at the first COND: {', '.join(CONDITIONS)} (repeatable; exit 1 when one "
            "trips headless; b in the app)",
        )

        self.memory_budget = CommandLineParser(add_help=False)
        """`run`, `check` and the app."""
        self.memory_budget.add_argument(
            "--memory-budget",
            type=size,
            metavar="SIZE",
            help="memory for the previous state_dict copy and the history: bytes (512M, 2G) or a "
            "share of the available memory (default 25%%); tensors past it are diffed by digest "
            "and sample",
        )

        self.one_json = CommandLineParser(add_help=False)
        """`tree`, `check` and `compat` (`run` and `replay` write JSON lines)."""
        self.one_json.add_argument("--json", action="store_true", help="one JSON object on stdout")


def build_parser(*, json_errors: bool = False) -> argparse.ArgumentParser:
    """The parser of the headless commands (`tree`, `run`, `check`, `replay`, `compat`).

    `json_errors`: argparse's own errors also write the JSON failure on stdout (`--json`).
    """
    shared = SharedOptions()
    parser = CommandLineParser(
        prog="modscope",
        description="A keyboard-driven terminal debugger for the insides of PyTorch modules.",
        epilog="`modscope SCRIPT [--hook SPEC]...` opens the interactive app.",
        parents=[shared.version],
    )
    parser.json_errors = json_errors
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, parents: Sequence[CommandLineParser]) -> CommandLineParser:
        child = sub.add_parser(name, help=help, parents=list(parents))
        assert isinstance(child, CommandLineParser)
        child.json_errors = json_errors
        child.command = name
        return child

    tree = command("tree", "print the module tree", [shared.script, shared.one_json])
    tree.add_argument("--depth", type=count, metavar="N", help="show N levels of children")

    run = command(
        "run",
        "run N training iterations headless",
        [shared.script, shared.hooks_and_breaks, shared.memory_budget],
    )
    run.add_argument("--steps", type=count, default=1, metavar="N", help="iterations to run")
    run.add_argument("--json", action="store_true", help="JSON lines on stdout")
    run.add_argument("--eval", action="store_true", help="run in eval mode (model.eval())")
    run.add_argument(
        "--hooks",
        choices=["all"],
        help="observe forward-pre, forward, backward and backward-pre on every module",
    )
    run.add_argument(
        "--layers",
        action="store_true",
        help="each module's output statistics, dead and saturated fractions, gradient norm and "
        "update ratio, every step",
    )
    run.add_argument(
        "--save-state",
        type=file_path,
        metavar="PATH",
        help="write the final state_dict here (torch.save), keyed as the script's own "
        "model.state_dict(): `module.` keys when the model is a (Distributed)DataParallel "
        "wrapper; never the script, a module it imports or the --record folder",
    )
    run.add_argument(
        "--record",
        type=file_path,
        metavar="DIR",
        help="record the run to DIR as it goes (`modscope replay DIR` opens it); DIR must be "
        "new or empty, or hold a recording of this script and --overwrite be given",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="with --record: replace the recording of this script already in DIR",
    )
    run.add_argument(
        "--record-tensors",
        type=count,
        metavar="N",
        help="with --record: also save parameters of at most N elements whole, each step",
    )

    replay = command("replay", "open a recording made with `run --record DIR`", [])
    replay.add_argument("folder", metavar="DIR", help="the recording's folder")
    replay.add_argument(
        "--json", action="store_true", help="the recorded events as `run --json` wrote them"
    )
    replay.add_argument(
        "--rank", type=count, default=0, metavar="N", help="with --json: which rank (torchrun)"
    )

    check = command(
        "check",
        "find nn.Module pitfalls (the doctor)",
        [shared.script, shared.memory_budget, shared.one_json],
    )
    check.add_argument(
        "--steps", type=count, default=1, metavar="N", help="iterations the checks run"
    )

    compat = command(
        "compat",
        "whether a saved state_dict loads into the script's model",
        [shared.script, shared.one_json],
    )
    compat.add_argument("checkpoint", help="a torch.save file (read weights_only) or .safetensors")
    return parser


def build_app_parser() -> argparse.ArgumentParser:
    """The parser of `modscope SCRIPT`, the interactive app."""
    shared = SharedOptions()
    parser = CommandLineParser(
        prog="modscope",
        usage="modscope SCRIPT [--hook SPEC]... [--model NAME]\n"
        "       modscope {tree,run,check} SCRIPT ...",
        description="Open the interactive debugger on a model script. Headless commands: "
        "tree, run, check (see `modscope run --help`).",
        parents=[shared.version, shared.script, shared.hooks_and_breaks, shared.memory_budget],
    )
    parser.add_argument(
        "--rewind-budget",
        type=size,
        metavar="SIZE",
        help="memory for rewind's checkpoints: 512MiB, 2G, 10%% of available memory, 0 (off); "
        "default 1 GiB or 25%% of available memory, whichever is smaller",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 check findings, 2 failure, 130
    interrupted)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args_list if not a.startswith("-")), None)
    if first in COMMANDS or not args_list or args_list[0] in ("-h", "--help"):
        args = build_parser(json_errors="--json" in args_list).parse_args(args_list)
    else:
        args = build_app_parser().parse_args(args_list)
        args.command = None
    try:
        if args.command is None:
            if refused := _without_terminal("modscope", _headless_advice(args.script)):
                return refused
            from modscope.launch import make_app, run_app

            app = make_app(
                args.script,
                hooks=args.hook,
                breaks=args.breaks,
                rewind_budget=args.rewind_budget,
                model_name=args.model,
                traceback=args.traceback,
                memory_budget=args.memory_budget,
            )
            return run_app(app)
        # A Ctrl-C is marked as one, so a KeyboardInterrupt the script raises itself is its
        # error (exit 2) while a real one stops the command (exit 130).
        with catching_ctrl_c():
            return _headless(args)
    except KeyboardInterrupt:
        print("modscope: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # `modscope run ... | head`: the reader left; stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OK


def _headless(args: argparse.Namespace) -> int:
    if args.command == "replay":
        if args.json:
            from modscope.report.replay_command import replay_json

            return replay_json(args)
        advice = f"`modscope replay {shlex.quote(args.folder)} --json`"
        if refused := _without_terminal("modscope replay", advice):
            return refused
        from modscope.launch import run_replay

        return run_replay(args.folder)
    if args.command == "tree":
        from modscope.report.tree_command import tree_command

        return tree_command(args)
    if args.command == "run":
        from modscope.report.run_command import run_command

        return run_command(args)
    if args.command == "compat":
        from modscope.report.compat_command import compat_command

        return compat_command(args)
    from modscope.report.check_command import check_command

    return check_command(args)


def _without_terminal(what: str, advice: str) -> int:
    """2, said on stderr, when stdin or stdout is not a terminal (cron, CI, `> log`); 0 when
    both are. Decided before Textual starts, which would write escape codes into the log and
    wait for keys that never come."""
    from modscope.live import why_no_terminal

    reason = why_no_terminal()
    if reason is None:
        return ExitCode.OK
    print(f"{what}: {reason}, and the app needs one. Headless instead: {advice}.", file=sys.stderr)
    return ExitCode.FAILED


def _headless_advice(script: str) -> str:
    quoted = shlex.quote(script)
    return f"`modscope run {quoted} --steps N` (--json for JSON lines) or `modscope check {quoted}`"
