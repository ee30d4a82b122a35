"""The modscope app: wires the session worker to the panes and turns keys into commands."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Footer, Input, Tree

from modscope.core.types import HookEvent, UserError
from modscope.tui import labels, worker
from modscope.tui import updates as up
from modscope.tui.confirm_screen import ConfirmScreen
from modscope.tui.detail_pane import DetailPane
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.error_panel import ErrorPanel
from modscope.tui.findings_pane import FindingsPane
from modscope.tui.help_screen import PANES, HelpScreen, keys_for
from modscope.tui.hook_dialog import HookChoice, HookDialog
from modscope.tui.hook_event_groups import coalesce
from modscope.tui.hook_event_screen import HookEventScreen
from modscope.tui.hook_events_pane import HookEventsPane
from modscope.tui.hooks_pane import OWNER_WORDS, HooksPane, hook_text
from modscope.tui.load_error_screen import LoadErrorScreen
from modscope.tui.log_pane import LogPane
from modscope.tui.loss_plot import LossPlot
from modscope.tui.model_view import ModelView
from modscope.tui.module_provider import ModuleProvider
from modscope.tui.module_tree import ModuleTree, NodeKind, NodeRef
from modscope.tui.status_line import StatusLine
from modscope.tui.values_screen import ValuesScreen

HOOK_EVENTS_SHOWN = 20
"""Hook events logged per burst of updates; the earlier ones are counted."""

_STEPPING = ("step", "next_phase", "toggle_run", "toggle_mode")


class ModscopeApp(App[None]):
    """`modscope SCRIPT`: the live module tree, stepped from the keyboard.

    `session_factory(sink, pause)` builds the Session (tests hand in a prepared one); by default
    the script is loaded with `Session.load`. `hooks` are `--hook` specs attached at start.
    """

    TITLE = "modscope"
    CSS_PATH = "modscope.tcss"
    COMMANDS: ClassVar = App.COMMANDS | {ModuleProvider}
    HORIZONTAL_BREAKPOINTS: ClassVar = [
        (0, "-w-tiny"),
        (50, "-w-small"),
        (80, "-w-medium"),
        (120, "-w-wide"),
    ]
    VERTICAL_BREAKPOINTS: ClassVar = [
        (0, "-h-tiny"),
        (16, "-h-small"),
        (24, "-h-medium"),
        (34, "-h-tall"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
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
        Binding("d", "diff", "Diff", id="diff", tooltip="What the last step changed"),
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
        Binding("r", "reload", "Reload", id="reload"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("question_mark,f1", "help", "Help", id="help"),
        Binding("escape", "dismiss_extra", "Clear", id="clear"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    class WorkerWoke(Message):
        """The worker's outbox has news."""

    def __init__(
        self,
        script: str,
        *,
        session_factory: worker.SessionFactory | None = None,
        hooks: Sequence[str] = (),
        model_name: str | None = None,
        show_traceback: bool = False,
        animations: bool = True,
    ) -> None:
        super().__init__()
        self.script = script
        self.view = ModelView(script)
        self.show_traceback = show_traceback
        factory = session_factory or worker.default_factory(script, model_name)
        self.worker = worker.SessionWorker(
            factory, script=script, hook_specs=hooks, wake=self._wake
        )
        self.timings: dict[str, float] = {}
        """Seconds from the model being built to the tree painted (for the benchmark)."""
        self._submitted = 1  # the initial load
        self._idle: asyncio.Event | None = None
        self._keys_state: tuple[bool, ...] = ()
        if not animations:
            self.animation_level = "none"

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Input(placeholder="filter by name (escape clears)", id="filter")
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
        self.sub_title = self.view.status.script
        for pane_id, (title, _) in PANES.items():
            pane = self.query_one(f"#{pane_id}")
            pane.border_title = pane.border_title or title
        self.query_one("#loss").border_title = "Loss"
        self.query_one(Input).cursor_blink = not self.is_headless
        self.query_one(StatusLine).show(self.worker.status())
        self.query_one(ModuleTree).focus()
        self.worker.start()

    def on_unmount(self) -> None:
        self.worker.stop()

    # -- the worker ----------------------------------------------------------------------------

    def _wake(self) -> None:
        # RuntimeError: the app's loop is gone, so there is nothing left to show.
        with contextlib.suppress(RuntimeError):
            self.post_message(self.WorkerWoke())

    def _submit(self, command: worker.Command) -> None:
        self.worker.submit(command)
        self._submitted += 1

    async def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until every command submitted so far has run and its news is shown."""
        while not self._is_idle():
            assert self._idle is not None
            self._idle.clear()
            await asyncio.wait_for(self._idle.wait(), timeout)

    def _is_idle(self) -> bool:
        s = self.view.status
        return s.completed >= self._submitted and not s.running and not s.busy

    def on_modscope_app_worker_woke(self, _: WorkerWoke) -> None:
        dirty = False
        updates = self.worker.drain()
        # Hook events of a burst (a continuous run, `*` hooks) are logged once, newest last.
        events = [e for u in updates if isinstance(u, up.HookEventsSeen) for e in u.events]
        for update in updates:
            dirty = self._apply(update) or dirty
        if events:
            self.view.saw(events)
            groups = coalesce(events)
            self.query_one(LogPane).hook_events(groups, HOOK_EVENTS_SHOWN)
            self.query_one(HookEventsPane).add_events(groups)
        if dirty and self.view.loaded:
            self.query_one(ModuleTree).refresh_labels()
            self.query_one(DetailPane).refresh_detail()
            self.query_one(LossPlot).show(self.view.losses())
        self._refresh_keys()
        if self._is_idle() and self._idle is not None:
            self._idle.set()

    def _refresh_keys(self) -> None:
        """Update the footer when what `check_action` answers may have changed.

        The footer rebuilds all its keys on `refresh_bindings()`, so only then.
        """
        keys_state = (
            self.view.loaded,
            self.view.status.running,
            bool(self.view.history),
            bool(self.view.status.paused_at),
            self._hook_target() is not None,
            self.query_one(HooksPane).selected is not None,
            self.query_one(Input).has_class("-shown"),
            self.query_one(ErrorPanel).error is not None,
        )
        if keys_state != self._keys_state:
            self._keys_state = keys_state
            self.refresh_bindings()

    def _apply(self, u: up.Update) -> bool:
        """Apply one update; True when labels and details need redrawing."""
        log = self.query_one(LogPane)
        view = self.view
        if isinstance(u, up.Loaded):
            self._loaded(u)
        elif isinstance(u, up.LoadFailed):
            self._load_failed(u.error)
        elif isinstance(u, up.LayoutChanged):
            view.relayout(u.layout)
            self._rebuild_tree()
        elif isinstance(u, up.StatusChanged):
            view.status = u.status
            if not u.status.paused_at:
                view.paused = None
            if u.status.hooks:
                # Shown from the first hook on, and kept: the layout does not jump back.
                self.query_one(HookEventsPane).add_class("-active")
            self.query_one(StatusLine).show(u.status)
        elif isinstance(u, up.Paused):
            self._paused(u.event)
        elif isinstance(u, up.PhaseDone):
            self._phase_done(u)
        elif isinstance(u, up.TensorsSummarized):
            view.apply_summaries(u)
        elif isinstance(u, up.Printed):
            log.printed(u.line)
        elif isinstance(u, up.Notice):
            log.add(Text(u.message, style="red" if u.severity == "error" else "yellow"))
            if u.severity != "information":
                self.notify(u.message, severity=u.severity, markup=False)  # type: ignore[arg-type]
        elif isinstance(u, up.FindingsChanged):
            view.set_findings(u.findings, u.source)
            self.query_one(FindingsPane).show(view.findings, view.findings_source)
        elif isinstance(u, up.HooksListed):
            view.hooks[u.path] = u.hooks
            self._show_hooks()
        elif isinstance(u, up.ValuesRead) and isinstance(self.screen, ValuesScreen):
            self.screen.show_page(u)
        else:
            return False
        return True

    def _loaded(self, u: up.Loaded) -> None:
        self.view.load(u.layout, u.notes)
        if isinstance(self.screen, LoadErrorScreen):
            self.pop_screen()
        self.query_one(ErrorPanel).show(None, self.script)
        self._rebuild_tree()
        log = self.query_one(LogPane)
        log.message(
            f"loaded {u.layout.script}: model = {u.layout.model_name} "
            f"({len(u.layout.modules):,} modules)"
        )
        for note in u.notes:
            log.message(note)
        self.call_after_refresh(self._painted, u.loaded_at)

    def _rebuild_tree(self, filter_text: str | None = None) -> None:
        """Rebuild the tree (new layout or filter), keeping the cursor; show its details."""
        tree = self.query_one(ModuleTree)
        if filter_text is None:
            tree.show_model()
        else:
            tree.set_filter(filter_text)
        if tree.current() is None:
            tree.select_path("", expand=False)
        self._show_detail(tree.current())

    def _painted(self, loaded_at: float) -> None:
        self.timings.setdefault("first_paint", time.perf_counter() - loaded_at)

    def _load_failed(self, error: UserError) -> None:
        self.view.load_error = error
        self.view.layout = None
        self.query_one(LogPane).error(labels.error_text(error, self.script))
        if isinstance(self.screen, LoadErrorScreen):
            self.screen.show(error)
        else:
            self.push_screen(LoadErrorScreen(error, self.script, traceback=self.show_traceback))

    def _phase_done(self, u: up.PhaseDone) -> None:
        if u.record is not None:
            self.view.add_record(u.record)
        panel = self.query_one(ErrorPanel)
        if u.error is not None:
            self.view.last_error = u.error
            text = labels.error_text(u.error, self.script)
            self.query_one(LogPane).error(text)
            panel.show(u.error, self.script)
            self.notify(text.plain, title="The script raised", severity="error", markup=False)
        elif u.abandoned:
            self.query_one(LogPane).message(f"step {u.step}: iteration abandoned")
        elif u.record is not None and panel.error is not None:
            panel.show(None, self.script)

    # -- what the keys do ----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        on_main = self.screen is self.screen_stack[0]
        if action in _STEPPING:
            # Keys pressed while the script loads are queued like those pressed mid-step.
            if isinstance(self.focused, Input) or not on_main or self.view.load_error:
                return False
            if action in ("step", "next_phase") and self.worker.paused:
                return True  # at a pause: run to the end of the iteration / phase
            if action in ("step", "next_phase") and self.worker.running:
                return None
            return True
        if action == "diff":
            return (
                (None if not self.view.history else True) if on_main and self.view.loaded else False
            )
        if action == "filter":
            return on_main and self.view.loaded
        if action == "resume":
            return bool(self.view.status.paused_at)
        if action == "attach_hook":
            if not on_main or not self.view.loaded or isinstance(self.focused, Input):
                return False
            return self._hook_target() is not None or None
        if action == "detach_hook":
            if not on_main or not self.view.loaded or isinstance(self.focused, Input):
                return False
            return self.query_one(HooksPane).selected is not None or None
        if action == "dismiss_extra":
            return self.query_one(Input).has_class("-shown") or (
                self.query_one(ErrorPanel).error is not None
            )
        return True

    def action_step(self) -> None:
        if not self.worker.run_through(whole_iteration=True):
            self._submit(worker.Step())

    def action_next_phase(self) -> None:
        if not self.worker.run_through(whole_iteration=False):
            self._submit(worker.NextPhase())

    def action_toggle_run(self) -> None:
        self.worker.set_running(not self.worker.running)

    def action_toggle_mode(self) -> None:
        self._submit(worker.ToggleTraining())

    def action_reload(self) -> None:
        self.query_one(LogPane).message(f"reloading {self.view.status.script}…")
        self._submit(worker.Reload())

    def action_resume(self) -> None:
        self.worker.resume()

    def action_diff(self) -> None:
        self.push_screen(DiffScreen(self.view))

    def action_filter(self) -> None:
        field = self.query_one(Input)
        field.add_class("-shown")
        field.focus()
        self._refresh_keys()

    def action_dismiss_extra(self) -> None:
        field = self.query_one(Input)
        if field.has_class("-shown"):
            field.value = ""
            field.remove_class("-shown")
            self._rebuild_tree("")
            self.query_one(ModuleTree).focus()
        elif self.query_one(ErrorPanel).error is not None:
            self.query_one(ErrorPanel).show(None, self.script)
        self._refresh_keys()

    def action_help(self) -> None:
        pane = self._focused_pane()
        title, intro = PANES.get(pane, ("modscope", ""))
        self.push_screen(HelpScreen(title, intro, keys_for(self, title)))

    async def action_quit(self) -> None:
        # Abandons a paused iteration now: the worker unwinds it and closes the session while
        # the app shuts down.
        self.worker.stop()
        self.exit(return_code=0 if self.view.ever_loaded else 2)

    def _focused_pane(self) -> str:
        node: Widget | None = self.focused
        while node is not None and node.id not in PANES:
            node = node.parent if isinstance(node.parent, Widget) else None
        return node.id if node is not None and node.id else "tree"

    # -- what the panes ask for ----------------------------------------------------------------

    def module_paths(self) -> list[str]:
        return self.view.module_paths()

    def go_to(self, path: str) -> None:
        """Select a node by its path (a module, tensor or unregistered object) in the tree."""
        tree = self.query_one(ModuleTree)
        if tree.select_path(path):
            tree.focus()

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[NodeRef]) -> None:
        if event.node.data is not None and self.query_one(ModuleTree).owns(event.node):
            self._show_detail(event.node.data)

    def _show_detail(self, ref: NodeRef | None) -> None:
        self.query_one(DetailPane).show(ref)
        target = self._hook_target()
        if target is not None:
            # Listed again on every selection: hooks come and go (the script, `x`, a reload).
            self._submit(worker.ListHooks(target))
        self._show_hooks()
        self._refresh_keys()

    def on_module_tree_nodes_shown(self, event: ModuleTree.NodesShown) -> None:
        layout = self.view.layout
        if layout is not None and len(layout.tensors) > worker.SUMMARIZE_ALL_LIMIT:
            self._submit(worker.Watch(event.paths))

    def on_module_tree_tensor_chosen(self, event: ModuleTree.TensorChosen) -> None:
        self._open_values(event.path)

    def on_detail_pane_values_wanted(self, event: DetailPane.ValuesWanted) -> None:
        self._open_values(event.path)

    def _open_values(self, path: str) -> None:
        t = self.view.tensor(path)
        if t is not None:
            self.push_screen(ValuesScreen(path, t.numel, t.is_parameter))

    def on_values_screen_page_wanted(self, event: ValuesScreen.PageWanted) -> None:
        self._submit(worker.ReadValues(event.path, event.offset, event.count, event.grad))

    def on_findings_pane_go_to(self, event: FindingsPane.GoTo) -> None:
        node = self.view.node_for(event.finding.path)
        if node is not None:
            self.go_to(node)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self._rebuild_tree(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(ModuleTree).focus()

    # -- hooks ---------------------------------------------------------------------------------

    def _hook_target(self) -> str | None:
        """The module `h` attaches to and the hooks pane lists: the selected module, or the
        module of the selected tensor."""
        ref = self.query_one(DetailPane).ref
        if ref is None or not self.view.loaded:
            return None
        if ref.kind is NodeKind.MODULE:
            return ref.path if self.view.module(ref.path) is not None else None
        if ref.kind is NodeKind.TENSOR:
            return self.view.owner(ref.path)
        return None

    def _module_name(self, path: str) -> str:
        layout = self.view.layout
        return (layout.model_name if layout else "model") if path == "" else path

    def _show_hooks(self) -> None:
        target = self._hook_target()
        pane = self.query_one(HooksPane)
        if target is None:
            pane.show(None, None)
        else:
            pane.show(target, self.view.hooks.get(target), self._module_name(target))

    def action_attach_hook(self) -> None:
        target = self._hook_target()
        if target is None:
            return
        dialog = HookDialog(target, self._module_name(target), self.view.hooks.get(target))
        self.push_screen(dialog, self._attach_chosen)

    def _attach_chosen(self, choice: HookChoice | None) -> None:
        if choice is not None:
            self._submit(
                worker.AttachHook(choice.module, choice.kind, choice.action, choice.factor)
            )

    def action_detach_hook(self) -> None:
        hook = self.query_one(HooksPane).selected
        if hook is None:
            return
        if hook.owner == "modscope":
            self._submit(worker.DetachHook(hook))
            return
        body = Text()
        body.append(
            f"This {hook.kind} hook was added by {OWNER_WORDS.get(hook.owner, hook.owner)}"
            ", not by modscope. Detaching it changes what the model does from now on, "
            "and modscope cannot put it back.\n\n"
        )
        if hook.owner == "global":
            body.append(
                "It is a global module hook: detaching it removes it from every module.\n\n",
                style="bold",
            )
        body.append_text(hook_text(hook, self.script))
        self.push_screen(
            ConfirmScreen("Detach a hook modscope did not add?", body, yes="Detach", no="Keep"),
            lambda yes: self._submit(worker.DetachHook(hook)) if yes else None,
        )

    def _paused(self, event: HookEvent) -> None:
        """A pause hook holds the iteration: select its module and show what arrived."""
        self.view.paused = event
        if self.view.module(event.module) is not None:
            self.go_to(event.module)
        self.query_one(DetailPane).refresh_detail()

    def on_hook_events_pane_opened(self, event: HookEventsPane.Opened) -> None:
        self.push_screen(HookEventScreen(event.event, self._module_name(event.event.module)))
