"""`core.filled`: frozen dataclasses made without their `__init__` equal those it makes."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass

import pytest

from modscope.core.contract.tensors import TensorSummary
from modscope.core.filled import slotted_maker
from modscope.core.stats.tensor_stats import _new_summary

FIELDS = {
    "shape": (2, 2),
    "dtype": "float32",
    "device": "cpu",
    "numel": 4,
    "norm": 2.0,
    "min": -1.0,
    "max": 1.0,
    "mean": 0.0,
    "std": 1.1547005383792515,
    "nan": 0,
    "inf": 0,
    "zeros": 0,
    "values": (1.0, -1.0, 1.0, -1.0),
    "layout": "strided",
    "requires_grad": True,
    "grad_fn": None,
    "note": None,
}


def test_a_summary_made_fast_is_the_one_init_makes_slotted_and_frozen() -> None:
    made = _new_summary(**FIELDS)
    assert _new_summary is not TensorSummary  # the fast path is the one taken
    assert type(made) is TensorSummary
    assert made == TensorSummary(**FIELDS)
    assert not hasattr(made, "__dict__")  # slotted: a third of the memory
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.norm = 3.0  # type: ignore[misc]
    assert dataclasses.replace(made, note="x").note == "x"
    assert pickle.loads(pickle.dumps(made)) == made
    assert made.to_json()["values"] == [1.0, -1.0, 1.0, -1.0]


def test_a_class_the_maker_cannot_make_is_made_by_its_own_init() -> None:
    @dataclass(frozen=True)
    class WithDict:
        a: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    assert slotted_maker(WithDict) is WithDict
    assert slotted_maker(Checked) is Checked
    with pytest.raises(ValueError):
        slotted_maker(Checked)(a=-1)
