"""The layers view's statistics for the controller: a `LayerCollector` on the session's model from
the first `CollectLayers` on, a `LayersSeen` update after each completed iteration."""

from __future__ import annotations

from modscope.control import updates as up
from modscope.core.contract.steps import StepRecord
from modscope.core.layers.collector import LayerCollector
from modscope.core.session import Session


class LayerDesk:
    """Collects per-module statistics only while wanted: nothing is attached until `want()`;
    then forward hooks stay on the model (again after a reload or a change of structure) until
    `close()`."""

    def __init__(self) -> None:
        self.wanted = False
        self._watch: LayerCollector | None = None

    def want(self, session: Session) -> list[up.Update]:
        """Start collecting (the layers view was opened); from the next iteration on."""
        if self.wanted and self._watch is not None:
            return []
        self.wanted = True
        self.attach(session)
        return [up.Notice("layers: statistics are collected from the next step on")]

    def attach(self, session: Session) -> None:
        """Collect the layer statistics of `session`'s model when wanted (after a load, or when
        its structure changed)."""
        self.detach()
        if self.wanted:
            self._watch = LayerCollector(session.model)
            self._watch.attach()

    def after_iteration(self, record: StepRecord | None) -> list[up.Update]:
        """The statistics of the iteration `record` completed; None (an iteration that raised,
        was abandoned or rewound) drops what was seen."""
        watch = self._watch
        if watch is None:
            return []
        if record is None:
            watch.discard()
            return []
        return [up.LayersSeen(watch.take(record))]

    def discard(self) -> None:
        if self._watch is not None:
            self._watch.discard()

    def detach(self) -> None:
        """Remove the hooks (the session closes); `wanted` stays for the next load."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.detach()
