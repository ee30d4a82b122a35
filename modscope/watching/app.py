"""The app at a break in the user's own loop: the live model as the break left it, read-only."""

from __future__ import annotations

from collections.abc import Sequence

from modscope.control import updates as up
from modscope.control.controller import OwnLoopView
from modscope.core.contract.findings import Finding
from modscope.core.contract.layer_types import LayerStep
from modscope.core.contract.steps import BreakEvent
from modscope.core.session import Session
from modscope.launch import make_app, run_app

RETURNS = "q returns to your code, where modscope.BreakError is raised"


def own_loop_view(
    session: Session,
    event: BreakEvent,
    findings: Sequence[Finding] = (),
    layers: LayerStep | None = None,
) -> OwnLoopView:
    """What the app shows at `event`: the steps counted so far, the last layer statistics,
    the findings, the break."""
    shown: list[up.Update] = [*up.history_shown(session.history, session.history.maxlen)]
    if layers is not None:
        shown.append(up.LayersSeen(layers))
    shown.append(up.FindingsChanged(tuple(findings)))
    shown.append(up.BreakHit(event))
    shown.append(up.Notice(f"modscope.watch: {RETURNS}"))
    why = f"your own loop runs the iterations, not modscope: {RETURNS}"
    notes = (
        f"modscope.watch: your own loop ran {session.step} step(s); the model is as the break "
        "left it (read-only here)",
    )
    return OwnLoopView(tuple(shown), why, notes)


def open_at_break(origin: str, session: Session, view: OwnLoopView) -> None:
    """Run the app on a watch's live session until the user quits it."""
    app = make_app(origin, session_factory=lambda sink, pause: session, own_loop=view)
    run_app(app, join_timeout=None)
