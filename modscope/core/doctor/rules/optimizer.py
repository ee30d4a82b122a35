"""Findings about the optimizer and training: parameters it misses, frozen ones it holds,
tensors of an older model, and parameters that never get a gradient."""

from __future__ import annotations

from collections.abc import Sequence

from modscope.core.contract.findings import Finding, FindingKind
from modscope.core.contract.fmt import plural
from modscope.core.doctor.rules.wording import (
    Number,
    accessor,
    finding,
    listing,
    parameter_accessor,
    where,
)

_BUILD_AFTER = (
    "build the optimizer after the model is complete: "
    "torch.optim.SGD(model.parameters(), ...) (with your optimizer and settings)"
)
_CREATE_ONCE = (
    "create each Parameter once, in __init__, and change its values in place "
    "(`with torch.no_grad(): self.w.copy_(value)`), so the optimizer keeps stepping the tensor "
    "the model uses"
)


def _parameters_of(
    path: str, type_name: str | None, names: Sequence[str], noun: str, alone: str = ""
) -> str:
    """Whose parameters a finding is about: `body (Linear): its 2 trainable parameters (body.weight
    and body.bias)`, or `trainable parameter body.weight` for one reported alone (`type_name`
    None, as `static.grouped` gives it), followed by `alone`."""
    if type_name is None:
        return f"{noun} {path}{alone}"
    return f"{where(path, type_name)}: its {plural(len(names), noun)} ({listing(names)})"


def _replaced(step: int | None) -> str:
    """Why a parameter or the optimizer went out of step during an iteration."""
    if not step:
        return ""
    return (
        f" This appeared during step {step}: the iteration (e.g. a forward that assigns "
        "`self.w = nn.Parameter(...)`) replaced a parameter, and the optimizer still holds the "
        "one it replaced."
    )


def not_in_optimizer(
    path: str, type_name: str | None, names: Sequence[str], step: int | None = None
) -> Finding:
    """`step`: the iteration after which it was seen (None: at load)."""
    n = Number(len(names))
    subject = _parameters_of(path, type_name, names, "trainable parameter")
    group = (
        f'optimizer.add_param_group({{"params": {accessor(path)}.parameters()}})'
        if path and type_name is not None
        else f'optimizer.add_param_group({{"params": [{parameter_accessor(path)}]}})'
        if path
        else 'optimizer.add_param_group({"params": model.parameters()})'
    )
    fix = _CREATE_ONCE if step else f"{_BUILD_AFTER}; or add {n.them}: {group}"
    return finding(
        FindingKind.NOT_IN_OPTIMIZER,
        path,
        f"{subject} {n.are} in no param_group of the optimizer: optimizer.step() never changes "
        f"{n.them}, though backward() fills .grad.{_replaced(step)}",
        fix,
        paths=names if len(names) > 1 else (),
        step=step,
    )


def frozen_in_optimizer(path: str, type_name: str | None, names: Sequence[str]) -> Finding:
    n = Number(len(names))
    subject = _parameters_of(path, type_name, names, "frozen parameter", " (requires_grad=False)")
    return finding(
        FindingKind.FROZEN_IN_OPTIMIZER,
        path,
        f"{subject} {n.are} in the optimizer: {n.they} {n.verb('stays', 'stay')} frozen while "
        f".grad is None, but unfreezing {n.them} later resumes with the optimizer's old state "
        f"for {n.them}.",
        f"leave {n.them} out if {n.they} {n.verb('stays', 'stay')} frozen: "
        "torch.optim.SGD((p for p in model.parameters() if p.requires_grad), ...)",
        paths=names if len(names) > 1 else (),
    )


def stale_optimizer(
    path: str, entries: Sequence[str], shapes: Sequence[str], step: int | None = None
) -> Finding:
    """`step`: the iteration after which it was seen (None: at load)."""
    why = (
        _replaced(step)
        if step
        else " It was built for an older model (before a layer was replaced or the model "
        "re-created)."
    )
    return finding(
        FindingKind.STALE_OPTIMIZER,
        path,
        f"the optimizer holds {plural(len(entries), 'tensor')} that the model does not "
        f"({listing(shapes)}): its steps change nothing the model uses.{why}",
        _CREATE_ONCE if step else _BUILD_AFTER,
        paths=entries,
        step=step,
    )


def unused_parameter(path: str, type_name: str | None, names: Sequence[str], step: int) -> Finding:
    n = Number(len(names))
    subject = _parameters_of(path, type_name, names, "trainable parameter")
    target = accessor(path) if type_name is not None else parameter_accessor(path)
    return finding(
        FindingKind.UNUSED_PARAMETER,
        path,
        f"{subject} received no gradient in step {step} (.grad is None after backward): the "
        f"loss does not depend on {n.them}, so {n.they} never {n.verb('trains', 'train')} (and "
        "DistributedDataParallel fails without find_unused_parameters=True).",
        f"use {n.them} in forward, remove {n.them}, or freeze {n.them}: "
        f"{target}.requires_grad_(False)",
        paths=names if len(names) > 1 else (),
        step=step,
    )
