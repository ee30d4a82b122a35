"""Findings from the iterations a session runs anyway: no extra forward passes, each one once."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from torch import nn

from modscope.core.contract.findings import Finding, FindingKind
from modscope.core.contract.steps import StepRecord
from modscope.core.doctor import rules, static
from modscope.core.doctor.reachable import group_by_module
from modscope.core.doctor.structure import Structure
from modscope.core.doctor.training_signs import TrainingSigns
from modscope.core.gc_pause import collector_paused
from modscope.core.stats.tensor_stats import combined_norm

if TYPE_CHECKING:
    from modscope.core.session import Session


class AfterStepRules:
    """Watches one session's iterations for the doctor's findings; free of UI code.

    `initial()` gives the static findings (step 0); `after_step(record)` gives the findings new
    in that iteration, from its `StepRecord` and the model as it is after it: non-finite loss,
    output, parameters, gradients or buffers; buffers that gained autograd history; trainable
    parameters without a gradient after the first backward; exploding or vanishing gradients;
    submodules left in the other train/eval mode; the optimizer rules again (a forward may
    replace a parameter). Each finding is reported once per session
    (by `rules.dedup_key`: kind and path, or what went non-finite). Call it from the thread
    that steps the session.
    """

    def __init__(self, session: Session, *, reported: Iterable[Finding] = ()) -> None:
        """`reported`: findings already known (not reported again)."""
        self.session = session
        self._keys: set[tuple[FindingKind, str]] = {rules.dedup_key(f) for f in reported}
        self._checked_unused = False
        # (step, global gradient norm, loss) of the last iteration that had gradients.
        self._last_scale: tuple[int, float, float | None] | None = None
        self._training = TrainingSigns()
        self._structure = Structure()

    @property
    def model(self) -> nn.Module:
        return self.session.model

    def initial(self) -> list[Finding]:
        """The static findings, stamped step 0; call once, before the first iteration."""
        with collector_paused():  # as in `after_step`
            found = static.static_findings(self.model, self.session.optimizer)
        return self._new(found, step=0)

    def after_step(
        self, record: StepRecord, *, nonfinite_module: tuple[str, str] | None = None
    ) -> list[Finding]:
        """The findings first seen in the iteration `record` describes (stamped with its step).

        `nonfinite_module` (path, type name), when the caller knows it, names the first module
        whose output was non-finite in that iteration (`modscope check` knows; `run` does not).
        The cyclic collector is held meanwhile, as for the record (`gc_pause`): the walks make
        many small objects, and each collection they start scans everything the model holds.
        """
        with collector_paused():
            return self._after_step(record, nonfinite_module)

    def _after_step(
        self, record: StepRecord, nonfinite_module: tuple[str, str] | None
    ) -> list[Finding]:
        step = record.step
        modules, params, named = self._structure.walk(self.model)
        found = self._nonfinite(record, named, nonfinite_module)
        found += static.buffer_history_findings(modules, step)
        found += self._unused(record, modules, named)
        found += self._gradient_scale(record, named)
        found += static.mode_findings(modules, step)
        optimizer = self.session.optimizer
        if optimizer is not None:
            # Again after each step: a forward that assigns `self.w = nn.Parameter(...)` leaves
            # the optimizer holding the old tensor, and the new one in no param_group.
            found += static.optimizer_findings(self.model, optimizer, modules, step, params=params)
        found += self._training_findings(record, modules, named)
        return self._new(found, step=step)

    def _training_findings(
        self,
        record: StepRecord,
        modules: list[tuple[str, nn.Module]],
        named: list[tuple[str, nn.Parameter]],
    ) -> list[Finding]:
        """How the steps train (`training_signs`): `update-ratio`, `training-in-eval`,
        `grad-accumulation`, `torch-warning`."""
        session, signs = self.session, self._training
        found = signs.update_ratios(record, modules, named, session.optimizer)
        found += signs.training_in_eval(record, modules, named, session.requested_training)
        found += signs.grad_accumulation(record, named)
        found += signs.torch_warnings(session.shown_warnings.take(), record.step)
        return found

    def _new(self, found: Iterable[Finding], *, step: int) -> list[Finding]:
        out = []
        for f in found:
            key = rules.dedup_key(f)
            if key in self._keys:
                continue
            self._keys.add(key)
            out.append(dataclasses.replace(f, step=step))
        return out

    # -- the rules ------------------------------------------------------------------------------

    def _nonfinite(
        self,
        record: StepRecord,
        named: list[tuple[str, nn.Parameter]],
        module: tuple[str, str] | None,
    ) -> list[Finding]:
        step = record.step
        path, type_name = module if module is not None else (None, None)
        out = []
        if record.loss is not None and not math.isfinite(record.loss):
            out.append(rules.nonfinite("loss", (), step, path, type_name, record.loss))
        elif record.loss is None and record.output is not None and _bad(record.output):
            value = math.nan if record.output.nan else math.inf
            out.append(rules.nonfinite("output", (), step, path, type_name, value))
        param_names = {n for n, _ in named}
        bad_params = [k for k, s in record.state.items() if k in param_names and _bad(s)]
        # Buffers: NaN only, since attention masks hold -inf by design.
        bad_buffers = [k for k, s in record.state.items() if k not in param_names and s.nan]
        bad_grads = [k for k, s in record.grads.items() if k in param_names and s and _bad(s)]
        for what, names in (
            ("gradients", bad_grads),
            ("parameters", bad_params),
            ("buffers", bad_buffers),
        ):
            if names:
                out.append(rules.nonfinite(what, names, step, path, type_name))
        return out

    def _unused(
        self,
        record: StepRecord,
        modules: list[tuple[str, nn.Module]],
        named: list[tuple[str, nn.Parameter]],
    ) -> list[Finding]:
        if self._checked_unused or self.session.forward_only:
            return []
        trainable = [(n, p) for n, p in named if p.requires_grad]
        got = [n for n, _ in trainable if record.grads.get(n) is not None]
        if not got:
            # No backward ran, or the script cleared every gradient (a train_step that ends
            # with zero_grad): nothing to tell used parameters from unused ones by.
            return []
        self._checked_unused = True
        missing = {id(p) for n, p in trainable if record.grads.get(n) is None}
        return static.grouped(
            group_by_module(modules, missing),
            lambda path, type_name, names: rules.unused_parameter(
                path, type_name, names, record.step
            ),
        )

    def _gradient_scale(
        self, record: StepRecord, named: list[tuple[str, nn.Parameter]]
    ) -> list[Finding]:
        norms = []
        for name, p in named:
            s = record.grads.get(name)
            if p.requires_grad and s is not None and s.norm is not None and not _bad(s):
                norms.append(s.norm)
        total = combined_norm(norms)
        if total is None:
            return []
        loss = record.loss
        previous, self._last_scale = self._last_scale, (record.step, total, loss)
        if total > rules.EXPLODING_GRAD_NORM:
            return [rules.exploding_gradient(total, record.step)]
        if previous is not None and previous[0] == record.step - 1 and previous[1] > 0:
            _, before, loss_before = previous
            rose = loss is None or loss_before is None or not loss < loss_before
            grew = total > max(rules.EXPLODING_GRAD_GROWTH * before, rules.EXPLODING_GROWTH_FLOOR)
            if grew and rose:
                return [rules.exploding_gradient(total, record.step, before)]
        if (
            total < rules.VANISHING_GRAD_NORM
            and loss is not None
            and math.isfinite(loss)
            and abs(loss) > rules.VANISHING_MIN_LOSS
        ):
            return [rules.vanishing_gradient(total, loss, record.step)]
        return []


def _bad(summary: object) -> bool:
    return bool(getattr(summary, "nan", 0) or getattr(summary, "inf", 0))
