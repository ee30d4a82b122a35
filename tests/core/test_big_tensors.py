"""Large tensors, read chunk by chunk (`core/stats/chunked.py`): the same diffs and summaries as
the whole-tensor computation, one previous copy updated in place, temporaries a chunk's size.

The chunk is made small (`HOST_CHUNK_BYTES`) so that tensors of tens of thousands of elements
span dozens of chunks. Whether a key changed, the largest |delta|, the extremes and the counts
must be exactly the whole-tensor ones; sums and norms, added chunk by chunk in float64, are
compared with a float64 reference (a float32 whole-tensor norm is itself off in its fourth
digit for a million elements).
"""

from __future__ import annotations

import gc
import math

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from modscope.core.session import Session
from modscope.core.stats import chunked, segments
from modscope.core.stats.key_diffs import key_diff
from modscope.core.stats.statediff import StateTracker
from modscope.core.stats.summary import summarize
from modscope.core.stats.tensor_stats import host_stats, work_tensor

CHUNK_BYTES = 4096


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunked, "HOST_CHUNK_BYTES", CHUNK_BYTES)


def _reference(new: torch.Tensor, old: torch.Tensor) -> tuple[float, float, float]:
    """`DIFF_COLUMNS` by the whole-tensor diff, its relative change recomputed in float64."""
    changed, largest, _ = key_diff(new, old).tolist()
    a, b = segments.comparable(new), segments.comparable(old)
    same = segments.exactly_same(new, old, a, b)
    # The difference in the tensors' own dtype, as the whole-tensor diff takes it.
    delta = torch.where(same, 0.0, a - b).double()
    delta_norm, old_norm = float(delta.norm()), float(old.double().norm())
    if delta_norm == 0:
        rel = 0.0
    elif old_norm == 0:
        rel = segments.FROM_ZERO
    else:
        rel = delta_norm / old_norm
    return changed, largest, rel


def _assert_same_diff(new: torch.Tensor, old: torch.Tensor) -> None:
    copy = old.clone()
    got = chunked.chunked_diff(new, copy, refresh=True)
    want = _reference(new, old)
    assert got[0] == want[0]
    assert got[1] == want[1] or (math.isnan(got[1]) and math.isnan(want[1]))
    assert got[2] == pytest.approx(want[2], rel=1e-5, nan_ok=True)
    # The copy now holds the new values, bit for bit where they differed.
    assert torch.equal(copy, new) or torch.equal(copy.isnan(), new.isnan())


def _pair(dtype: torch.dtype, n: int = 40_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    old = torch.randn(n, generator=g, dtype=torch.float64)
    new = old + 1e-3 * torch.randn(n, generator=g, dtype=torch.float64)
    return new.to(dtype), old.to(dtype)


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.float8_e4m3fn]
)
def test_floating_diffs_equal_the_whole_tensor_ones(dtype: torch.dtype) -> None:
    new, old = _pair(dtype)
    assert chunked.is_large(new)
    _assert_same_diff(new, old)


def test_a_change_in_one_chunk_only_and_no_change_at_all() -> None:
    new, old = _pair(torch.float32)
    new = old.clone()
    new[31_000] += 0.5
    _assert_same_diff(new, old)
    assert chunked.chunked_diff(old.clone(), old.clone(), refresh=True) == [0.0, 0.0, 0.0]


def test_non_finite_values() -> None:
    new, old = _pair(torch.float32)
    old[5] = new[5] = math.nan  # NaN in both: equal
    old[7] = new[7] = math.inf  # equal infinities: unchanged
    old[9], new[9] = 0.0, -0.0  # equal
    _assert_same_diff(new, old)
    new[20_000] = math.nan  # a new NaN: the largest |delta| is NaN
    _assert_same_diff(new, old)
    new, old = _pair(torch.float32)
    new[100], old[100] = math.inf, -math.inf
    _assert_same_diff(new, old)
    new, old = _pair(torch.float16)
    new[3], old[3] = 60000.0, -60000.0  # the difference overflows float16
    _assert_same_diff(new, old)


