"""How the app paints each kind of update the session controller sends (a mixin of the app)."""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import App

from modscope.control import updates as up
from modscope.core.contract.fmt import printable, printable_lines
from modscope.core.contract.steps import BreakEvent, HookEvent, UserError
from modscope.tui import labels
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.error_panel import ErrorPanel
from modscope.tui.findings_pane import FindingsPane
from modscope.tui.hook_events_pane import HookEventsPane
from modscope.tui.layers_screen import LayersScreen
from modscope.tui.load_error_screen import LoadErrorScreen
from modscope.tui.log_pane import LogPane
from modscope.tui.model_view import ModelView, NodeRef
from modscope.tui.module_tree import ModuleTree
from modscope.tui.status_line import StatusLine
from modscope.tui.values_screen import ValuesScreen


class UpdatePainter(App[None]):
    """Turns updates into what the panes show; `ModscopeApp` drains them and calls `_apply`."""

    script: str
    view: ModelView
    show_traceback: bool
    timings: dict[str, float]
    _batch: up.Batch
    last_internal_error: up.InternalError | None
    _go_to_on_load: str | None

    if TYPE_CHECKING:  # provided by ModscopeApp and its other parts

        def go_to(self, path: str) -> None: ...
        def _show_detail(self, ref: NodeRef | None) -> None: ...
        def _paused(self, event: HookEvent) -> None: ...
        def _break_hit(self, event: BreakEvent) -> None: ...
        def _show_hooks(self) -> None: ...

    @functools.cached_property
    def _log_pane(self) -> LogPane:
        return self.query_one(LogPane)

    def _show_status(self, status: up.SessionStatus) -> None:
        """The controller's facts with the thread's (busy, running, queued) as of this drain."""
        b = self._batch
        self.view.status = replace(status, busy=b.busy, running=b.running, queued=b.queued)
        self.query_one(StatusLine).show(self.view.status)

    def _internal_error(self, u: up.InternalError) -> None:
        """A bug in modscope: logged with where its traceback is; `!` shows the traceback."""
        self.last_internal_error = u
        where = f" (traceback in {printable(u.log_file)})" if u.log_file else ""
        message = printable_lines(u.message)
        text = Text(f"{message}{where}; ! shows the traceback", style="red")
        self.query_one(LogPane).add(text)
        self.notify(message, severity="error", markup=False)

    def _apply(self, u: up.Update) -> bool:
        """Apply one update; True when labels and details need redrawing."""
        if isinstance(u, up.Printed):
            # First, and with no query: a script can print a million lines in one burst.
            self._log_pane.printed(u.line)
            return True
        log = self.query_one(LogPane)
        view = self.view
        if isinstance(u, up.Loaded):
            self._loaded(u)
        elif isinstance(u, up.Repaint):
            # What follows is the session again from its start: drop what the panes hold.
            log.forget()
            self.query_one(HookEventsPane).clear_events()
            view.back_to(u.step)
        elif isinstance(u, up.LoadFailed):
            self._load_failed(u.error)
        elif isinstance(u, up.LayoutChanged):
            view.relayout(u.layout)
            self._rebuild_tree()
        elif isinstance(u, up.StatusChanged):
            view.status = u.status
            if not u.status.paused_at:
                view.paused = None
                view.broke = None
            if u.status.hooks:
                # Shown from the first hook on, and kept: the layout does not jump back.
                self.query_one(HookEventsPane).add_class("-active")
        elif isinstance(u, up.Paused):
            self._paused(u.event)
        elif isinstance(u, up.BreakHit):
            self._break_hit(u.event)
        elif isinstance(u, up.PhaseDone):
            self._phase_done(u)
        elif isinstance(u, up.TensorsSummarized):
            view.apply_summaries(u)
        elif isinstance(u, up.InternalError):
            self._internal_error(u)
        elif isinstance(u, up.Notice):
            message = printable_lines(u.message)
            log.add(Text(message, style="red" if u.severity == "error" else "yellow"))
            if u.severity != "information":
                self.notify(message, severity=u.severity, markup=False)  # type: ignore[arg-type]
        elif isinstance(u, up.FindingsChanged):
            view.set_findings(u.findings)
            self.query_one(FindingsPane).show(view.findings)
        elif isinstance(u, up.HooksListed):
            view.hooks[u.path] = u.hooks
            self._show_hooks()
        elif isinstance(u, up.ValuesRead) and isinstance(self.screen, ValuesScreen):
            self.screen.show_page(u)
        elif isinstance(u, up.TimelinesCompared) and isinstance(self.screen, DiffScreen):
            self.screen.show_comparison(u)
        elif isinstance(u, up.OtherTimeline):
            view.other = u
        elif isinstance(u, up.LayersSeen):
            view.add_layers(u.step)
            if isinstance(self.screen, LayersScreen):
                self.screen.refresh_rows()
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
        if self._go_to_on_load is not None:
            self.go_to(self._go_to_on_load)
            self._go_to_on_load = None
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
            replay = self.view.status.replay is not None
            self.push_screen(
                LoadErrorScreen(error, self.script, traceback=self.show_traceback, replay=replay)
            )

    def _phase_done(self, u: up.PhaseDone) -> None:
        if u.record is not None:
            self.view.add_record(u.record, kept=u.kept)
        panel = self.query_one(ErrorPanel)
        if u.error is not None:
            self.view.last_error = u.error
            text = labels.error_text(u.error, self.script)
            self.query_one(LogPane).error(text)
            panel.show(u.error, self.script)
            title = "modscope failed" if u.error.internal else "The script raised"
            self.notify(text.plain, title=title, severity="error", markup=False)
        elif u.abandoned:
            self.query_one(LogPane).message(f"step {u.step}: iteration abandoned")
        elif u.record is not None and panel.error is not None:
            panel.show(None, self.script)
