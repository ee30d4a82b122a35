"""Joined statistics of many small tensors (modscope.core.stats.segments) against the per-tensor
path."""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from modscope.core.contract.steps import StateDiff
from modscope.core.contract.tensors import TensorSummary
from modscope.core.stats import segments, summary
from modscope.core.stats.statediff import StateTracker
from modscope.core.stats.summary import capture, capture_many, resolve, summarize, summarize_many

NAN, INF = math.nan, math.inf
JOINED_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int8,
    torch.uint8,
    torch.bool,
]
SHAPES = [(), (1,), (2,), (3, 4), (2, 3, 2), (16,), (17,), (5, 7), (0,), (0, 3), (600,)]


# -- random tensor sets --------------------------------------------------------------------


def random_values(g: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Values of `dtype` with a random scale and offset; floats get some zeros, NaN and Inf."""
    n = math.prod(shape)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) < 0.5
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        low, high = max(info.min, -(2**62)), min(info.max, 2**62)
        if torch.rand((), generator=g) < 0.3:  # small values, many repeated, many zeros
            low, high = max(low, -3), min(high, 3)
        return torch.randint(low, high, shape, generator=g, dtype=dtype)
    scale = 10.0 ** torch.randint(-3, 4, (), generator=g).item()
    offset = scale * 100 * torch.randn((), generator=g).item() * (torch.rand((), generator=g) < 0.3)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset
    if n:
        flat = x.view(-1)
        for special in (0.0, NAN, INF, -INF):
            if torch.rand((), generator=g) < 0.25:
                flat[torch.randint(0, n, (max(1, n // 4),), generator=g)] = special
        if torch.rand((), generator=g) < 0.05:
            flat[:] = NAN
    return x.to(dtype)


def non_contiguous(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """`t`'s values seen through a transposed, strided or expanded view (same shape)."""
    pick = int(torch.randint(0, 3, (), generator=g))
    if t.dim() >= 2 and pick == 0:
        return t.transpose(0, 1).contiguous().transpose(0, 1)
    if t.dim() >= 1 and pick == 1:
        doubled = torch.stack([t, torch.zeros_like(t)], dim=-1)
        return doubled[..., 0]
    return t.unsqueeze(0).expand(2, *t.shape)[1]


def random_tensors(seed: int, per_dtype: int = 14) -> list[torch.Tensor]:
    """Enough tensors of every joinable dtype to be joined, in mixed shapes and layouts,
    shuffled together with a few that keep the per-tensor path."""
    g = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    for dtype in JOINED_DTYPES:
        for _ in range(per_dtype):
            shape = SHAPES[int(torch.randint(0, len(SHAPES), (), generator=g))]
            t = random_values(g, shape, dtype)
            if torch.rand((), generator=g) < 0.3:
                t = non_contiguous(t, g)
            out.append(t)
    out += odd_tensors()
    order = torch.randperm(len(out), generator=g).tolist()
    return [out[i] for i in order]


def odd_tensors() -> list[torch.Tensor]:
    """Tensors that keep the per-tensor path: big, complex, sparse, meta, quantized, float8."""
    odd = [
        torch.randn(segments.SUMMARY_MAX_NUMEL + 1),
        torch.tensor([3 + 4j, NAN, 0j]),
        torch.eye(3).to_sparse(),
        torch.empty(2, 2, device="meta"),
        torch.quantize_per_tensor(torch.tensor([0.5, 1.0]), 0.1, 0, torch.quint8),
        torch.nn.Parameter(torch.randn(3, 3)),  # joined: a Parameter is a plain tensor here
    ]
    float8 = getattr(torch, "float8_e4m3fn", None)
    if float8 is not None:
        odd.append(torch.tensor([1.0, -2.0, 0.0]).to(float8))
    return odd


# -- comparing summaries -------------------------------------------------------------------

EXACT = ("shape", "dtype", "device", "numel", "layout", "requires_grad", "grad_fn", "note")
COUNTS = ("nan", "inf", "zeros")


def scale_of(s: TensorSummary) -> float:
    return max(abs(s.min or 0.0), abs(s.max or 0.0), 1e-300)


def assert_same(joined: TensorSummary, alone: TensorSummary) -> None:
    """Exact for facts, counts, extremes and values; float tolerance for mean, std, norm."""
    for name in (*EXACT, *COUNTS, "min", "max"):
        assert getattr(joined, name) == getattr(alone, name), name
    # repr: NaN equals NaN, and 1 (int), 1.0 (float) and True (bool) differ.
    assert repr(joined.values) == repr(alone.values)
    for name in ("mean", "std", "norm"):
        a, b = getattr(joined, name), getattr(alone, name)
        assert (a is None) == (b is None), name
        if a is not None:
            # float32 sums in the per-tensor path: a few ulps per element of the scale.
            assert a == pytest.approx(b, rel=1e-4, abs=1e-6 * scale_of(alone)), name


@pytest.fixture
def joins(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the groups `resolve` joined (via a spy on `segments.summary_stats`)."""
    sizes: list[int] = []
    real = segments.summary_stats

    def spy(flat: torch.Tensor, segs: segments.Segments) -> torch.Tensor:
        sizes.append(len(segs))
        return real(flat, segs)

    monkeypatch.setattr(segments, "summary_stats", spy)
    return sizes


@pytest.fixture(params=["host", "device"])
def where(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Join on the CPU as itself, and as a device whose results travel to the host."""
    if request.param == "device":
        monkeypatch.setattr(summary, "_HOST_DEVICE_TYPES", frozenset())
    return request.param


def alone(tensors: list[Any]) -> list[TensorSummary | None]:
    """Each tensor summarized on its own: the per-tensor path."""
    return [summarize(t) if isinstance(t, torch.Tensor) else None for t in tensors]


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.parametrize("seed", range(6))
def test_joined_summaries_equal_the_per_tensor_ones(seed: int, where: str, joins: list[int]):
    tensors = random_tensors(seed)
    reference = alone(tensors)
    assert joins == []  # one tensor at a time never joins
    for batched in (summarize_many(tensors), resolve([capture(t) for t in tensors])):
        for a, b in zip(batched, reference, strict=True):
            assert a is not None and b is not None
            assert_same(a, b)
    # Each dtype with enough small tensors was joined, once per batched call.
    small = [t for t in tensors if 0 < t.numel() <= segments.SUMMARY_MAX_NUMEL]
    counts = [sum(t.dtype == d and type(t) is torch.Tensor for t in small) for d in JOINED_DTYPES]
    assert sum(n >= segments.MIN_TENSORS for n in counts) >= len(JOINED_DTYPES) - 2
    assert len(joins) == 2 * sum(n >= segments.MIN_TENSORS for n in counts)


def test_known_values_joined(joins: list[int]) -> None:
    tensors = [
        torch.tensor([1.0, 2.0, 3.0, 4.0]),
        torch.tensor([NAN, 1.0, INF, -INF, 0.0]),
        torch.full((3,), NAN),
        torch.tensor([INF]),
        torch.tensor(2.5),
        torch.tensor([-0.0, 0.0]),
        1000 + torch.linspace(-1e-3, 1e-3, 40),
        torch.arange(12.0).reshape(3, 4).t(),
    ]
    s = summarize_many(tensors)
    assert joins == [8]
    assert (s[0].min, s[0].max, s[0].mean, s[0].values) == (1.0, 4.0, 2.5, (1.0, 2.0, 3.0, 4.0))
    assert s[0].std == pytest.approx(1.2909944, rel=1e-6)
    assert (s[1].nan, s[1].inf, s[1].zeros, s[1].min, s[1].max) == (1, 2, 1, 0.0, 1.0)
    assert (s[2].nan, s[2].min, s[2].mean, s[2].std, s[2].norm) == (3, None, None, None, None)
    assert (s[3].inf, s[3].min, s[3].zeros) == (1, None, 0)
    assert (s[4].shape, s[4].values, s[4].std, s[4].norm) == ((), (2.5,), None, 2.5)
    assert (s[5].zeros, s[5].all_zero, s[5].std) == (2, True, 0.0)
    assert s[6].std == pytest.approx(tensors[6].double().std().item(), rel=1e-9)
    assert s[6].values is None
    assert s[7].values == (0.0, 4.0, 8.0, 1.0, 5.0, 9.0, 2.0, 6.0, 10.0, 3.0, 7.0, 11.0)


def test_integer_bool_and_half_values_keep_their_python_types(joins: list[int]) -> None:
    big = [torch.tensor([2**60 + 1, -7, 0]) for _ in range(8)]
    flags = [torch.tensor([True, False, True]) for _ in range(8)]
    halves = [torch.tensor([0.1, NAN], dtype=torch.float16) for _ in range(8)]
    s = summarize_many(big + flags + halves)
    assert sorted(joins) == [8, 8, 8]
    assert s[0].values == (2**60 + 1, -7, 0) and all(type(v) is int for v in s[0].values)
    assert (s[0].min, s[0].max, s[0].zeros) == (-7.0, float(2**60 + 1), 1)
    assert s[8].values == (True, False, True) and all(type(v) is bool for v in s[8].values)
    assert (s[8].mean, s[8].zeros) == (pytest.approx(2 / 3), 1)
    assert all(type(v) is float for v in s[16].values) and s[16].nan == 1


def test_few_tensors_and_big_ones_keep_the_per_tensor_path(joins: list[int]) -> None:
    few = [torch.randn(3) for _ in range(segments.MIN_TENSORS - 1)]
    big = [torch.randn(segments.SUMMARY_MAX_NUMEL + 1) for _ in range(segments.MIN_TENSORS)]
    for batched, reference in zip(summarize_many(few + big), alone(few + big), strict=True):
        assert_same(batched, reference)
    assert joins == []


def test_resolve_joins_across_calls_to_capture(joins: list[int]) -> None:
    # Hook events and Session._record capture one tensor at a time and resolve them together.
    tensors = [torch.randn(4, 4) for _ in range(50)]
    pending = [capture(t) for t in tensors]
    assert all(p.joins and p.data is not None for p in pending)
    for a, b in zip(resolve(pending), alone(tensors), strict=True):
        assert_same(a, b)
    assert joins == [50]


def test_a_refusing_op_falls_back_to_the_per_tensor_path(
    joins: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no segments here")

    monkeypatch.setattr(segments, "summary_stats", refuse)
    tensors = [torch.randn(5) for _ in range(20)]
    for a, b in zip(summarize_many(tensors), alone(tensors), strict=True):
        assert_same(a, b)


# -- a handful of ops, one transfer --------------------------------------------------------


class OpCounter(TorchDispatchMode):
    """Counts the aten ops that compute (views are free) run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not func.is_view:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> int:
    with OpCounter() as counter:
        fn()
    return len(counter.ops)


def test_op_count_does_not_grow_with_the_number_of_tensors() -> None:
    def tensors(k: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(k)
        return [torch.randn(3, 4, generator=g) for _ in range(k)]

    few, many = tensors(16), tensors(500)
    pending_few, pending_many = [capture(t) for t in few], [capture(t) for t in many]
    assert count_ops(lambda: resolve(pending_few)) == count_ops(lambda: resolve(pending_many))
    assert count_ops(lambda: capture_many(few)) == count_ops(lambda: capture_many(many)) == 1
    state_few = {str(i): t for i, t in enumerate(few)}
    state_many = {str(i): t for i, t in enumerate(many)}
    trackers = StateTracker(), StateTracker()
    trackers[0].reset(state_few)
    trackers[1].reset(state_many)
    diff_few = count_ops(lambda: trackers[0].diff(state_few))
    assert diff_few == count_ops(lambda: trackers[1].diff(state_many))
    assert diff_few < 50


def test_joined_resolve_is_one_transfer_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "_HOST_DEVICE_TYPES", frozenset())
    tensors = [torch.randn(3) for _ in range(20)] + [torch.arange(40) for _ in range(10)]
    tensors += [torch.randn(summary.COPY_LIMIT + 1), torch.tensor([1 + 1j])]
    pending = [capture(t) for t in tensors]
    copies = []
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        copies.append(self.numel())
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    out = resolve(pending)
    assert len(copies) == 1
    monkeypatch.setattr(torch.Tensor, "cpu", real_cpu)
    for a, b in zip(out, alone(tensors), strict=True):
        assert_same(a, b)


# -- the observer rule ---------------------------------------------------------------------


def observed_tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    leaves = [torch.randn(4, 3, generator=g, requires_grad=True) for _ in range(10)]
    return [*leaves, *(leaf * 2 for leaf in leaves), *random_tensors(4, per_dtype=9)[:40]]


def snapshot(tensors: list[torch.Tensor]) -> list[tuple[Any, ...]]:
    def dense(t: torch.Tensor) -> torch.Tensor | None:
        if t.is_meta or t.is_quantized:
            return None
        return t.detach().to_dense().clone() if t.layout != torch.strided else t.detach().clone()

    return [
        (t._version, t.grad_fn, t.requires_grad, t.grad if t.is_leaf else None, dense(t))
        for t in tensors
    ]


def assert_unchanged(before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]) -> None:
    for (v0, fn0, rg0, g0, d0), (v1, fn1, rg1, g1, d1) in zip(before, after, strict=True):
        assert (v0, fn0, rg0, g0) == (v1, fn1, rg1, g1)
        assert (d0 is None) == (d1 is None)
        if d0 is not None:
            assert torch.equal(d0, d1) or torch.allclose(d0, d1, equal_nan=True)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_joined_summaries_consume_no_random_numbers_and_change_nothing(where: str) -> None:
    tensors = observed_tensors()
    before = snapshot(tensors)
    rng = torch.get_rng_state()
    pending = [capture(t) for t in tensors] + capture_many(tensors)
    assert all(
        not piece.requires_grad and piece.grad_fn is None
        for p in pending
        for piece in p._on_device()
    )
    resolve(pending)
    assert torch.equal(rng, torch.get_rng_state())
    assert_unchanged(before, snapshot(tensors))


def test_joined_summaries_are_fixed_at_capture() -> None:
    tensors = [torch.full((3,), float(i)) for i in range(12)]
    by_capture = [capture(t) for t in tensors]
    by_capture_many = capture_many(tensors)
    for t in tensors:
        t.add_(100)
    for pending in (by_capture, by_capture_many):
        out = resolve(pending)
        assert [s.mean for s in out] == [float(i) for i in range(12)]
        assert out[5].values == (5.0, 5.0, 5.0)


def test_joined_summaries_under_inference_mode() -> None:
    with torch.inference_mode():
        tensors = [torch.ones(4) * i for i in range(10)]
        out = summarize_many(tensors)
    assert [s.mean for s in out] == [float(i) for i in range(10)]


# -- the state diff ------------------------------------------------------------------------


def random_state(g: torch.Generator, per_dtype: int = 10) -> dict[str, torch.Tensor]:
    state = {}
    for dtype in JOINED_DTYPES:
        for i in range(per_dtype):
            shape = SHAPES[int(torch.randint(0, len(SHAPES), (), generator=g))]
            state[f"{str(dtype)[6:]}.{i}"] = random_values(g, shape, dtype)
    state["complex"] = torch.tensor([1 + 1j, 2j])
    state["big"] = torch.randn(segments.DIFF_MAX_NUMEL + 1, generator=g)
    return state


def step(state: dict[str, torch.Tensor], g: torch.Generator) -> dict[str, torch.Tensor]:
    """A next state: some keys as they were, some changed in a few places, some replaced."""
    out = {}
    for key, old in state.items():
        new = old.clone()
        pick = float(torch.rand((), generator=g))
        if pick < 0.3 or new.numel() == 0:
            pass
        elif pick < 0.7:
            flat = new.view(-1)
            spots = torch.randint(0, new.numel(), (max(1, new.numel() // 5),), generator=g)
            if new.dtype == torch.bool:
                flat[spots] = ~flat[spots]
            elif new.is_complex():
                flat[spots] += 1j
            else:
                flat[spots] = random_values(g, (len(spots),), new.dtype)
        else:
            new = random_values(g, tuple(new.shape), new.dtype) if not new.is_complex() else new
        out[key] = new
    return out


T = TypeVar("T")


def per_key(monkeypatch: pytest.MonkeyPatch, fn: Callable[[], T]) -> T:
    """`fn()` with the joined diff turned off: the per-key reference."""
    with monkeypatch.context() as m:
        m.setattr(segments, "MIN_TENSORS", 1 << 62)
        return fn()


def assert_same_diff(joined: StateDiff, alone: StateDiff) -> None:
    assert joined.changed == alone.changed
    assert joined.unchanged == alone.unchanged
    assert (joined.added, joined.removed) == (alone.added, alone.removed)
    for key in alone.changed:
        a, b = joined.max_abs_delta[key], alone.max_abs_delta[key]
        assert repr(a) == repr(b), key  # exact, NaN included
        a, b = joined.rel_change[key], alone.rel_change[key]
        if b is None or math.isnan(b) or math.isinf(b):
            assert repr(a) == repr(b), key
        else:
            assert a == pytest.approx(b, rel=1e-4, abs=1e-12), key


@pytest.mark.parametrize("seed", range(5))
def test_joined_diff_equals_the_per_key_diff(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(seed)
    calls: list[int] = []
    real = segments.diff_stats

    def spy(new: torch.Tensor, old: torch.Tensor, segs: segments.Segments) -> torch.Tensor:
        calls.append(len(segs))
        return real(new, old, segs)

    monkeypatch.setattr(segments, "diff_stats", spy)
    state = random_state(g)
    joined, alone = StateTracker(), StateTracker()
    joined.reset(state)
    per_key(monkeypatch, functools.partial(alone.reset, state))
    for _ in range(4):
        state = step(state, g)
        expected = per_key(monkeypatch, functools.partial(alone.diff, state))
        assert_same_diff(joined.diff(state), expected)
    assert len(calls) == 4 * len(JOINED_DTYPES)


def test_joined_diff_nan_inf_and_integers(monkeypatch: pytest.MonkeyPatch) -> None:
    old = {
        "nan_both": torch.tensor([NAN, 1.0]),
        "nan_new": torch.tensor([1.0, 2.0]),
        "inf_kept": torch.tensor([INF, 1.0]),
        "inf_flip": torch.tensor([INF, 1.0]),
        "int": torch.tensor([3, 4]),
        "bool": torch.tensor([True]),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0),
        "same": torch.ones(2, 2),
        "moved": torch.zeros(3),
    }
    new = {
        "nan_both": torch.tensor([NAN, 1.0]),
        "nan_new": torch.tensor([NAN, 2.0]),
        "inf_kept": torch.tensor([INF, 3.0]),
        "inf_flip": torch.tensor([-INF, 1.0]),
        "int": torch.tensor([3, 9]),
        "bool": torch.tensor([False]),
        "scalar": torch.tensor(2.0),
        "empty": torch.zeros(0),
        "same": torch.ones(2, 2),
        "moved": torch.tensor([0.0, 3.0, -4.0]),
    }
    calls = []
    real = segments.diff_stats
    monkeypatch.setattr(segments, "diff_stats", lambda *a: calls.append(1) or real(*a))
    for force_per_key in (False, True):
        with monkeypatch.context() as m:
            if force_per_key:
                m.setattr(segments, "MIN_TENSORS", 1 << 62)
            tracker = StateTracker()
            tracker.reset(old)
            diff = tracker.diff(new)
        assert diff.unchanged == ("nan_both", "empty", "same")
        assert diff.changed == (
            "nan_new",
            "inf_kept",
            "inf_flip",
            "int",
            "bool",
            "scalar",
            "moved",
        )
        assert diff.rel_change["moved"] is None  # from all zeros: no ratio to give
        assert diff.counters == ("int", "bool")
        assert diff.max_abs_delta["moved"] == 4.0
        assert math.isnan(diff.max_abs_delta["nan_new"])
        # An infinity that stays is no change: its NaN difference does not count.
        assert diff.max_abs_delta["inf_kept"] == 2.0 and diff.rel_change["inf_kept"] == 0.0
        assert diff.max_abs_delta["inf_flip"] == INF
        assert (diff.max_abs_delta["int"], diff.max_abs_delta["bool"]) == (5.0, 1.0)
        assert diff.rel_change["int"] == pytest.approx(5 / 5.0)
        assert diff.max_abs_delta["scalar"] == 0.5
    assert calls == [1]  # the float32 keys, joined once


def many_keys(n: int = 40) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return {f"w{i}": torch.randn(3, i % 5 + 1, generator=g) for i in range(n)}


def test_the_previous_copy_is_one_buffer_reused_across_steps() -> None:
    state = many_keys()
    tracker = StateTracker()
    tracker.reset(state)
    storage = {tracker.previous_of(k).untyped_storage().data_ptr() for k in state}
    pointers = {k: tracker.previous_of(k).data_ptr() for k in state}
    assert len(storage) == 1  # every key a view of one flat buffer
    assert all(pointers[k] != state[k].data_ptr() for k in state)
    for i in range(3):
        with torch.no_grad():
            state["w3"].add_(0.5)
        diff = tracker.diff(state)
        assert diff.changed == ("w3",), i
        assert diff.max_abs_delta["w3"] == pytest.approx(0.5, rel=1e-5)
        assert {k: tracker.previous_of(k).data_ptr() for k in state} == pointers
        assert torch.equal(tracker.previous_of("w3"), state["w3"])
    assert tracker.diff(state).changed == ()


def test_a_changed_layout_is_diffed_per_key_then_joined_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = many_keys()
    tracker, reference = StateTracker(), StateTracker()
    tracker.reset(state)
    per_key(monkeypatch, functools.partial(reference.reset, state))
    changes: list[Callable[[dict[str, torch.Tensor]], None]] = [
        lambda s: s.update(extra=torch.ones(2)),
        lambda s: s.pop("w0"),
        lambda s: s.update(w5=torch.zeros(7)),  # reshaped
        lambda s: s.update(w6=s["w6"].double()),  # another dtype
        lambda s: s.update(w7=s["w7"] + 1),
    ]
    for change in changes:
        state = dict(state)
        change(state)
        expected = per_key(monkeypatch, functools.partial(reference.diff, state))
        assert_same_diff(tracker.diff(state), expected)
    assert len({tracker.previous_of(k).untyped_storage().data_ptr() for k in state}) <= 3


def test_diff_without_remembering_keeps_the_baseline() -> None:
    state = many_keys()
    tracker = StateTracker()
    tracker.reset(state)
    moved = {k: v + 1 for k, v in state.items()}
    first = tracker.diff(moved, remember=False)
    assert len(first.changed) == len(state)
    assert tracker.diff(moved, remember=False) == first
    assert tracker.diff(state).changed == ()


def test_joined_diff_changes_nothing_and_consumes_no_random_numbers() -> None:
    params = [torch.nn.Parameter(torch.randn(4, 4)) for _ in range(20)]
    state = {f"p{i}": p for i, p in enumerate(params)}
    tracker = StateTracker()
    tracker.reset(state)
    with torch.no_grad():
        params[2].mul_(2)
    before = snapshot(params)
    rng = torch.get_rng_state()
    diff = tracker.diff(state)
    assert diff.changed == ("p2",)
    assert torch.equal(rng, torch.get_rng_state())
    assert_unchanged(before, snapshot(params))
    copies = [tracker.previous_of(k) for k in state]
    assert all(v is not None and v.grad_fn is None and not v.requires_grad for v in copies)


# -- CUDA ----------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def syncs_during(fn: Callable[[], object]) -> int:
    """How many times `fn` makes the host wait for the GPU."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in seen)


@needs_cuda
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_cuda_joined_summaries_sync_once_and_match_the_cpu(joins: list[int]) -> None:
    on_cpu = [t.detach() for t in random_tensors(7) if not t.is_quantized and not t.is_meta]
    on_gpu = [t.cuda() for t in on_cpu]
    pending: list[Any] = []
    assert syncs_during(lambda: pending.extend(capture(t) for t in on_gpu)) == 0
    assert syncs_during(lambda: pending.extend(capture_many(on_gpu))) == 0
    out: list[Any] = []
    assert syncs_during(lambda: out.extend(resolve(pending))) == 1
    assert len(joins) >= len(JOINED_DTYPES) - 2  # one resolve: both lists join together
    reference = alone(on_cpu) * 2
    for gpu, cpu in zip(out, reference, strict=True):
        assert gpu.device.startswith("cuda")
        assert_same(gpu, dataclasses.replace(cpu, device=gpu.device))


@needs_cuda
def test_cuda_joined_diff_syncs_once_and_matches_the_cpu() -> None:
    g = torch.Generator().manual_seed(11)
    state = random_state(g)
    gpu, cpu = StateTracker(), StateTracker()
    gpu.reset({k: v.cuda() for k, v in state.items()})
    cpu.reset(state)
    for _ in range(3):
        state = step(state, g)
        on_gpu = {k: v.cuda() for k, v in state.items()}
        diffs: list[StateDiff] = []
        assert syncs_during(functools.partial(record, diffs, gpu.diff, on_gpu)) == 1
        assert_same_diff(diffs[0], cpu.diff(state))


def record(into: list[Any], fn: Callable[[Any], Any], arg: Any) -> None:
    into.append(fn(arg))
