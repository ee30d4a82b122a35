"""How the app paints each kind of update the session controller sends, and which node it
shows; a plain object the app holds and calls."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rich.text import Text
from textual.app import App

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.core.contract.fmt import printable, printable_lines
from modscope.core.contract.steps import BreakEvent, HookEvent, UserError
from modscope.tui import labels
from modscope.tui.detail_pane import DetailPane
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.error_panel import ErrorPanel
from modscope.tui.findings_pane import FindingsPane
from modscope.tui.hook_actions import HookActions
from modscope.tui.hook_events_pane import HookEventsPane
from modscope.tui.layers_screen import LayersScreen
from modscope.tui.load_error_screen import LoadErrorScreen
from modscope.tui.log_pane import LogPane
from modscope.tui.model_view import ModelView, NodeRef
from modscope.tui.module_tree import ModuleTree
from modscope.tui.status_line import StatusLine
from modscope.tui.values_screen import ValuesScreen

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # Python 3.10: textual installs typing_extensions
    from typing_extensions import assert_never


class UpdatePainter:
    """Turns updates into what the panes show: the app drains them, calls `apply` for each and
    then `show_status`. It also selects the node shown (`go_to`, `show_detail`), as a load, a
    pause or a break asks.

    `app` holds the panes and screens; `hook_actions` lists the selected module's hooks;
    `submit` sends a command to the session thread; `timings` receives the first paint's time.
    """

    def __init__(
        self,
        app: App[Any],
        view: ModelView,
        hook_actions: HookActions,
        *,
        script: str,
        show_traceback: bool,
        timings: dict[str, float],
        submit: Callable[[cmd.Command], None],
    ) -> None:
        self.app = app
        self.view = view
        self.hook_actions = hook_actions
        self.script = script
        self.show_traceback = show_traceback
        self.timings = timings
        self.submit = submit
        self.last_internal_error: up.InternalError | None = None
        """The last bug of modscope's reported (`!` shows its traceback)."""
        self._go_to_on_load: str | None = None

    @functools.cached_property
    def _log_pane(self) -> LogPane:
        return self.app.query_one(LogPane)

    def show_status(self, status: up.SessionStatus, batch: up.Batch) -> None:
        """The controller's facts with the thread's (busy, running, queued) as of `batch`."""
        self.view.status = replace(
            status, busy=batch.busy, running=batch.running, queued=batch.queued
        )
        self.app.query_one(StatusLine).show(self.view.status)

    def _internal_error(self, u: up.InternalError) -> None:
        """A bug in modscope: logged with where its traceback is; `!` shows the traceback."""
        self.last_internal_error = u
        where = f" (traceback in {printable(u.log_file)})" if u.log_file else ""
        message = printable_lines(u.message)
        text = Text(f"{message}{where}; ! shows the traceback", style="red")
        self.app.query_one(LogPane).add(text)
        self.app.notify(message, severity="error", markup=False)

    def apply(self, u: up.Update) -> bool:
        """Apply one update; True when labels and details need redrawing. Every kind of update
        is named here (`assert_never`: a new one must say what the app does with it)."""
        if isinstance(u, up.Printed):
            # First, and with no query: a script can print a million lines in one burst.
            self._log_pane.printed(u.line)
            return True
        app = self.app
        view = self.view
        match u:
            case up.Loaded():
                self._loaded(u)
            case up.Repaint(step=step):
                # What follows is the session again from its start: drop what the panes hold.
                app.query_one(LogPane).forget()
                app.query_one(HookEventsPane).clear_events()
                view.back_to(step)
            case up.LoadFailed(error=error):
                self._load_failed(error)
            case up.LayoutChanged(layout=layout):
                view.relayout(layout)
                self.rebuild_tree()
            case up.StatusChanged(status=status):
                view.status = status
                if not status.paused_at:
                    view.paused = None
                    view.broke = None
                if status.hooks:
                    # Shown from the first hook on, and kept: the layout does not jump back.
                    app.query_one(HookEventsPane).add_class("-active")
            case up.Paused(event=event):
                self._paused(event)
            case up.BreakHit(event=event):
                self._break_hit(event)
            case up.PhaseDone():
                self._phase_done(u)
            case up.TensorsSummarized():
                view.apply_summaries(u)
            case up.InternalError():
                self._internal_error(u)
            case up.Notice(message=text, severity=severity):
                message = printable_lines(text)
                app.query_one(LogPane).add(
                    Text(message, style="red" if severity == "error" else "yellow")
                )
                if severity != "information":
                    app.notify(message, severity=severity, markup=False)  # type: ignore[arg-type]
            case up.FindingsChanged(findings=findings):
                view.set_findings(findings)
                app.query_one(FindingsPane).show(view.findings)
            case up.HooksListed(path=path, hooks=hooks):
                view.hooks[path] = hooks
                self.hook_actions.show()
            case up.ValuesRead():
                if not isinstance(app.screen, ValuesScreen):
                    return False  # the values view closed before its page came
                app.screen.show_page(u)
            case up.TimelinesCompared():
                if not isinstance(app.screen, DiffScreen):
                    return False
                app.screen.show_comparison(u)
            case up.OtherTimeline():
                view.other = u
            case up.LayersSeen(step=step):
                view.add_layers(step)
                if isinstance(app.screen, LayersScreen):
                    app.screen.refresh_rows()
            case up.HookEventsSeen():
                return False  # the app hands a drain's events to the hook events pane at once
            case _:
                assert_never(u)
        return True

    # -- which node is shown ---------------------------------------------------------------------

    def go_to(self, path: str) -> None:
        """Select a node by its path (a module, tensor or unregistered object) in the tree; asked
        while the script still loads, once it has loaded."""
        if not self.view.loaded:
            self._go_to_on_load = path
            return
        tree = self.app.query_one(ModuleTree)
        if tree.select_path(path):
            tree.focus()

    def show_detail(self, ref: NodeRef | None) -> None:
        """Show `ref` in the details and its module's hooks in the hooks pane."""
        self.app.query_one(DetailPane).show(ref)
        target = self.hook_actions.target()
        if target is not None:
            # Listed again on every selection: hooks come and go (the script, `x`, a reload).
            self.submit(cmd.ListHooks(target))
        self.hook_actions.show()

    def rebuild_tree(self, filter_text: str | None = None) -> None:
        """Rebuild the tree (new layout or filter), keeping the cursor; show its details."""
        tree = self.app.query_one(ModuleTree)
        if filter_text is None:
            tree.show_model()
        else:
            tree.set_filter(filter_text)
        if tree.current() is None:
            tree.select_path("", expand=False)
        self.show_detail(tree.current())

    # -- one kind of update each -----------------------------------------------------------------

    def _loaded(self, u: up.Loaded) -> None:
        app = self.app
        self.view.load(u.layout, u.notes)
        if isinstance(app.screen, LoadErrorScreen):
            app.pop_screen()
        app.query_one(ErrorPanel).show(None, self.script)
        self.rebuild_tree()
        log = app.query_one(LogPane)
        log.message(
            f"loaded {u.layout.script}: model = {u.layout.model_name} "
            f"({len(u.layout.modules):,} modules)"
        )
        for note in u.notes:
            log.message(note)
        if self._go_to_on_load is not None:
            self.go_to(self._go_to_on_load)
            self._go_to_on_load = None
        app.call_after_refresh(self._painted, u.loaded_at)

    def _painted(self, loaded_at: float) -> None:
        self.timings.setdefault("first_paint", time.perf_counter() - loaded_at)

    def _load_failed(self, error: UserError) -> None:
        app = self.app
        self.view.load_error = error
        self.view.layout = None
        app.query_one(LogPane).error(labels.error_text(error, self.script))
        if isinstance(app.screen, LoadErrorScreen):
            app.screen.show(error)
        else:
            replay = self.view.status.replay is not None
            app.push_screen(
                LoadErrorScreen(error, self.script, traceback=self.show_traceback, replay=replay)
            )

    def _phase_done(self, u: up.PhaseDone) -> None:
        app = self.app
        if u.record is not None:
            self.view.add_record(u.record, kept=u.kept)
        panel = app.query_one(ErrorPanel)
        if u.error is not None:
            self.view.last_error = u.error
            text = labels.error_text(u.error, self.script)
            app.query_one(LogPane).error(text)
            panel.show(u.error, self.script)
            title = "modscope failed" if u.error.internal else "The script raised"
            app.notify(text.plain, title=title, severity="error", markup=False)
        elif u.abandoned:
            app.query_one(LogPane).message(f"step {u.step}: iteration abandoned")
        elif u.record is not None and panel.error is not None:
            panel.show(None, self.script)

    def _paused(self, event: HookEvent) -> None:
        """A pause hook holds the iteration: select its module and show what arrived."""
        self.view.paused = event
        if self.view.module(event.module) is not None:
            self.go_to(event.module)
        self.app.query_one(DetailPane).refresh_detail()

    def _break_hit(self, event: BreakEvent) -> None:
        """A break condition holds the iteration: select its module (the root when it concerns
        no one module) and show the values that tripped it."""
        self.view.broke = event
        path = event.module or ""
        if self.view.module(path) is not None:
            self.go_to(path)
        self.app.query_one(DetailPane).refresh_detail()
        self.app.notify(
            printable(event.message or f"break {event.condition}"),
            title=f"Break at step {event.step}",
            severity="warning",
            markup=False,
        )
