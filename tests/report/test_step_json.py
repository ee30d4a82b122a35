"""`report.step_json.step_line`: the same text as `dumps(record.to_json())`, written faster."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math

import numpy
import pytest
import torch
from torch import nn

from modscope.core.contract.steps import StateDiff, StepRecord
from modscope.core.contract.tensors import TensorSummary
from modscope.core.session import Session
from modscope.core.stats.summary import summarize
from modscope.report import step_json
from modscope.report.common import dumps
from modscope.report.step_json import step_line


def _record(state: dict[str, TensorSummary], grads: dict[str, TensorSummary | None]) -> StepRecord:
    diff = StateDiff(
        counters=(),
        changed=("a",),
        unchanged=(),
        added=(),
        removed=(),
        max_abs_delta={"a": math.nan},
        rel_change={"a": None},
    )
    return StepRecord(1, "train", math.inf, None, state, grads, diff)


def _tensors() -> dict[str, torch.Tensor]:
    big = torch.randn(40, 30)
    big[0, 0] = math.nan
    return {
        "plain": torch.randn(600),
        "nan and inf": big.masked_fill(big > 2, math.inf),
        "few values": torch.tensor([1.0, math.nan, -0.0]),
        "ints": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "bools": torch.tensor([True, False]),
        "complex": torch.randn(3, dtype=torch.complex64),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
        "sparse": torch.eye(30).to_sparse(),
        "meta": torch.empty(4, 4, device="meta"),
        "half": torch.randn(700).half(),
        "all nan": torch.full((600,), math.nan),
    }


def test_summaries_of_every_kind_are_written_as_dumps_writes_them() -> None:
    torch.manual_seed(0)
    summaries = {name: summarize(t) for name, t in _tensors().items()}
    state = {f"model.{name}": s for name, s in summaries.items()}
    grads: dict[str, TensorSummary | None] = {"model.plain": summaries["plain"], "none": None}
    record = _record(state, grads)
    assert step_line(record) == dumps(record.to_json())


@pytest.mark.parametrize(
    "changes",
    [
        {"note": 'quote " backslash \\ and \u2028 line separator \x9b'},
        {"grad_fn": "AddBackward0", "layout": "sparse_csr"},
        {"norm": 1e300, "min": -0.0, "max": 5e-324, "mean": 1.0, "std": None},
        {"norm": math.inf, "min": -math.inf, "max": math.nan},
        {"norm": 1e308, "max": 1e308, "mean": 1e308},  # each finite, their sum not
        {"mean": numpy.float64(0.5)},  # a float subclass
        {"nan": True},  # not an int: written by json itself
        {"shape": ()},
        {"values": (1e300, -0.0, 5e-324, math.inf, -math.nan, 7, True)},  # every kind `json` writes
        {"values": (numpy.float64(0.5), 1.0)},  # a float subclass: written by json itself
        {"values": ()},
    ],
)
def test_unusual_fields_are_written_as_dumps_writes_them(changes: dict[str, object]) -> None:
    base = summarize(torch.randn(600))
    s = dataclasses.replace(base, **changes)  # type: ignore[arg-type]
    record = _record({"k\x7f\u00e9": s, 'with "quotes"': base}, {"g": s})
    assert step_line(record) == dumps(record.to_json())


def test_a_skipped_step_is_written_as_dumps_writes_it() -> None:
    base = summarize(torch.randn(600))
    record = dataclasses.replace(_record({"k": base}, {"g": base}), skipped=True)
    line = step_line(record)
    assert line == dumps(record.to_json())
    assert line.endswith(', "skipped": true}')
    assert '"skipped"' not in step_line(_record({"k": base}, {"g": base}))


def test_a_real_run_writes_the_same_lines() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    session = Session.from_objects(
        model,
        inputs=torch.randn(16, 4),
        loss_fn=lambda out: out.pow(2).mean(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
    )
    for _ in range(2):
        record = session.run_iteration().record
        assert record is not None
        assert step_line(record) == dumps(record.to_json())


def test_a_record_of_many_pieces_is_written_as_one_line_as_dumps_writes_it() -> None:
    # More keys than one piece holds (`PIECE_SUMMARIES`), with a key that must be escaped for a
    # terminal in the second piece and a None gradient on a piece's border.
    torch.manual_seed(0)
    count = 2 * step_json.PIECE_SUMMARIES + 3
    state = {f"blocks.{i}.weight": summarize(torch.randn(i % 20 + 1)) for i in range(count)}
    state["blocks[\x1b]\u0085.bias"] = summarize(torch.randn(3))
    grads: dict[str, TensorSummary | None] = dict(state)
    grads[f"blocks.{step_json.PIECE_SUMMARIES - 1}.weight"] = None
    record = _record(state, grads)
    expected = dumps(record.to_json())
    assert step_line(record) == expected
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        step_json.write_step(record)
    assert out.getvalue() == expected + "\n"
    assert "\x1b" not in out.getvalue() and "\\u001b" in out.getvalue()