def test_from_zero_and_to_zero() -> None:
    old = torch.zeros(30_000)
    new = torch.zeros(30_000)
    new[12_345] = 2.0
    assert chunked.chunked_diff(new, old.clone(), refresh=False)[2] == segments.FROM_ZERO
    _assert_same_diff(new, old)
    _assert_same_diff(old, new)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_and_bool_diffs(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    if dtype == torch.bool:
        old = torch.rand(50_000, generator=g) > 0.5
        new = old.clone()
        new[::997] = ~new[::997]
    else:
        old = torch.randint(0, 100, (50_000,), generator=g, dtype=dtype)
        new = old.clone()
        new[::991] += 3
    _assert_same_diff(new, old)


def test_int64_past_float64_precision() -> None:
    old = torch.full((20_000,), 2**60, dtype=torch.int64)
    new = old.clone()
    new[17_000] += 1  # float64 rounds the difference away; the integers differ
    got = chunked.chunked_diff(new, old.clone(), refresh=False)
    assert got[0] == 1.0
    assert got[0:2] == key_diff(new, old).tolist()[0:2]


def test_non_contiguous_values() -> None:
    g = torch.Generator().manual_seed(2)
    base = torch.randn(300, 400, generator=g)
    old = base.t().clone()  # contiguous copy, the value a transposed view
    moved = base + 1e-2 * torch.randn(300, 400, generator=g)
    _assert_same_diff(moved.t(), old)
    strided = moved[:, ::2]
    _assert_same_diff(strided, base[:, ::2].contiguous())
    _assert_same_diff(strided, base[:, ::2])  # both views: cut along rows alike


def test_the_tracker_matches_the_whole_tensor_tracker(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(3)
    state = {
        "table": torch.randn(500, 64, generator=g),
        "t": torch.randn(64, 500, generator=g).t(),
        "ints": torch.randint(0, 9, (30_000,), generator=g),
        "mask": torch.rand(30_000, generator=g) > 0.5,
        "half": torch.randn(30_000, generator=g).half(),
        "small": torch.randn(10, generator=g),
    }
    chunked_tracker, whole_tracker = StateTracker(), StateTracker()
    chunked_tracker.reset(state)
    with monkeypatch.context() as m:
        m.setattr(chunked, "HOST_CHUNK_BYTES", 2**40)
        whole_tracker.reset(state)
    for step in range(3):
        state["table"][step * 7 : step * 7 + 3] += 0.1
        state["t"].mul_(1.001)
        state["ints"][step::1000] += 1
        if step == 1:
            state["half"][5] = math.nan
        got = chunked_tracker.diff(state)
        with monkeypatch.context() as m:
            m.setattr(chunked, "HOST_CHUNK_BYTES", 2**40)
            want = whole_tracker.diff(state)
        assert got.changed == want.changed and got.unchanged == want.unchanged
        assert got.counters == want.counters
        for key in got.changed:
            a, b = got.max_abs_delta[key], want.max_abs_delta[key]
            assert a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))
            assert got.rel_change[key] == pytest.approx(want.rel_change[key], rel=1e-3, nan_ok=True)
        for key, value in state.items():
            assert torch.equal(chunked_tracker.previous_of(key), value) or key == "half"


def _storages_of(numel: int) -> set[int]:
    """The distinct storages of the live tensors of `numel` elements."""
    gc.collect()
    found = set()
    for obj in gc.get_objects():
        if type(obj) is torch.Tensor and obj.numel() == numel:
            found.add(obj.untyped_storage().data_ptr())
    return found


def test_one_previous_copy_updated_in_place() -> None:
    value = torch.randn(200, 301)
    state = {"w": value}
    tracker = StateTracker()
    tracker.reset(state)
    copy = tracker.previous_of("w")
    pointer = copy.data_ptr()
    for _ in range(3):
        value.add_(0.01)
        diff = tracker.diff(state)
        assert diff.changed == ("w",)
        assert tracker.previous_of("w").data_ptr() == pointer
        assert torch.equal(tracker.previous_of("w"), value)
        # The value and one copy: no second copy kept alive.
        assert _storages_of(value.numel()) == {value.data_ptr(), pointer}


