"""`modscope compat`: whether a saved state_dict loads into the script's model, readable on a
terminal or as one strict JSON object."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from modscope.core.contract.exit_codes import ExitCode
from modscope.core.contract.fmt import printable, printable_lines
from modscope.core.contract.steps import Phase
from modscope.core.model.checkpoint_compat import (
    CheckpointError,
    Compatibility,
    compare,
    model_specs,
    read_checkpoint,
)
from modscope.core.script.errors import user_error
from modscope.report.common import (
    load_session,
    report_failure,
    report_refusal,
    write_json_line,
)
from modscope.report.ranks import on_rank_zero

CHECKPOINT = "checkpoint"
"""The `phase` of the error for a checkpoint that cannot be read."""


def compat_json(result: Compatibility, checkpoint: str) -> dict[str, object]:
    """`compat --json`'s object: `loads`, the key counts, `missing`, `unexpected`,
    `shape_mismatches` and `dtype_mismatches` (`{key, checkpoint, model}`, each `{shape, dtype}`),
    `renames` (checkpoint key -> model key) and `note`."""
    return {"checkpoint": checkpoint, **result.to_json()}


def compat_report(result: Compatibility, title: str) -> list[Text]:
    """The comparison as lines of `Text` (user names never read as markup)."""
    lines = result.lines()
    verdict = Text(printable_lines(lines[0]), style="bold green" if result.loads else "bold red")
    out = [Text(title, style="bold"), verdict]
    for line in lines[1:]:
        style = "" if line.startswith("  ") else "bold"
        out.append(Text(printable_lines(line), style=style))
    return out


def compat_command(args: argparse.Namespace) -> int:
    """0 the checkpoint loads, 1 it does not, 2 the script or the checkpoint cannot be read."""
    return on_rank_zero(_compat_command, args)


def _compat_command(args: argparse.Namespace) -> int:
    try:
        specs, note = read_checkpoint(args.checkpoint)
    except CheckpointError as exc:
        return report_refusal(args, str(exc), phase=CHECKPOINT, exc_type="CheckpointError")
    session = load_session(args)
    if session is None:
        return ExitCode.FAILED
    try:
        try:
            model = model_specs(session.script.model)
        except Exception as exc:  # the model's own state_dict hooks are user code
            return report_failure(
                args, user_error(exc, phase=Phase.LOAD, script=session.script.path)
            )
    finally:
        session.close()
    result = compare(specs, model, note=note)
    if args.json:
        write_json_line(compat_json(result, args.checkpoint))
    else:
        console = Console(highlight=False)
        title = f"modscope compat {printable(args.script)} {printable(args.checkpoint)}"
        for line in compat_report(result, title):
            console.print(line, soft_wrap=True)
    return ExitCode.OK if result.loads else ExitCode.FINDINGS
