"""The thread shell: runs the session controller on one thread, fed by two queues (queries jump
ahead of steps), and hands its updates to the app through an outbox and one wake call.

Every command gets an id from `submit()`; each drained `Batch` says through which id every
command has run, so the app waits for an id, not for a count. Torch-free: the controller is
built by the factory handed in.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.control.internal import internal_error


class Controller(Protocol):
    def load(self) -> list[up.Update]: ...
    def handle(self, command: cmd.Command) -> list[up.Update]: ...
    def close(self) -> list[up.Update]: ...
    @property
    def session(self) -> object | None: ...


ControllerFactory = Callable[
    [Callable[[Sequence[up.Update]], None], Callable[[], cmd.Command]], Controller
]
"""`factory(emit, wait)`: the controller, given where a pause sends its updates and waits."""


class SessionThread:
    """The controller on its own thread; the app calls `submit`, `set_running` and `drain`."""

    def __init__(self, factory: ControllerFactory, *, wake: Callable[[], None] = lambda: None):
        self._wake = wake
        self._cond = threading.Condition()
        self._queries: deque[tuple[int, cmd.Command]] = deque()
        self._commands: deque[tuple[int, cmd.Command]] = deque()
        self._outbox: list[up.Update] = []
        self._last_id = 1  # the load
        self._open = {1}  # ids submitted and not yet run (a command held at a pause is run)
        self._busy = self._running = self._stopping = self._dirty = False
        self._current: int | None = None  # the command running (None: a continuous run's step)
        self._current_command: cmd.Command | None = None  # None: the load
        self._serving: int | None = None  # the query served at a pause
        self._pause_floor: int | None = None  # the last id submitted before the pause began
        self._controller = factory(self._emit, self._wait_at_pause)
        self._thread = threading.Thread(target=self._main, name="modscope-session", daemon=True)

    # -- the app's side -----------------------------------------------------------------------

    def start(self) -> int:
        """Start the thread; it loads the script first. Returns the load's command id."""
        self._thread.start()
        return 1

    def submit(self, command: cmd.Command) -> int:
        """Queue `command`; returns its id. A reload drops the steps still queued."""
        with self._cond:
            self._last_id += 1
            if isinstance(command, cmd.Reload):
                self._open.difference_update(i for i, _ in self._commands)
                self._commands.clear()
                self._running = False
            queue = self._queries if isinstance(command, cmd.QUERIES) else self._commands
            queue.append((self._last_id, command))
            self._open.add(self._last_id)
            self._cond.notify_all()
        self._notify()
        return self._last_id

    def set_running(self, running: bool) -> None:
        """Run iterations continuously until `set_running(False)`, an error or a pause."""
        with self._cond:
            self._running = running
            self._cond.notify_all()
        self._notify()

    def interrupt(self) -> bool:
        """Ctrl-C: a step under way pauses at its next phase boundary (the controller's
        `interrupt`, where it has one), a continuous run stops and the commands queued are
        dropped; a notice says which. False, and nothing done, when there was none of these
        (idle, loading with nothing queued, or held at a pause)."""
        with self._cond:
            stepping = self._busy and isinstance(self._current_command, cmd.STEPS)
            queued, running = len(self._commands), self._running
            if not (stepping or queued or running):
                return False
            done = []
            interrupt = getattr(self._controller, "interrupt", None)
            if stepping and interrupt is not None:
                interrupt()
                done.append("the step under way stops at its next phase boundary")
            elif stepping:  # a replay's: no phases to stop between
                done.append("the step under way runs to its end")
            if running:
                self._running = False
                done.append("the continuous run stops")
            if queued:
                self._open.difference_update(i for i, _ in self._commands)
                self._commands.clear()
                done.append(f"{queued} queued command{'s' if queued > 1 else ''} dropped")
            self._outbox.append(up.Notice("Ctrl-C: " + "; ".join(done), "warning"))
            self._cond.notify_all()
        self._notify()
        return True

    @property
    def running(self) -> bool:
        with self._cond:
            return self._running

    def drain(self) -> up.Batch:
        """Everything posted since the last drain, and where the queue stands now."""
        with self._cond:
            updates, self._outbox, self._dirty = tuple(self._outbox), [], False
            done = min(self._open) - 1 if self._open else self._last_id
            return up.Batch(updates, done, self._busy, self._running, len(self._commands))

    def stop(self) -> None:
        """End the thread: a paused iteration is abandoned, then the session closed."""
        with self._cond:
            self._stopping, self._running = True, False
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it did."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._run(1, None)
            while (item := self._next()) is not None:
                self._run(*item)
        except BaseException as exc:  # never a silent "running…": say the thread is gone
            with self._cond:
                self._busy = self._running = False
                self._open.clear()
            self._emit([internal_error(exc, what="the session thread stopped")])
        finally:
            self._emit(self._controller.close())

    def _run(self, cid: int | None, command: cmd.Command | None) -> None:
        with self._cond:
            self._busy, self._current, self._current_command = True, cid, command
        self._notify()
        c = self._controller
        try:
            updates = c.load() if command is None else c.handle(command)
        except BaseException as exc:  # the session goes on: say what stopped this command
            updates = [internal_error(exc, what=f"modscope stopped {command or 'the load'}")]
        stop = any(
            isinstance(u, up.InternalError)
            or (isinstance(u, up.PhaseDone) and (u.error or u.abandoned))
            for u in updates
        )
        with self._cond:
            self._outbox.extend(updates)
            self._open.discard(cid or 0)
            self._busy, self._current, self._current_command = False, None, None
            self._running = self._running and not stop
        self._notify()

    def _next(self) -> tuple[int | None, cmd.Command] | None:
        with self._cond:
            while not self._stopping:
                for queue in (self._queries, self._commands):
                    if queue:
                        return queue.popleft()
                if self._running and self._controller.session is not None:
                    return None, cmd.Step()  # a continuous run's next iteration
                self._cond.wait()
            return None

    def _wait_at_pause(self) -> cmd.Command:
        """The controller's `wait` at a pause hook: the next query, or the first answer
        submitted since the pause began (earlier steps stay queued for later)."""
        with self._cond:
            # The paused command waits for the user (as good as done), and the query served
            # since the last call has emitted its updates.
            self._open.difference_update((self._current or 0, self._serving or 0))
            self._serving, self._busy = None, False
            if self._pause_floor is None:
                self._pause_floor = self._last_id
            floor = self._pause_floor
        self._notify()
        with self._cond:
            while not self._stopping:
                if self._queries:
                    self._serving, command = self._queries.popleft()
                    return command
                for cid, command in self._commands:
                    if cid > floor and isinstance(command, cmd.PAUSE_ANSWERS):
                        self._commands.remove((cid, command))
                        self._open.discard(cid)
                        if self._current is not None:
                            self._open.add(self._current)
                        self._busy, self._pause_floor = True, None
                        return command
                self._cond.wait()
            self._pause_floor = None
            return cmd.Quit()

    def _emit(self, updates: Sequence[up.Update]) -> None:
        with self._cond:
            self._outbox.extend(updates)
        self._notify()

    def _notify(self) -> None:
        """Wake the app once per batch: only when the outbox had nothing new for it."""
        with self._cond:
            was_dirty, self._dirty = self._dirty, True
        if not was_dirty:
            self._wake()
