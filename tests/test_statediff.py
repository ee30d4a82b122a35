"""The state_dict diff: per-key changes, deltas, NaN and integer buffers, and a reused copy."""

from __future__ import annotations

import math

import pytest
import torch

from modscope.core.statediff import StateTracker


def test_changed_unchanged_added_removed_with_deltas():
    tracker = StateTracker()
    tracker.reset({"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5]), "gone": torch.zeros(1)})
    diff = tracker.diff(
        {"w": torch.tensor([1.0, 2.5]), "b": torch.tensor([0.5]), "new": torch.ones(3)}
    )
    assert diff.changed == ("w",) and diff.unchanged == ("b",)
    assert diff.added == ("new",) and diff.removed == ("gone",)
    assert diff.max_abs_delta == {"w": pytest.approx(0.5)}
    assert diff.rel_change["w"] == pytest.approx(0.5 / math.sqrt(5.0))


def test_nan_in_both_is_unchanged_and_new_nan_is_a_change():
    tracker = StateTracker()
    tracker.reset({"a": torch.tensor([float("nan"), 1.0]), "b": torch.tensor([1.0])})
    diff = tracker.diff({"a": torch.tensor([float("nan"), 1.0]), "b": torch.tensor([float("nan")])})
    assert diff.unchanged == ("a",) and diff.changed == ("b",)
    assert math.isnan(diff.max_abs_delta["b"])
    assert diff.to_json()["max_abs_delta"]["b"] is None  # strict JSON


def test_integer_and_bool_buffers_and_a_reshaped_key():
    tracker = StateTracker()
    tracker.reset(
        {"n": torch.tensor(3), "mask": torch.tensor([True, False]), "grow": torch.zeros(2)}
    )
    diff = tracker.diff(
        {"n": torch.tensor(4), "mask": torch.tensor([True, False]), "grow": torch.zeros(3)}
    )
    assert diff.changed == ("n", "grow") and diff.unchanged == ("mask",)
    assert diff.max_abs_delta["n"] == 1.0 and diff.max_abs_delta["grow"] is None


def test_the_previous_copy_is_reused_not_reallocated():
    weight = torch.nn.Parameter(torch.randn(64, 64))
    tracker = StateTracker()
    tracker.reset({"w": weight})
    pointer = tracker._previous["w"].data_ptr()
    assert pointer != weight.data_ptr()  # a copy, not the live tensor
    for _ in range(3):
        with torch.no_grad():
            weight.add_(0.1)
        diff = tracker.diff({"w": weight})
        assert diff.changed == ("w",) and diff.max_abs_delta["w"] == pytest.approx(0.1, rel=1e-5)
        assert tracker._previous["w"].data_ptr() == pointer
    assert tracker.diff({"w": weight}).changed == ()


def test_large_tensors_with_infinities_take_the_careful_path():
    base = torch.arange(10_000, dtype=torch.float32)
    base[5] = float("inf")
    tracker = StateTracker()
    tracker.reset({"same_inf": base.clone(), "new_inf": base.clone(), "moved": base.clone()})
    new_inf, moved = base.clone(), base.clone()
    new_inf[7] = float("-inf")
    moved[9] += 0.5
    diff = tracker.diff({"same_inf": base.clone(), "new_inf": new_inf, "moved": moved})
    assert diff.unchanged == ("same_inf",) and diff.changed == ("new_inf", "moved")
    assert diff.max_abs_delta["new_inf"] == float("inf")
    assert diff.max_abs_delta["moved"] == pytest.approx(0.5)
