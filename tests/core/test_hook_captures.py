"""What hooks capture (modscope.core.hooks.captures): stacked, deferred summaries equal to the
eager ones, of the values at fire time; and the collector's scans kept to a phase's objects."""

from __future__ import annotations

import gc

import torch
from torch import nn

from modscope.core.contract.hook_spec import HookSpec
from modscope.core.hooks.captures import CaptureMemo, StackedBatch
from modscope.core.session import Session
from modscope.core.stats.stacked import STACK_MAX_TOTAL
from modscope.core.stats.summary import resolve, summarize


def awkward_tensors() -> list[torch.Tensor]:
    """Tensors of one shape that the stacked path must treat as the eager path does: plain,
    with zeros, non-finite, nearly constant (the variance's second pass), float64, with
    autograd history."""
    torch.manual_seed(0)
    plain = [torch.randn(8, 140) * (i + 1) for i in range(6)]
    zeros = torch.relu(torch.randn(8, 140))
    nonfinite = torch.randn(8, 140)
    nonfinite[0, 0], nonfinite[1, 1] = float("nan"), float("inf")
    nearly_constant = 1000.0 + torch.randn(8, 140) * 1e-3
    float64 = torch.randn(8, 140, dtype=torch.float64)
    history = torch.randn(8, 140, requires_grad=True) * 2
    return [*plain, zeros, nonfinite, nearly_constant, float64, history]


def test_deferred_captures_equal_the_eager_summaries() -> None:
    tensors = awkward_tensors()
    memo = CaptureMemo()
    pending = [memo.capture(t) for t in tensors]
    assert all(p.batch is not None for p in pending)
    assert resolve(pending) == [summarize(t) for t in tensors]
    assert resolve(pending)[-1].grad_fn == "MulBackward0"


def test_tensors_of_one_numel_and_different_shapes_stack_together() -> None:
    torch.manual_seed(1)
    tensors = [torch.randn(shape) for shape in [(8, 140), (140, 8), (1120,), (2, 4, 140)] * 2]
    memo = CaptureMemo()
    pending = [memo.capture(t) for t in tensors]
    assert len({id(p.batch) for p in pending}) == 1
    summaries = resolve(pending)
    assert summaries == [summarize(t) for t in tensors]
    assert summaries[1].shape == (140, 8)


def test_a_capture_describes_the_value_when_the_hook_fired() -> None:
    memo = CaptureMemo()
    t = torch.randn(8, 140)
    before = summarize(t)
    pending = memo.capture(t)
    t.relu_()  # an in-place op after the hook, as nn.ReLU(inplace=True) after a Linear
    after = memo.capture(t)
    assert resolve([pending, after]) == [before, summarize(t)]
    assert before.min < 0 and summarize(t).min == 0.0


def test_a_full_batch_is_summarised_at_once_and_drops_its_copies() -> None:
    memo = CaptureMemo()
    numel = STACK_MAX_TOTAL // 4  # four rows fill a batch
    tensors = [torch.full((numel,), float(i)) for i in range(5)]
    pending = [memo.capture(t) for t in tensors]
    first: StackedBatch = pending[0].batch
    assert pending[3].batch is first and pending[4].batch is not first
    assert first.summaries is not None and first.copies == []
    assert [s.mean for s in resolve(pending)] == [0.0, 1.0, 2.0, 3.0, 4.0]


def run_with_probe(session: Session, model: nn.Module) -> list[int]:
    """Run an iteration, recording the freeze count as the model's forward runs."""
    seen: list[int] = []
    handle = model.register_forward_hook(lambda *_: seen.append(gc.get_freeze_count()))
    try:
        session.run_iteration()
    finally:
        handle.remove()
    return seen


def test_a_phase_with_modscope_hooks_runs_with_older_objects_frozen() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    session = Session.from_objects(model, inputs=torch.randn(2, 4), loss_fn=lambda o: o.sum())
    assert run_with_probe(session, model) == [0]  # no modscope hook: nothing frozen
    session.attach(HookSpec.parse("*:forward"))
    (frozen,) = run_with_probe(session, model)
    assert frozen > 0 and gc.get_freeze_count() == 0
    gc.freeze()  # someone else's freeze is left as it is: not undone after the phase
    try:
        run_with_probe(session, model)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    session.close()