def test_the_diff_allocates_no_temporary_the_size_of_the_tensor() -> None:
    value = torch.randn(1000, 250)  # 1 MB, 250 chunks
    state = {"w": value}
    tracker = StateTracker()
    tracker.reset(state)
    value.mul_(1.01)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        tracker.diff(state)
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < largest <= 2 * CHUNK_BYTES


@pytest.mark.parametrize(
    "make",
    [
        lambda g: torch.randn(300, 200, generator=g),
        lambda g: torch.randn(300, 200, generator=g).t(),
        lambda g: torch.randn(60_000, generator=g).relu(),  # many zeros
        lambda g: 5.0 + 1e-4 * torch.randn(60_000, generator=g),  # a mean that cancels the norm
        lambda g: torch.randn(60_000, generator=g).half(),
        lambda g: torch.randint(-3, 3, (60_000,), generator=g),
        lambda g: torch.rand(60_000, generator=g) > 0.3,
    ],
)
def test_chunked_summaries_equal_the_whole_tensor_ones(make) -> None:
    t = make(torch.Generator().manual_seed(4))
    assert chunked.is_large(t)
    got = chunked.host_stats(t)
    want = host_stats(work_tensor(t))
    assert got is not None and want is not None
    assert (got.lo, got.hi, got.nonzero, got.finite, got.nan) == (
        want.lo,
        want.hi,
        want.nonzero,
        want.finite,
        want.nan,
    )
    reference = work_tensor(t).double()
    assert got.mean == pytest.approx(float(reference.mean()), rel=1e-6, abs=1e-9)
    assert got.norm == pytest.approx(float(reference.norm()), rel=1e-6)
    deviation = float((reference - reference.mean()).norm()) ** 2
    assert got.m2 == pytest.approx(deviation, rel=1e-4)


def test_a_non_finite_element_takes_the_whole_tensor_path() -> None:
    t = torch.randn(60_000)
    t[30_000] = math.inf
    t[40_000] = math.nan
    assert chunked.host_stats(t) is None
    summary = summarize(t)
    assert (summary.nan, summary.inf) == (1, 1)
    assert summary.max == float(t[t.isfinite()].max())


def test_the_summary_taken_by_the_diff_is_the_summary_taken_alone() -> None:
    g = torch.Generator().manual_seed(5)
    value = torch.randn(400, 100, generator=g)
    state = {"w": value}
    tracker = StateTracker()
    tracker.reset(state)
    value[3:5] += 1.0
    alone = summarize(value)
    tracker.diff(state)
    assert chunked.taken_stats(value) is not None
    tracker.diff(state)
    assert summarize(value) == alone  # read from what the diff took, the same numbers


def test_taken_statistics_are_not_used_once_the_tensor_changed() -> None:
    value = torch.randn(400, 100)
    state = {"w": value}
    tracker = StateTracker()
    tracker.reset(state)
    value.add_(1.0)
    tracker.diff(state)
    value.mul_(2.0)  # in place, after the diff: its version counter moves
    assert chunked.taken_stats(value) is None
    tracker.diff(state)
    other = value.clone()
    assert chunked.taken_stats(other) is None  # another tensor, even with equal values
    assert summarize(value).max == float(value.max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64, torch.bool])
def test_the_device_path_gives_the_same_numbers(dtype: torch.dtype) -> None:
    """`chunked_diff` off the CPU keeps each chunk's numbers on the device; its arithmetic is
    device-independent, so it is checked here on host tensors."""
    g = torch.Generator().manual_seed(6)
    old = torch.randn(50_000, generator=g).mul(4).to(dtype)
    new = old.clone()
    new[::701] = (torch.randn(72, generator=g) * 4).to(dtype)
    if dtype.is_floating_point:
        old[10] = new[10] = math.nan
        new[20_000] = math.inf
    copy = old.clone()
    got = chunked._device_diff(new, copy, refresh=True)
    want = _reference(new, old)
    assert got[0] == want[0]
    assert got[1] == want[1] or (math.isnan(got[1]) and math.isnan(want[1]))
    assert got[2] == pytest.approx(want[2], rel=1e-5, nan_ok=True)
    kept = ~new.isnan() if dtype.is_floating_point else torch.ones_like(new, dtype=torch.bool)
    assert torch.equal(copy[kept], new[kept])


