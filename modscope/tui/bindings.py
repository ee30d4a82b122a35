"""The main screen's keys (docs/design.md section 3), each with an id a user keymap can rebind."""

from __future__ import annotations

from textual.binding import Binding, BindingType

APP_BINDINGS: list[BindingType] = [
    Binding("s", "step", "Step", id="step", tooltip="One whole training iteration"),
    Binding(
        "n",
        "next_phase",
        "Phase",
        id="next_phase",
        tooltip="The next phase only: forward, backward, optimizer step",
    ),
    # Shown only at a pause, and then early in the footer, where a narrow terminal keeps it.
    Binding("c", "resume", "Continue", id="continue", tooltip="Continue from a pause hook"),
    Binding(
        "space",
        "toggle_run",
        "Run",
        priority=True,
        id="run",
        tooltip="Run iterations continuously; space again pauses",
    ),
    Binding("e", "toggle_mode", "Train/eval", id="mode"),
    Binding("u", "rewind", "Back", id="rewind", tooltip="Back one step"),
    Binding("g", "go_to_step", "Go to step", id="go_to_step", tooltip="Show any step"),
    Binding(
        "right_square_bracket",
        "switch_rank(1)",
        "Next rank",
        id="next_rank",
        tooltip="A replay of several ranks: the next rank, at the same step",
    ),
    Binding(
        "left_square_bracket",
        "switch_rank(-1)",
        "Previous rank",
        id="previous_rank",
        show=False,
    ),
    Binding("d", "diff", "Diff", id="diff", tooltip="What the last step changed"),
    # Listed by `?` but not in the footer, which is full at 100 columns already.
    Binding(
        "l",
        "layers",
        "Layers",
        id="layers",
        show=False,
        tooltip="Each module's output statistics, dead and saturated shares, gradient norm and "
        "update ratio",
    ),
    Binding(
        "h",
        "attach_hook",
        "Hook",
        id="attach_hook",
        tooltip="Attach a hook to the selected module",
    ),
    Binding(
        "x",
        "detach_hook",
        "Detach",
        id="detach_hook",
        tooltip="Detach the hook selected in the hooks pane",
    ),
    Binding(
        "b",
        "breaks",
        "Breaks",
        id="breaks",
        tooltip="Break conditions: stop where a NaN starts, a loss or gradient norm crosses X",
    ),
    Binding("r", "reload", "Reload", id="reload"),
    Binding(
        "exclamation_mark",
        "traceback",
        "Traceback",
        id="traceback",
        tooltip="The traceback of the last internal error",
    ),
    Binding("slash", "filter", "Filter", id="filter"),
    Binding("question_mark,f1", "help", "Help", id="help"),
    Binding("escape", "dismiss_extra", "Clear", id="clear"),
    Binding("q", "quit", "Quit", id="quit"),
    # Above Textual's own ctrl+c (copy in a field, "press q to quit" elsewhere), on every screen.
    Binding(
        "ctrl+c",
        "interrupt",
        "Interrupt a step (idle: ask to quit)",
        priority=True,
        show=False,
        id="interrupt",
        tooltip="During a step: pause it at the next phase boundary (c continues, u undoes); "
        "otherwise ask to quit (ctrl+c again quits); copies selected text first",
    ),
]

STEPPING = ("step", "next_phase", "toggle_run", "toggle_mode", "rewind", "go_to_step")
"""Actions that run the model: off while typing, on other screens and without a loaded script."""

TIME_TRAVEL = ("rewind", "go_to_step", "switch_rank")
"""Actions that move between steps already taken: a replay's (shown only where they work)."""

LIVE_ONLY = ("toggle_mode", "attach_hook", "detach_hook", "reload", "breaks")
"""Actions that need a live model: greyed out in a replay, and the help says why."""
