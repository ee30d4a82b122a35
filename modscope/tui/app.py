"""The modscope app: runs the session thread, turns keys into commands, and drains updates.

Painting updates lives in `update_painter.py`, the hook keys in `hook_actions.py` (plain objects
the app holds), the keys in `bindings.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import var
from textual.widget import Widget
from textual.widgets import Footer, Input, Tree

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.control.thread import ControllerFactory, SessionThread
from modscope.core.contract.fmt import printable
from modscope.tui.bindings import APP_BINDINGS, LIVE_ONLY, STEPPING, TIME_TRAVEL
from modscope.tui.break_dialog import BreakDialog
from modscope.tui.command_palette import CommandPalette
from modscope.tui.detail_pane import DetailPane
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.error_panel import ErrorPanel
from modscope.tui.filter_field import FilterField
from modscope.tui.findings_pane import FindingsPane
from modscope.tui.help_screen import HelpScreen, keys_for
from modscope.tui.hook_actions import HookActions
from modscope.tui.hook_event_groups import SHOWN_PER_BURST, coalesce
from modscope.tui.hook_events_pane import HookEventsPane
from modscope.tui.hooks_pane import HooksPane
from modscope.tui.layers_screen import LayersScreen
from modscope.tui.log_pane import LogPane
from modscope.tui.loss_plot import LossPlot
from modscope.tui.model_view import ModelView, NodeRef
from modscope.tui.module_provider import ModuleProvider
from modscope.tui.module_tree import ModuleTree
from modscope.tui.quit_screen import QuitScreen
from modscope.tui.status_line import StatusLine
from modscope.tui.step_screen import StepScreen
from modscope.tui.traceback_screen import TracebackScreen
from modscope.tui.update_painter import UpdatePainter
from modscope.tui.values_screen import ValuesScreen


class ModscopeApp(App[None]):
    """`modscope SCRIPT`: the live module tree, stepped from the keyboard.

    `controller(emit, wait)` builds the session controller the app's thread runs (see
    `modscope.control.controller.controller_factory`); the app itself never touches torch: it
    submits commands and renders the updates they produce.
    """

    TITLE = "modscope"
    CSS_PATH = "modscope.tcss"
    COMMANDS: ClassVar = App.COMMANDS | {ModuleProvider}
    # Textual annotates both breakpoint lists `ClassVar[...] | None`, which mypy reads as an
    # instance variable: a class variable here is what Textual means.
    HORIZONTAL_BREAKPOINTS: ClassVar = [  # type: ignore[misc]
        (0, "-w-tiny"),
        (50, "-w-small"),
        (80, "-w-medium"),
        (120, "-w-wide"),
    ]
    VERTICAL_BREAKPOINTS: ClassVar = [  # type: ignore[misc]
        (0, "-h-tiny"),
        (16, "-h-small"),
        (24, "-h-medium"),
        (34, "-h-tall"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = APP_BINDINGS

    # What the keys depend on (`check_action`) beside the screen and the focus, for which
    # Textual refreshes the footer itself, and the panes' own state (the filter field, the error
    # panel, the hooks pane's module and hooks). Each one set to a new value refreshes the footer.
    loaded = var(False, bindings=True)
    """A model is loaded (not loading, not failed to load)."""
    replay = var(False, bindings=True)
    """The app replays a recording: no live model."""
    rewound = var(False, bindings=True)
    """Steps already taken can be shown again (a replay, or a session that keeps rewind states)."""
    several_ranks = var(False, bindings=True)
    """A replay of several ranks: `[` and `]` switch between them."""
    running = var(False, bindings=True)
    """An iteration runs (the thread's word as of the last drain)."""
    stepped = var(False, bindings=True)
    """A step is recorded: the diff view has something to show."""
    paused = var(False, bindings=True)
    """A pause hook or a break condition holds the iteration."""
    last_internal_error: var[up.InternalError | None] = var(None, bindings=True)
    """The last bug of modscope's reported; `!` shows its traceback."""

    class WorkerWoke(Message):
        """The session thread's outbox has news."""

    def __init__(
        self,
        script: str,
        *,
        controller: ControllerFactory,
        show_traceback: bool = False,
        animations: bool = True,
    ) -> None:
        super().__init__()
        self.script = script
        self.view = ModelView(script)
        self.worker = SessionThread(controller, wake=self._wake)
        self.timings: dict[str, float] = {}
        """Seconds from the model being built to the tree painted (for the benchmark)."""
        self._last_id = 1  # the command id of the initial load
        self._done_through = 0
        self._idle: asyncio.Event | None = None
        self.hook_actions = HookActions(self, self.view, script=script, submit=self._submit)
        self.painter = UpdatePainter(
            self,
            self.view,
            self.hook_actions,
            script=script,
            show_traceback=show_traceback,
            timings=self.timings,
            submit=self._submit,
        )
        self._layers_asked = False  # CollectLayers sent (once per app: reloads keep watching)
        self._quitting = False
        if not animations:
            self.animation_level = "none"

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield FilterField(id="filter")
                yield ModuleTree(self.view, id="tree")
            with Vertical(id="right"):
                yield DetailPane(self.view, id="detail")
                yield HooksPane(self.script, id="hooks")
                yield ErrorPanel(id="error")
                yield FindingsPane(id="findings")
        with Horizontal(id="bottom"):
            yield LogPane(id="log")
            yield HookEventsPane(id="events")
            yield LossPlot(id="loss")
        yield StatusLine(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._idle = asyncio.Event()
        self.sub_title = printable(self.view.status.script)
        self.query_one(Input).cursor_blink = not self.is_headless
        self.view.status = replace(self.view.status, busy=True)
        self.query_one(StatusLine).show(self.view.status)
        self.query_one(ModuleTree).focus()
        self._last_id = self.worker.start()

    def on_unmount(self) -> None:
        self.worker.stop()

    # -- the session thread ----------------------------------------------------------------------

    def _wake(self) -> None:
        # RuntimeError: the app's loop is gone, so there is nothing left to show.
        with contextlib.suppress(RuntimeError):
            self.post_message(self.WorkerWoke())

    def _submit(self, command: cmd.Command) -> None:
        self._last_id = self.worker.submit(command)

    async def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until every command submitted so far has run and its news is shown."""
        while not self._is_idle():
            assert self._idle is not None
            self._idle.clear()
            await asyncio.wait_for(self._idle.wait(), timeout)

    def _is_idle(self) -> bool:
        s = self.view.status
        return self._done_through >= self._last_id and not s.running and not s.busy

    def on_modscope_app_worker_woke(self, _: WorkerWoke) -> None:
        dirty = False
        batch = self.worker.drain()
        self._done_through = batch.done_through
        updates = batch.updates
        # Hook events of a burst (a continuous run, `*` hooks) are logged once, newest last.
        events = [e for u in updates if isinstance(u, up.HookEventsSeen) for e in u.events]
        for update in updates:
            dirty = self.painter.apply(update) or dirty
        if events:
            self.view.saw(events)
            groups = coalesce(events)
            self.query_one(LogPane).hook_events(groups, SHOWN_PER_BURST)
            self.query_one(HookEventsPane).add_events(groups)
        self.painter.show_status(self.view.status, batch)
        if dirty and self.view.loaded:
            self.query_one(ModuleTree).refresh_labels()
            self.query_one(DetailPane).refresh_detail()
            self.query_one(LossPlot).show(self.view.losses(), self.view.other_losses())
        self._follow_session()
        if self._is_idle() and self._idle is not None:
            self._idle.set()

    def _follow_session(self) -> None:
        """The session's facts that the keys depend on, from the view after a drain."""
        status = self.view.status
        self.loaded = self.view.loaded
        self.replay = status.replay is not None
        self.rewound = status.rewind
        self.several_ranks = status.ranks > 1
        self.running = status.running
        self.stepped = bool(self.view.history)
        self.paused = bool(status.paused_at)
        self.last_internal_error = self.painter.last_internal_error

    # -- what the keys do ----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self._quitting:
            # Keys typed after `q` arrive while the app shuts down: a dialog opened then
            # finds its widgets already gone.
            return False
        on_main = self.screen is self.screen_stack[0]
        replay = self.replay
        if action in TIME_TRAVEL and not (replay or self.rewound):
            return False
        if action == "switch_rank":
            return self.several_ranks and on_main
        if action in LIVE_ONLY and replay:
            return None  # shown greyed: a replay has no live model
        if action in STEPPING:
            # Keys pressed while the script loads are queued like those pressed mid-step.
            if isinstance(self.focused, Input) or not on_main or self.view.load_error:
                return False
            if action in ("step", "next_phase") and self.paused:
                return True  # at a pause: run to the end of the iteration / phase
            if action in ("step", "next_phase") and self.running:
                return None
            return True
        if action == "diff":
            return (None if not self.stepped else True) if on_main and self.loaded else False
        if action == "filter":
            return on_main and self.loaded
        if action == "layers":
            if replay and not self.view.layers:
                return None  # greyed: recorded without --layers (the help says so)
            return on_main and self.loaded and not isinstance(self.focused, Input)
        if action == "breaks":
            return on_main and self.loaded and not isinstance(self.focused, Input)
        if action == "resume":
            return self.paused and not replay
        if action == "attach_hook":
            if not on_main or not self.loaded or isinstance(self.focused, Input):
                return False
            return self.query_one(HooksPane).path is not None or None
        if action == "detach_hook":
            if not on_main or not self.loaded or isinstance(self.focused, Input):
                return False
            return self.query_one(HooksPane).selected is not None or None
        if action == "traceback":
            return on_main and self.last_internal_error is not None
        if action == "dismiss_extra":
            return self.query_one(FilterField).shown or self.query_one(ErrorPanel).error is not None
        return True

    def action_step(self) -> None:
        # At a pause this runs on to the end of the iteration (the controller knows).
        self._submit(cmd.Step())

    def action_next_phase(self) -> None:
        self._submit(cmd.NextPhase())

    def action_toggle_run(self) -> None:
        self.worker.set_running(not self.worker.running)

    def action_rewind(self) -> None:
        self._submit(cmd.Rewind())

    def action_breaks(self) -> None:
        def chosen(conditions: tuple[str, ...] | None) -> None:
            if conditions is not None:
                self._submit(cmd.ArmBreaks(conditions))

        self.push_screen(BreakDialog(self.view.status.breaks), chosen)

    def action_attach_hook(self) -> None:
        self.hook_actions.attach()

    def action_detach_hook(self) -> None:
        self.hook_actions.detach()

    def on_hook_events_pane_opened(self, event: HookEventsPane.Opened) -> None:
        self.hook_actions.open_event(event.event)

    def action_switch_rank(self, by: int) -> None:
        self._submit(cmd.SwitchRank(by))

    def action_go_to_step(self) -> None:
        status = self.view.status

        def chosen(step: int | None) -> None:
            if step is not None:
                self._submit(cmd.GoToStep(step))

        self.push_screen(StepScreen(status.step, status.last_step), chosen)

    def action_toggle_mode(self) -> None:
        self._submit(cmd.ToggleTraining())

    def action_reload(self) -> None:
        self.query_one(LogPane).message(f"reloading {self.view.status.script}…")
        self._submit(cmd.Reload())

    def action_resume(self) -> None:
        self._submit(cmd.Continue())

    def action_diff(self) -> None:
        self.push_screen(DiffScreen(self.view))

    def action_layers(self) -> None:
        if not self._layers_asked and self.view.status.replay is None:
            self._layers_asked = True
            self._submit(cmd.CollectLayers())
        field = self.query_one(FilterField)
        shown = field.value if field.shown else ""

        def chosen(path: str | None) -> None:
            if path is not None:
                self.go_to(path)

        self.push_screen(LayersScreen(self.view, shown), chosen)

    def action_filter(self) -> None:
        field = self.query_one(FilterField)
        field.shown = True
        field.focus()

    def action_dismiss_extra(self) -> None:
        field = self.query_one(FilterField)
        if field.shown:
            field.value = ""
            field.shown = False
            self.painter.rebuild_tree("")
            self.query_one(ModuleTree).focus()
        elif self.query_one(ErrorPanel).error is not None:
            self.query_one(ErrorPanel).show(None, self.script)

    def action_traceback(self) -> None:
        if self.last_internal_error is not None:
            self.push_screen(TracebackScreen(self.last_internal_error))

    def action_command_palette(self) -> None:
        # Textual's own, with the bounded search field. `is_open` takes an `App[object]`, and
        # App is invariant in its return type: this app is an `App[None]`.
        if self.use_command_palette and not CommandPalette.is_open(self):  # type: ignore[arg-type]
            self.push_screen(CommandPalette(id="--command-palette"))

    def action_help(self) -> None:
        pane = self._focused_pane()
        title, intro = pane.BORDER_TITLE, pane.HELP or ""
        if self.view.status.replay is not None:
            intro += (
                "\n\nThis is a replay of a recording: s and n move on a recorded step, u back "
                "one, g to any. Train/eval, hooks and reload need a live model: greyed here."
            )
            intro += (
                " The layers view (l) shows what a run recorded with --layers; greyed for a "
                "recording made without it."
            )
        self.push_screen(HelpScreen(title, intro, keys_for(self, title)))

    def action_interrupt(self) -> None:
        if self.worker.interrupt():  # it says what it stopped
            return
        if isinstance(self.screen, QuitScreen):  # a second Ctrl-C confirms
            self.screen.dismiss(True)
            return
        selected = self.screen.get_selected_text()
        field = self.focused
        if selected:
            self.copy_to_clipboard(selected)
        elif isinstance(field, Input) and not field.selection.is_empty:
            field.action_copy()
        else:
            self._ask_to_quit()

    def _ask_to_quit(self) -> None:
        async def answered(quit: bool | None) -> None:
            if quit:
                await self.action_quit()

        self.push_screen(QuitScreen(paused=bool(self.view.status.paused_at)), answered)

    async def action_quit(self) -> None:
        # Abandons a paused iteration now: the worker unwinds it and closes the session while
        # the app shuts down.
        self._quitting = True
        self.worker.stop()
        self.exit(return_code=0 if self.view.ever_loaded else 2)

    def _focused_pane(self) -> Widget:
        """The focused pane: the nearest widget with a `HELP` from the focus up (as Textual's
        help panel finds it), else the tree."""
        focused = self.focused
        for node in focused.ancestors_with_self if focused is not None else ():
            if isinstance(node, Widget) and node.HELP:
                return node
        return self.query_one(ModuleTree)

    # -- what the panes ask for ----------------------------------------------------------------

    def module_paths(self) -> list[str]:
        return self.view.module_paths()

    def go_to(self, path: str) -> None:
        """Select a node by its path (a module, tensor or unregistered object) in the tree; asked
        while the script still loads, once it has loaded."""
        self.painter.go_to(path)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[NodeRef]) -> None:
        if event.node.data is not None and self.query_one(ModuleTree).owns(event.node):
            self.painter.show_detail(event.node.data)

    def on_module_tree_nodes_shown(self, event: ModuleTree.NodesShown) -> None:
        layout = self.view.layout
        if layout is not None and not layout.summarize_all:
            self._submit(cmd.ShowTensors(event.paths))

    def on_module_tree_tensor_chosen(self, event: ModuleTree.TensorChosen) -> None:
        self._open_values(event.path)

    def on_detail_pane_values_wanted(self, event: DetailPane.ValuesWanted) -> None:
        self._open_values(event.path)

    def _open_values(self, path: str) -> None:
        t = self.view.tensor(path)
        if t is not None:
            self.push_screen(ValuesScreen(path, t.numel, t.is_parameter))

    def on_values_screen_page_wanted(self, event: ValuesScreen.PageWanted) -> None:
        self._submit(cmd.ReadValues(event.path, event.offset, event.count, event.grad))

    def on_diff_screen_comparison_wanted(self, event: DiffScreen.ComparisonWanted) -> None:
        self._submit(cmd.CompareTimelines())

    def on_findings_pane_go_to(self, event: FindingsPane.GoTo) -> None:
        node = self.view.node_for(event.finding.path)
        if node is not None:
            self.go_to(node)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.painter.rebuild_tree(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(ModuleTree).focus()
