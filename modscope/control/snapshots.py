"""Frozen snapshots of a live session for the UI: the model's layout, tensor summaries, a page of
values. Everything returned is plain data; the tensors stay in the session."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import torch

from modscope.control import updates as up
from modscope.core.contract.tensors import TensorSummary
from modscope.core.model.inventory import fold_runs
from modscope.core.model.sibling_runs import FOLD_MIN
from modscope.core.model.walk import tensor_at
from modscope.core.session import Session
from modscope.core.stats.summary import PendingSummary, capture, resolve

SUMMARIZE_ALL_LIMIT = 4096
"""Models with at most this many parameters and buffers get every summary after each command;
bigger ones only those the UI shows (docs/design.md section 5: statistics only for what is
shown)."""

VALUES_PAGE_LIMIT = 4096
"""The most values one `ReadValues` page returns."""


def make_layout(session: Session, *, script_name: str, generation: int) -> up.ModelLayout:
    """The module tree as it is now, with the indexes the UI looks things up by."""
    inv = session.inventory()
    modules = {m.path: m for m in inv.modules}
    tensors = {t.path: t for m in inv.modules for t in (*m.parameters, *m.buffers)}
    unregistered: dict[str, list[Any]] = {}
    for u in inv.unregistered:
        unregistered.setdefault(u.owner, []).append(u)
    folds: dict[str, tuple[tuple[int, int], ...]] = {}
    for m in inv.modules:
        if len(m.children) >= FOLD_MIN:
            kids = [modules[c] for c in m.children if c in modules]
            runs = tuple((r.start, r.count) for r in fold_runs(kids, inv) if r.count >= FOLD_MIN)
            if runs:
                folds[m.path] = runs
    return up.ModelLayout(
        script=script_name,
        model_name=session.script.model_name,
        inventory=inv,
        modules=MappingProxyType(modules),
        tensors=MappingProxyType(tensors),
        unregistered=MappingProxyType({k: tuple(v) for k, v in unregistered.items()}),
        folds=MappingProxyType(folds),
        generation=generation,
        summarize_all=len(tensors) <= SUMMARIZE_ALL_LIMIT,
    )


def summaries_of(
    model: torch.nn.Module, paths: Sequence[str], *, with_grads: bool
) -> tuple[dict[str, TensorSummary], dict[str, TensorSummary | None]]:
    """Summaries of the parameters and buffers at `paths` (and of the parameters' gradients),
    all computed in one batch."""
    found: list[tuple[str, torch.Tensor]] = []
    for path in paths:
        t = tensor_at(model, path)
        if t is not None:
            found.append((path, t))
    params = [(p, t) for p, t in found if isinstance(t, torch.nn.Parameter)] if with_grads else []
    pending: list[PendingSummary | None] = [capture(t) for _, t in found]
    pending += [capture(t.grad) if t.grad is not None else None for _, t in params]
    resolved = resolve(pending)
    n = len(found)
    summaries = {p: r for (p, _), r in zip(found, resolved[:n], strict=True) if r is not None}
    grads = {p: r for (p, _), r in zip(params, resolved[n:], strict=True)}
    return summaries, grads


def read_values(
    model: torch.nn.Module, path: str, offset: int, count: int, *, grad: bool
) -> up.ValuesRead:
    """One page of a tensor's values (flattened, row-major), or a note saying why there are none."""
    t = tensor_at(model, path)
    note = None
    if t is not None and grad:
        t = t.grad
        if t is None:
            note = "no gradient (.grad is None)"
    if t is None:
        return up.ValuesRead(path, grad, offset, (), 0, (), note or "not found")
    count = max(0, min(count, VALUES_PAGE_LIMIT))
    with torch.no_grad():
        try:
            flat = t.detach()
            if flat.layout != torch.strided:
                flat = flat.to_dense()
            flat = flat.reshape(-1)
            values = tuple(flat[offset : offset + count].cpu().tolist())
        except Exception as exc:  # meta, exotic subclasses: say why instead of failing
            return up.ValuesRead(
                path, grad, offset, (), t.numel(), tuple(t.shape), f"<values unavailable: {exc}>"
            )
    return up.ValuesRead(path, grad, offset, values, flat.numel(), tuple(t.shape), note)
