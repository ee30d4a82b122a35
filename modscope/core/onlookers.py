"""What looks on at each iteration of a session: the doctor's after-step rules, the ranks'
comparison under torchrun, and (while wanted) each module's output statistics.

The one bundle that `modscope run` (`PlainRun`), the session controller (the app, `run
--record`, and so replays) and `modscope.watch()` each hold, so that what they report of an
iteration cannot drift apart: `initial()` once the session is loaded, `after(record)` when an
iteration ends (None: it raised, was abandoned or rewound), `close()` at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from modscope.core.contract.findings import Finding
from modscope.core.contract.layer_types import LayerStep
from modscope.core.contract.steps import StepRecord
from modscope.core.doctor import AfterStepRules
from modscope.core.doctor.ranks import RankCheck
from modscope.core.layers.collector import LayerCollector
from modscope.core.session import Session


@dataclass(frozen=True)
class Seen:
    """What the onlookers saw of one iteration."""

    findings: tuple[Finding, ...] = ()
    """New this iteration: the doctor's, then the ranks'."""
    layers: LayerStep | None = None
    """Each module's statistics, while they are wanted and the iteration completed."""


class Onlookers:
    """The doctor, the rank check (inactive in one process) and the layer statistics on one
    session. The layers' forward hooks are attached only while `layers` is wanted, and follow
    the model's modules when its structure changes (`rewatch`)."""

    def __init__(self, session: Session, *, layers: bool = False) -> None:
        self.session = session
        self.rules = AfterStepRules(session)
        self.ranks = RankCheck(session.model, session.runner)
        self.layers_wanted = layers
        self._layers: LayerCollector | None = None
        if layers:
            self.rewatch()

    def initial(self) -> tuple[Finding, ...]:
        """The findings before any iteration: the doctor's static rules, the ranks' layout."""
        return tuple(self.rules.initial() + self.ranks.initial())

    def want_layers(self) -> bool:
        """Collect each module's statistics from the next iteration on; False when they
        already were."""
        if self.layers_wanted and self._layers is not None:
            return False
        self.layers_wanted = True
        self.rewatch()
        return True

    def rewatch(self) -> None:
        """Put the layers' hooks on the modules the model has now (its structure changed)."""
        self._detach_layers()
        if self.layers_wanted:
            self._layers = LayerCollector(self.session.model)
            self._layers.attach()

    def after(self, record: StepRecord | None) -> Seen:
        """An iteration ended: what the doctor, the ranks and the layers saw of it (`record`),
        or None when it did not complete (what the layers noted of it is dropped)."""
        if record is None:
            self.discard()
            return Seen()
        found = self.rules.after_step(record) + self.ranks.after_step(record.step)
        layers = self._layers.take(record) if self._layers is not None else None
        return Seen(tuple(found), layers)

    def discard(self) -> None:
        """Drop what the layers noted of an iteration that will not complete (a rewind)."""
        if self._layers is not None:
            self._layers.discard()

    def close(self) -> None:
        """Remove the layers' hooks; nothing else of the onlookers is on the model."""
        self._detach_layers()

    def _detach_layers(self) -> None:
        layers, self._layers = self._layers, None
        if layers is not None:
            layers.detach()
