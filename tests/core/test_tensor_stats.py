"""`tensor_stats.host_stats`: the statistics of a host tensor too large for the joined path."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from modscope.core.contract.tensors import TensorSummary
from modscope.core.stats.tensor_stats import build_summary, facts_of, host_stats


def _values(kind: str) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(1000, dtype=torch.float64)
    if kind == "some zeros":
        x[::7] = 0.0
    elif kind == "negative zeros":
        x[3] = -0.0
        x[500] = 0.0
    elif kind == "positive":
        x = x.abs() + 1.0
    elif kind == "negative":
        x = -x.abs() - 1.0
    elif kind == "positive with a zero":
        x = x.abs()
        x[10] = 0.0
    return x


@pytest.mark.parametrize(
    "kind, zeros",
    [
        ("no zeros", 0),
        ("some zeros", 143),
        ("negative zeros", 2),
        ("positive", 0),
        ("negative", 0),
        ("positive with a zero", 1),
    ],
)
def test_nonzero_elements_are_counted_exactly(kind: str, zeros: int) -> None:
    x = _values(kind)
    stats = host_stats(x)
    assert stats is not None
    assert stats.nonzero == int(torch.count_nonzero(x)) == x.numel() - zeros
    transposed = host_stats(x.view(40, 25).t())  # not contiguous: the same count
    assert transposed is not None and transposed.nonzero == stats.nonzero


def test_a_non_finite_element_leaves_it_to_the_other_path() -> None:
    x = _values("no zeros")
    x[4] = float("nan")
    assert host_stats(x) is None


def test_a_built_summary_is_a_whole_frozen_tensor_summary() -> None:
    x = torch.tensor([[1.0, -2.0], [0.0, 4.0]])
    stats = host_stats(x)
    assert stats is not None
    summary = build_summary(facts_of(x), stats, x.numel(), x.reshape(-1).tolist())
    expected = TensorSummary(
        shape=(2, 2),
        dtype="float32",
        device="cpu",
        numel=4,
        norm=stats.norm,
        min=-2.0,
        max=4.0,
        mean=0.75,
        std=math.sqrt(stats.m2 / 3),
        zeros=1,
        values=(1.0, -2.0, 0.0, 4.0),
    )
    assert stats.norm == pytest.approx(math.sqrt(21.0))
    assert summary == expected and hash(summary) == hash(expected)
    assert repr(summary) == repr(expected)
    assert dataclasses.replace(summary, nan=1).nan == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.nan = 2  # type: ignore[misc]
