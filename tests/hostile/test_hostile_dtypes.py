"""Hostile dtypes: state of any dtype torch can hold (float8, quantized, raw bits, sub-byte and
wide unsigned integers, complex, bool, nested) is summarised and diffed; where torch has no
arithmetic the diff compares bits (exact `changed` and count, no deltas); the JSON stays
strict through `run --json`, `--layers` and `--record`/`replay`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from modscope.cli import main
from modscope.core.session import Session
from modscope.core.stats.statediff import StateTracker
from modscope.core.stats.summary import summarize

# Quantized tensors are deprecated in torch 2.13, strided nested ones a prototype: both warn.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _raw(dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    width = WIDTH[dtype.itemsize]
    return lambda: torch.tensor([3, 5, 7, 9], dtype=width).view(dtype)


def _bump_raw(b: torch.Tensor) -> torch.Tensor:
    bits = b.view(WIDTH[b.element_size()]).clone()
    bits[1] += 1
    return bits.view(b.dtype)


def _quantized(dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    values = torch.tensor([0.2, 0.4, 0.6, 0.8])
    return lambda: torch.quantize_per_tensor(values, 0.1, 0, dtype)


def _bump_quantized(b: torch.Tensor) -> torch.Tensor:
    values = b.dequantize() + torch.tensor([0.0, 0.1, 0.0, 0.0])
    return torch.quantize_per_tensor(values, b.q_scale(), b.q_zero_point(), b.dtype)


def _float8(dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    return lambda: torch.tensor([0.5, 1.0, 2.0, 4.0]).to(dtype)


def _bump_float8(b: torch.Tensor) -> torch.Tensor:
    return (b.float() * torch.tensor([1.0, 2.0, 1.0, 1.0])).to(b.dtype)


class WithBuffer(nn.Module):
    """A Linear beside a buffer that `bump` replaces at each forward (None: left alone)."""

    def __init__(self, make: Callable[[], torch.Tensor], bump: Callable | None) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.register_buffer("buf", make())
        self.bump = bump

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bump is not None:
            self.buf = self.bump(self.buf)
        return self.lin(x).pow(2).mean()


def session(make: Callable[[], torch.Tensor], bump: Callable | None) -> Session:
    torch.manual_seed(0)
    model = WithBuffer(make, bump)
    return Session.from_objects(
        model,
        inputs=torch.randn(8, 4),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        origin=__file__,
    )


RAW = [torch.bits8, torch.bits16, torch.bits1x8, torch.bits4x2, torch.int4, torch.uint3]
RAW.append(torch.float4_e2m1fn_x2)
QUANTIZED = [torch.qint8, torch.quint8, torch.qint32, torch.quint4x2]
FLOAT8 = [torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz]


@pytest.mark.parametrize("dtype", RAW, ids=str)
def test_a_dtype_without_arithmetic_is_diffed_bit_by_bit(dtype):
    s = session(_raw(dtype), _bump_raw)
    records = [s.run_iteration() for _ in range(2)]
    assert [r.error for r in records] == [None, None]
    assert s.step == 2
    diff = records[1].record.diff
    assert "buf" in diff.changed and "lin.weight" in diff.changed
    assert diff.changed_elements == {"buf": 1}
    assert diff.max_abs_delta["buf"] is None and diff.rel_change["buf"] is None
    summary = records[1].record.state["buf"]
    assert summary.dtype == str(dtype).removeprefix("torch.") and summary.shape == (4,)
    assert summary.min is None and "no arithmetic" in summary.note
    assert "changed_elements" in records[1].record.to_json()["diff"]


@pytest.mark.parametrize("dtype", RAW, ids=str)
def test_an_unchanged_raw_buffer_is_unchanged(dtype):
    s = session(_raw(dtype), None)
    record = [s.run_iteration() for _ in range(2)][1].record
    assert "buf" in record.diff.unchanged and record.diff.changed_elements == {}


@pytest.mark.parametrize("dtype", QUANTIZED, ids=str)
def test_a_quantized_buffer_is_compared_by_its_integers_with_dequantized_deltas(dtype):
    s = session(_quantized(dtype), _bump_quantized)
    results = [s.run_iteration() for _ in range(2)]
    assert [r.error for r in results] == [None, None]
    diff = results[1].record.diff
    assert diff.changed_elements == {"buf": 1}
    assert diff.max_abs_delta["buf"] == pytest.approx(0.1, rel=1e-5)
    summary = results[1].record.state["buf"]
    assert summary.note.startswith("quantized") and summary.max == pytest.approx(0.8, rel=1e-5)


@pytest.mark.parametrize("dtype", FLOAT8, ids=str)
def test_a_float8_buffer_is_diffed_through_float32(dtype):
    s = session(_float8(dtype), _bump_float8)
    results = [s.run_iteration() for _ in range(2)]
    assert [r.error for r in results] == [None, None]
    diff = results[1].record.diff
    # 1.0 -> 2.0 -> 4.0: every value exact in each float8 format.
    assert diff.max_abs_delta["buf"] == 2.0 and "buf" not in diff.changed_elements
    assert results[1].record.state["buf"].values == (0.5, 4.0, 2.0, 4.0)


@pytest.mark.parametrize("layout", [torch.strided, torch.jagged], ids=str)
def test_a_nested_buffer_is_summarised_and_diffed(layout):
    def make():
        return torch.nested.nested_tensor(
            [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0, 5.0])], layout=layout
        )

    def bump(b):
        return torch.nested.nested_tensor([c * 2 for c in b.unbind()], layout=layout)

    s = session(make, bump)
    results = [s.run_iteration() for _ in range(2)]
    assert [r.error for r in results] == [None, None]
    record = results[1].record
    assert record.state["buf"].shape == (2, 3)
    assert record.state["buf"].values == (4.0, 8.0, 12.0, 16.0, 20.0)
    assert "nested" in record.state["buf"].note
    assert record.diff.max_abs_delta["buf"] == 10.0  # 10 -> 20


def test_a_uint64_counter_past_2_53_is_changed_exactly():
    big = 2**60
    tracker = StateTracker()
    tracker.reset({"count": torch.tensor([big], dtype=torch.uint64)})
    diff = tracker.diff({"count": torch.tensor([big + 1], dtype=torch.uint64)})
    assert diff.changed == ("count",)
    for dtype in (torch.int64, torch.uint64):
        # Eight keys of one dtype: compared joined, in one buffer.
        state = {f"k{i}": torch.full((16,), big, dtype=dtype) for i in range(8)}
        tracker.reset(state)
        state["k3"] = torch.full((16,), big + 1, dtype=dtype)
        assert tracker.diff(state).changed == ("k3",)


@pytest.mark.parametrize(
    "dtype",
    [torch.uint16, torch.uint32, torch.uint64, torch.complex32, torch.complex64, torch.bool],
    ids=str,
)
def test_other_dtypes_summarise_and_diff(dtype):
    t = torch.tensor([1, 0, 1, 1]).to(dtype)
    assert summarize(t).numel == 4
    tracker = StateTracker()
    tracker.reset({"t": t})
    assert tracker.diff({"t": torch.tensor([1, 1, 1, 1]).to(dtype)}).changed == ("t",)


SCRIPT = """\
import torch
from torch import nn

