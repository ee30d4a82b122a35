"""`tensor_stats.host_stats`: the statistics of a host tensor too large for the joined path."""

from __future__ import annotations

import pytest
import torch

from modscope.core.tensor_stats import host_stats


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


def test_a_non_finite_element_leaves_it_to_the_other_path() -> None:
    x = _values("no zeros")
    x[4] = float("nan")
    assert host_stats(x) is None
