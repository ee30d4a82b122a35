"""Property-based tests (hypothesis): tensor summaries, the state diff and the JSON writer hold
for random shapes, dtypes (bf16, half, float8, complex, bool, int, wide unsigned, quantized, raw
bits and sub-byte), NaN/Inf patterns, empty and 0-d tensors, and key sets that change between
steps; the JSON is always strict."""

from __future__ import annotations

import itertools
import json
import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modscope.core.stats.statediff import StateTracker
from modscope.core.stats.summary import summarize, summarize_many
from modscope.core.stats.tensor_stats import bits_of, has_values
from modscope.report.common import dumps

FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)
UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)
QUANTIZED = (torch.qint8, torch.quint8, torch.qint32, torch.quint4x2)
RAW = (torch.bits8, torch.bits16, torch.int4, torch.uint2)
"""Dtypes with no arithmetic at all: summaries have no statistics, the diff compares bits."""
DTYPES = (
    *FLOATS,
    *FLOAT8,
    torch.complex64,
    torch.int64,
    torch.int32,
    torch.uint8,
    *UNSIGNED,
    torch.bool,
    *QUANTIZED,
    *RAW,
)
SPECIAL = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e30, -1e-30)

PROFILE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    """A tensor of any shape (0-d and empty included) and dtype, finite values sprinkled with
    NaN, +-Inf and signed zeros where the dtype has them."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    numel = math.prod(shape)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if dtype is torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype in RAW:
        width = torch.int16 if dtype.itemsize == 2 else torch.uint8
        return torch.randint(0, 4, shape, generator=gen).to(width).view(dtype)
    if dtype in QUANTIZED:
        values = torch.randn(shape, generator=gen)
        return torch.quantize_per_tensor(values, 0.1, 3 if dtype is not torch.qint32 else 0, dtype)
    if not (dtype.is_floating_point or dtype.is_complex):
        return torch.randint(0, 100, shape, generator=gen).to(dtype)
    t = torch.randn(shape, generator=gen, dtype=torch.float64) * draw(st.sampled_from((1, 1e3)))
    flat = t.reshape(-1)
    for index in draw(st.lists(st.integers(0, max(numel - 1, 0)), max_size=4)) if numel else ():
        flat[index] = draw(st.sampled_from(SPECIAL))
    if dtype.is_complex:
        return torch.complex(t, t.flip(list(range(t.dim())))).to(dtype)
    return t.to(dtype)


def reference_counts(t: torch.Tensor) -> tuple[int, int]:
    if not (t.is_floating_point() or t.is_complex()) or not has_values(t.dtype):
        return 0, 0
    v = t.detach().to(torch.complex128 if t.is_complex() else torch.float64)
    parts = (v.real, v.imag) if t.is_complex() else (v,)
    nan = int(sum(p.isnan() for p in parts).bool().sum()) if t.numel() else 0
    inf = int(sum(p.isinf() for p in parts).bool().sum()) if t.numel() else 0
    return nan, inf


@PROFILE
@given(tensors())
def test_a_summary_describes_any_tensor_and_writes_strict_json(t):
    s = summarize(t)
    assert s.shape == tuple(t.shape) and s.numel == t.numel()
    assert s.dtype == str(t.dtype).removeprefix("torch.")
    nan, inf = reference_counts(t)
    assert (s.nan, s.inf) == (nan, inf)
    if s.min is not None and s.max is not None:
        assert s.min <= s.max
    text = dumps(s.to_json())
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert back["numel"] == t.numel() and back["shape"] == list(t.shape)
    if t.numel() <= 16 and (has_values(t.dtype) or t.is_quantized):
        assert len(back["values"]) == t.numel()
    if not (has_values(t.dtype) or t.is_quantized):
        assert s.min is None and s.norm is None and "no arithmetic" in s.note


@PROFILE
@given(st.lists(tensors(), min_size=1, max_size=6))
def test_batched_summaries_equal_one_by_one(ts):
    # repr, not ==: a NaN in `values` is not equal to itself.
    assert repr(summarize_many(ts)) == repr([summarize(t) for t in ts])


def copy_of(t: torch.Tensor) -> torch.Tensor:
    """A copy of `t` (`int4` and `quint4x2` have no `clone`)."""
    if t.is_quantized:
        return torch.quantize_per_tensor(t.dequantize(), t.q_scale(), t.q_zero_point(), t.dtype)
    if not has_values(t.dtype):
        return bits_of(t).clone().view(t.dtype)
    return t.clone()


@st.composite
def state_steps(draw: st.DrawFn) -> list[dict[str, torch.Tensor]]:
    """Two or three `state_dict`s in a row: keys come and go, values change or stay, shapes
    may change, NaN may appear."""
    pool = [f"k{i}" for i in range(6)]
    steps = []
    previous: dict[str, torch.Tensor] = {}
    for _ in range(draw(st.integers(2, 3))):
        keys = draw(st.lists(st.sampled_from(pool), unique=True, max_size=6))
        state = {}
        for key in keys:
            keep = key in previous and draw(st.booleans())
            state[key] = copy_of(previous[key]) if keep else draw(tensors())
        steps.append(state)
        previous = state
    return steps


@settings(PROFILE, max_examples=120)
@given(state_steps())
def test_the_state_diff_says_exactly_what_changed(steps):
    tracker = StateTracker()
    tracker.reset(steps[0])
    for before, after in itertools.pairwise(steps):
        diff = tracker.diff(after)
        assert set(diff.added) == set(after) - set(before)
        assert set(diff.removed) == set(before) - set(after)
        both = [k for k in after if k in before]
        assert set(diff.changed) | set(diff.unchanged) == set(both)
        for key in both:
            old, new = before[key], after[key]
            same = old.shape == new.shape and old.dtype == new.dtype and equal(old, new)
            if key in diff.changed_elements:
                assert same is False
                assert diff.changed_elements[key] == int((bits_of(old) != bits_of(new)).sum())
                if not old.is_quantized:
                    assert diff.max_abs_delta[key] is None and diff.rel_change[key] is None
            if not same and (old.shape != new.shape or old.dtype != new.dtype):
                assert key in diff.changed  # another tensor under the same key
            elif not same:
                # NaN != NaN: equal() calls such tensors different; so may the diff.
                has_nan = (old.is_floating_point() or old.is_complex()) and bool(old.isnan().any())
                assert key in diff.changed or has_nan
            elif same:
                assert key in diff.unchanged
        text = dumps(diff.to_json())
        assert "NaN" not in text and "Infinity" not in text


def equal(old: torch.Tensor, new: torch.Tensor) -> bool:
    """Whether two tensors of one shape and dtype hold the same elements (bit by bit where the
    dtype has no arithmetic; NaN unequal to itself elsewhere)."""
    if old.is_quantized:
        params = (old.q_scale(), old.q_zero_point()) == (new.q_scale(), new.q_zero_point())
        return params and torch.equal(old.int_repr(), new.int_repr())
    if not has_values(old.dtype):
        return torch.equal(bits_of(old), bits_of(new))
    if old.is_complex():
        old, new = torch.view_as_real(old), torch.view_as_real(new)
    if old.dtype in FLOAT8:
        old, new = old.float(), new.float()
    return torch.equal(old, new)


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(JSONISH)
def test_the_json_writer_round_trips_any_plain_value_on_one_line(value):
    text = dumps(value)
    assert "\n" not in text
    assert json.loads(text) == value