def _numbers(diff, key: str) -> tuple[bool, float | None, float | None]:
    return key in diff.changed, diff.max_abs_delta.get(key), diff.rel_change.get(key)


def test_tied_keys_share_one_copy_and_give_the_same_numbers() -> None:
    g = torch.Generator().manual_seed(7)
    table = torch.randn(300, 64, generator=g)
    state = {"wte.weight": table, "lm_head.weight": table}
    tracker, alone = StateTracker(), StateTracker()
    tracker.reset(state)
    alone.reset({"w": table})
    assert tracker.previous_of("wte.weight") is tracker.previous_of("lm_head.weight")
    for step in range(3):
        table[step * 10 : step * 10 + 2] += 0.5
        got, want = tracker.diff(state), alone.diff({"w": table})
        assert _numbers(got, "wte.weight") == _numbers(got, "lm_head.weight") == _numbers(want, "w")
        assert tracker.previous_of("wte.weight") is tracker.previous_of("lm_head.weight")
        assert torch.equal(tracker.previous_of("wte.weight"), table)


def test_a_tie_broken_later_gets_copies_of_its_own() -> None:
    g = torch.Generator().manual_seed(8)
    table = torch.randn(300, 64, generator=g)
    state = {"wte.weight": table, "lm_head.weight": table}
    tracker = StateTracker()
    tracker.reset(state)
    before = table.clone()
    untied = table.clone()
    untied[7] += 1.0
    table[3] += 0.25
    state["lm_head.weight"] = untied  # the head now has a tensor of its own
    diff = tracker.diff(state)
    reference = StateTracker()
    reference.reset({"a": before, "b": before.clone()})
    want = reference.diff({"a": table, "b": untied})
    assert _numbers(diff, "wte.weight") == _numbers(want, "a")
    assert _numbers(diff, "lm_head.weight") == _numbers(want, "b")
    first, second = tracker.previous_of("wte.weight"), tracker.previous_of("lm_head.weight")
    assert first is not second
    assert torch.equal(first, table) and torch.equal(second, untied)
    previous = untied.clone()
    untied[9] += 2.0
    diff = tracker.diff(state)
    assert diff.changed == ("lm_head.weight",)
    assert diff.max_abs_delta["lm_head.weight"] == float((untied - previous).abs().max())


class _Touchy(torch.Tensor):
    """A buffer that refuses every op while `failing` (the user's tensor subclass)."""

    failing = False

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if cls.failing:
            raise RuntimeError("touchy buffer refuses")
        return super().__torch_function__(func, types, args, kwargs or {})


class _HalfRefreshed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Parameter(torch.randn(100_000) * 0.01)  # refreshed as it is compared
        self.register_buffer("touchy", torch.zeros(3).as_subclass(_Touchy))
        self.small = nn.Linear(3, 1)

    def forward(self, x):
        return self.small(x).sum() + self.big.sum()


def test_a_record_the_users_tensor_broke_is_followed_by_a_new_baseline(monkeypatch) -> None:
    # The step-2 diff refreshes `big`'s copy, then the user's buffer raises: the copies are
    # half step 1's, half step 2's, so step 3 must diff against a baseline taken anew.
    torch.manual_seed(0)
    model = _HalfRefreshed()
    session = Session.from_objects(
        model,
        inputs=torch.randn(4, 3),
        loss_fn=lambda out: out.pow(2),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
    )
    assert session.run_iteration().error is None
    monkeypatch.setattr(_Touchy, "failing", True)
    assert session.run_iteration().error.message == "touchy buffer refuses"
    monkeypatch.setattr(_Touchy, "failing", False)
    before = model.small.weight.detach().clone()
    third = session.run_iteration()
    change = float((model.small.weight.detach() - before).abs().max())
    assert third.record.diff.max_abs_delta["small.weight"] == pytest.approx(change, rel=1e-6)
