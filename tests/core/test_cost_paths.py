"""The paths that keep modscope cheap give the same answers as the plain ones: captures shared
between hooks, joined statistics in bounded buffers."""

from __future__ import annotations

import gc
import math

import pytest
import torch
from torch import nn

from modscope.core.contract.hook_spec import HookSpec
from modscope.core.hooks.captures import CaptureMemo
from modscope.core.session import Session
from modscope.core.stats import segments
from modscope.core.stats.stacked import stackable, stacked_stats
from modscope.core.stats.statediff import StateTracker
from modscope.core.stats.summary import resolve, summarize, summarize_many


def test_a_tensor_seen_twice_unchanged_is_captured_once() -> None:
    memo = CaptureMemo()
    t = torch.arange(2000.0)
    first = memo.capture(t)
    assert memo.capture(t) is first
    t.add_(1)  # in place: a new version, so new values
    second = memo.capture(t)
    assert second is not first
    assert resolve([second])[0].min == 1.0 and resolve([first])[0].min == 0.0


def test_the_memo_keeps_no_tensor_alive() -> None:
    memo = CaptureMemo()
    t = torch.ones(3000)
    memo.capture(t)
    alive = [x for x in gc.get_objects() if x is t]
    assert len(alive) == 1
    del t, alive
    gc.collect()
    other = torch.zeros(3000)  # may reuse the id: the dead weak reference is no match
    assert resolve([memo.capture(other)])[0].max == 0.0


def test_hooks_on_every_module_see_each_activation_once() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 50), nn.Tanh(), nn.Linear(50, 50))
    inputs = torch.randn(40, 50)
    session = Session.from_objects(model, inputs=inputs, loss_fn=lambda o: o.sum())
    session.attach(HookSpec.parse("*:forward-pre"))
    session.attach(HookSpec.parse("*:forward"))
    events = session.run_iteration().events
    by = {(e.module, e.kind.value): e for e in events}
    # The Linear's output is the Tanh's input: one capture, equal summaries.
    assert by["0", "forward"].output[0] == by["1", "forward-pre"].args[0]
    with torch.no_grad():
        expected = model[0](inputs)  # no optimizer: the weights are as they were
    assert by["0", "forward"].output[0].mean == pytest.approx(float(expected.mean()), rel=1e-5)
    assert by["0", "forward"].output[0].max == float(expected.max())
    session.close()


def test_bounded_runs_add_up_to_the_limit() -> None:
    runs = segments.bounded([3, 3, 3, 5, 9, 1], lambda n: n, limit=6)
    assert runs == [[3, 3], [3], [5], [9], [1]]
    assert segments.bounded([], lambda n: n) == []


def test_summaries_and_diffs_in_bounded_buffers_equal_the_per_tensor_ones(monkeypatch) -> None:
    torch.manual_seed(1)
    tensors = [torch.randn(100) for _ in range(40)]
    state = {f"t{i}": t for i, t in enumerate(tensors)}
    whole = summarize_many(tensors)
    tracker = StateTracker()
    tracker.reset(state)
    moved = {k: v + 0.25 for k, v in state.items()}
    diff_whole = tracker.diff(moved, remember=False)
    monkeypatch.setattr(segments, "JOIN_MAX_TOTAL", 1000)  # 10 tensors a buffer, 4 buffers
    pieces = summarize_many(tensors)
    tracker = StateTracker()
    tracker.reset(state)
    diff_pieces = tracker.diff(moved)
    for a, b, t in zip(whole, pieces, tensors, strict=True):
        assert a.min == b.min == float(t.min())
        assert a.norm == pytest.approx(b.norm, rel=1e-12)
        assert summarize(t).max == a.max
    assert diff_pieces.max_abs_delta == pytest.approx(diff_whole.max_abs_delta, rel=1e-6)
    assert diff_pieces.changed == diff_whole.changed == tuple(state)


def test_stacked_summaries_equal_the_per_tensor_ones() -> None:
    torch.manual_seed(2)
    tensors = [torch.randn(30, 40) for _ in range(9)]
    tensors[1][0, 0] = 0.0  # one zero: counted
    tensors[2][5, 5] = float("nan")  # non-finite: left to the per-tensor path
    tensors[3] += 1000.0  # nearly all mean: a second pass about the mean, stacked too
    assert all(stackable(t) for t in tensors)
    stats = stacked_stats(tensors)
    assert stats[2] is None and stats[3] is not None
    # From the norm and the mean, float32's digits would be gone: 1000^2 * 1200 against 1200.
    assert math.sqrt(stats[3].m2 / 1199) == pytest.approx(
        float(tensors[3].double().std()), rel=1e-4
    )
    for t, s in zip(tensors, stats, strict=True):
        if s is None:
            continue
        assert s.lo == float(t.min()) and s.hi == float(t.max())
        assert s.nonzero == int(torch.count_nonzero(t))
        assert s.mean == pytest.approx(float(t.double().mean()), rel=1e-5)
        assert s.norm == pytest.approx(float(t.double().norm()), rel=1e-6)
    assert stats[1].nonzero == 1199
    together = summarize_many(tensors)
    for t, summary in zip(tensors, together, strict=True):
        alone = summarize(t)
        assert (summary.min, summary.max, summary.zeros, summary.nan) == (
            alone.min,
            alone.max,
            alone.zeros,
            alone.nan,
        )
        assert summary.std == pytest.approx(alone.std, rel=1e-5)


def test_the_collector_is_held_for_a_record_and_restored_after() -> None:
    from modscope.core.gc_pause import collector_paused

    assert gc.isenabled()
    with pytest.raises(ValueError), collector_paused():
        assert not gc.isenabled()
        raise ValueError
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller that held it keeps it held
    finally:
        gc.enable()