torch.manual_seed(0)


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.register_buffer("f8", torch.tensor([0.5, 1.0]).to(torch.float8_e4m3fn))
        self.register_buffer("b8", torch.tensor([1, 2], dtype=torch.uint8).view(torch.bits8))
        self.register_buffer("i4", torch.tensor([1, 2], dtype=torch.uint8).view(torch.int4))
        self.register_buffer("q8", torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8))
        self.register_buffer(
            "nt", torch.nested.nested_tensor([torch.ones(2), torch.ones(3)], layout=torch.jagged)
        )

    def forward(self, x):
        self.b8 = (self.b8.view(torch.uint8) + 1).view(torch.bits8)
        return self.lin(x).pow(2).mean()


model = M()
inputs = torch.randn(8, 4)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""


def _strict(text: str) -> list[dict]:
    def refuse(token: str) -> None:
        raise ValueError(f"not strict JSON: {token}")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def test_run_json_layers_and_replay_hold_with_exotic_state(tmp_path: Path, capsys):
    script = tmp_path / "exotic.py"
    script.write_text(SCRIPT)
    args = ["run", str(script), "--steps", "3", "--json", "--layers", "--hooks", "all"]
    assert main([*args, "--record", str(tmp_path / "R")]) == 0
    ran = capsys.readouterr().out
    steps = [line for line in _strict(ran) if line["event"] == "step"]
    assert [line["step"] for line in steps] == [1, 2, 3]
    assert steps[-1]["diff"]["changed_elements"] == {"b8": 2}
    assert steps[-1]["diff"]["max_abs_delta"]["b8"] is None
    assert steps[-1]["state"]["f8"]["values"] == [0.5, 1.0]
    assert main(["replay", str(tmp_path / "R"), "--json"]) == 0
    assert capsys.readouterr().out == ran
    assert main(["tree", str(script), "--json"]) == 0
    (root,) = [m for m in _strict(capsys.readouterr().out)[0]["modules"] if m["path"] == ""]
    assert root["buffers"]["nt"]["shape"] == [2, 3]
    assert root["buffers"]["b8"]["dtype"] == "bits8"


