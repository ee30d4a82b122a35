"""The model's registered modules and parameters for the doctor's after-step rules, walked
again only when the structure changed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from torch import nn

from modscope.core.doctor.reachable import named_parameters_once
from modscope.core.model.walk import distinct_modules


class Walked(NamedTuple):
    """`distinct_modules` of the model and `named_parameters_once` of those modules."""

    modules: list[tuple[str, nn.Module]]
    params: dict[int, tuple[str, nn.Parameter]]
    named: list[tuple[str, nn.Parameter]]


class Structure:
    """The doctor's walk of a model, kept while the model's structure stays as it was.

    The doctor reads every module and parameter after each step; on a model of thousands of
    modules, building the walk again (a path string per module and parameter) costs more than
    checking that nothing moved. A forward may add, remove or replace a submodule or a
    parameter (`self.w = nn.Parameter(...)`), so each call compares every walked module's
    `_modules` and `_parameters` entries (names, and objects by identity) with those the walk
    saw, and walks again when one differs. The walked objects are held, so no id is reused
    while they are compared.
    """

    def __init__(self) -> None:
        self._walked: Walked | None = None
        self._entries: list[tuple[str, int] | None] = []

    def walk(self, model: nn.Module) -> Walked:
        """The walk of `model` as it is now: the same object as the last call's while the
        model and its structure are unchanged."""
        walked = self._walked
        if (
            walked is not None
            and walked.modules[0][1] is model
            and _entries(m for _, m in walked.modules) == self._entries
        ):
            return walked
        modules = distinct_modules(model)
        params = named_parameters_once(modules)
        self._walked = Walked(modules, params, list(params.values()))
        self._entries = _entries(m for _, m in modules)
        return self._walked


def _entries(modules: Iterable[nn.Module]) -> list[tuple[str, int] | None]:
    """What the modules register, in order: each submodule's and each parameter's name and
    id, the two tables closed by None (`items()`: a ScriptModule's tables have no other
    iteration)."""
    out: list[tuple[str, int] | None] = []
    for m in modules:
        out += [(name, id(child)) for name, child in m._modules.items()]
        out.append(None)
        out += [(name, id(p)) for name, p in m._parameters.items()]
        out.append(None)
    return out
