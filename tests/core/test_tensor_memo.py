"""`core.stats.tensor_memo`: a value per tensor, kept while it is the same unchanged tensor."""

from __future__ import annotations

import torch

from modscope.core.stats.statediff import StateTracker
from modscope.core.stats.tensor_memo import TensorMemo, version_of


def test_a_value_is_kept_while_the_tensor_is_unchanged() -> None:
    memo: TensorMemo[str] = TensorMemo()
    t = torch.zeros(3)
    memo.put(t, "zeros")
    assert memo.get(t) == "zeros"
    t.add_(1)  # changed in place: forgotten
    assert memo.get(t) is None
    memo.put(t, "ones")
    assert memo.get(torch.ones(3)) is None  # an equal tensor is another tensor
    memo.clear()
    assert memo.get(t) is None


def test_a_new_tensor_at_a_freed_tensors_id_is_not_taken_for_it() -> None:
    memo: TensorMemo[int] = TensorMemo()
    t = torch.zeros(2)
    memo.put(t, 1)
    old_id = id(t)
    del t
    u = torch.zeros(2)  # CPython gives a new object of the same size the freed id at once
    assert id(u) == old_id
    assert memo.get(u) is None


def test_an_inference_tensor_is_never_kept() -> None:
    memo: TensorMemo[int] = TensorMemo()
    with torch.inference_mode():
        t = torch.zeros(2)
    assert version_of(t) is None
    memo.put(t, 1)
    assert memo.get(t) is None


def test_a_large_inference_tensor_is_diffed_chunk_by_chunk() -> None:
    # The chunked diff keeps the statistics it took for the summary: an inference tensor
    # keeps no version counter, and the diff must not fail on it.
    with torch.inference_mode():
        table = torch.randn(200_000)
    tracker = StateTracker()
    tracker.reset({"table": table})
    with torch.inference_mode():
        table[7] += 1.0
    diff = tracker.diff({"table": table})
    assert diff.changed == ("table",)
    assert diff.max_abs_delta["table"] == 1.0