STRIDED_NESTED = """\
import torch
from torch import nn

torch.manual_seed(0)


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.register_buffer("nt", torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]))

    def forward(self, x):
        return self.lin(x).pow(2).mean()


model = M()
inputs = torch.randn(8, 4)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""


def test_check_and_run_hold_with_a_strided_nested_buffer(tmp_path: Path, capsys):
    script = tmp_path / "nested.py"
    script.write_text(STRIDED_NESTED)
    assert main(["check", str(script), "--steps", "2", "--json"]) == 0
    assert _strict(capsys.readouterr().out)[0]["steps_run"] == 2
    assert main(["run", str(script), "--steps", "2", "--json", "--hooks", "all"]) == 0
    steps = [line for line in _strict(capsys.readouterr().out) if line["event"] == "step"]
    nested = steps[-1]["state"]["nt"]
    assert nested["shape"] == [2, 3] and nested["values"] == [1.0] * 5


def test_exotic_copies_count_against_the_memory_budget():
    values = torch.randn(10_000)
    ints = torch.quantize_per_tensor(values, 0.1, 0, torch.qint8)  # 10,000 bytes
    state = {"q": ints, "w": torch.randn(4_100)}  # 16,400 bytes of float32
    tracker = StateTracker(budget=20_000)
    tracker.reset(state)
    # The quantized key is copied whole (its integers only), so the float one no longer fits.
    assert tracker.sampled_keys == ("w",)
    values[7] += 0.5
    diff = tracker.diff(
        {"q": torch.quantize_per_tensor(values, 0.1, 0, torch.qint8), "w": state["w"]}
    )
    assert diff.changed == ("q",) and diff.changed_elements == {"q": 1}


def test_a_per_channel_quantized_buffer_diffs_by_its_own_scales():
    values = torch.tensor([[0.5, 1.0], [2.0, 4.0]])
    scales, zeros = torch.tensor([0.5, 0.25]), torch.tensor([0, 1])
    before = torch.quantize_per_channel(values, scales, zeros, 0, torch.qint8)
    after = torch.quantize_per_channel(
        values + torch.tensor([[0, 0], [0, 1.0]]), scales, zeros, 0, torch.qint8
    )
    tracker = StateTracker()
    tracker.reset({"q": before})
    diff = tracker.diff({"q": after})
    assert diff.changed_elements == {"q": 1} and diff.max_abs_delta["q"] == 1.0
