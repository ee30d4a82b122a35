"""Tensor summaries (modscope.core.stats.summary) and their formatting for people
(modscope.core.contract.fmt)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import namedtuple
from typing import Any

import pytest
import torch

from modscope.core.contract.fmt import (
    format_bytes,
    format_count,
    format_number,
    format_shape,
    sparkline,
    summary_line,
)
from modscope.core.contract.tensors import TensorSummary
from modscope.core.stats import summary
from modscope.core.stats.summary import (
    capture,
    capture_value,
    first_tensor,
    flatten_tensors,
    resolve,
    summarize,
    summarize_many,
    summarize_value,
)

NAN, INF = math.nan, math.inf


@pytest.fixture(params=["host", "copied", "reduced"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the CPU's finish-at-once path and on both paths a CUDA tensor can take:
    copied whole (small tensors) or reduced on its device (large ones)."""
    if request.param != "host":
        monkeypatch.setattr(summary, "_HOST_DEVICE_TYPES", frozenset())
    if request.param == "reduced":
        monkeypatch.setattr(summary, "COPY_LIMIT", 0)
    return request.param


def reference(values: torch.Tensor) -> dict[str, float]:
    """float64 statistics of the finite elements, computed the slow obvious way."""
    v = values.detach().to(torch.float64).reshape(-1)
    v = v[torch.isfinite(v)]
    return {
        "min": v.min().item(),
        "max": v.max().item(),
        "mean": v.mean().item(),
        "std": v.std().item(),
        "norm": v.norm().item(),
    }


def assert_stats(s: TensorSummary, expected: dict[str, float], rel: float = 1e-6) -> None:
    for name, value in expected.items():
        assert getattr(s, name) == pytest.approx(value, rel=rel, abs=1e-12), name


# -- the numbers ---------------------------------------------------------------------------


def test_known_tensor_exact_values(path: str) -> None:
    s = summarize(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert (s.shape, s.dtype, s.device, s.numel, s.layout) == ((4,), "float32", "cpu", 4, "strided")
    assert (s.min, s.max, s.mean) == (1.0, 4.0, 2.5)
    assert s.std == pytest.approx(1.2909944, rel=1e-6)  # unbiased, like torch.std
    assert s.norm == pytest.approx(5.4772256, rel=1e-6)
    assert (s.nan, s.inf, s.zeros) == (0, 0, 0)
    assert s.values == (1.0, 2.0, 3.0, 4.0)


def test_random_tensor_matches_float64_reference(path: str) -> None:
    t = torch.randn(120, 100, generator=torch.Generator().manual_seed(0)) * 3 + 1
    s = summarize(t)
    assert_stats(s, reference(t))
    assert s.values is None  # more than 16 elements


def test_large_mean_small_spread_keeps_its_digits(path: str) -> None:
    # sum(x^2) - n*mean^2 would cancel almost every digit here.
    t = 1000 + torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 1e-2
    assert_stats(summarize(t), reference(t), rel=1e-4)


def test_nan_and_inf_are_counted_and_stats_skip_them(path: str) -> None:
    t = torch.tensor([1.0, NAN, 3.0, INF, -INF, 4.0, NAN, 0.0])
    s = summarize(t)
    assert (s.nan, s.inf, s.zeros) == (2, 2, 1)
    assert_stats(s, reference(t))
    assert (s.min, s.max) == (0.0, 4.0)


def test_mostly_nan_tensor_keeps_accurate_stats(path: str) -> None:
    t = torch.full((20_000,), NAN)
    t[:5] = torch.tensor([1000.0, 1001.0, 1002.0, 1003.0, 1004.0])
    s = summarize(t)
    assert s.nan == 19_995
    assert_stats(s, reference(t))


def test_all_nonfinite_has_counts_and_no_stats(path: str) -> None:
    s = summarize(torch.tensor([NAN, INF, -INF]))
    assert (s.nan, s.inf) == (1, 2)
    assert (s.min, s.max, s.mean, s.std, s.norm) == (None,) * 5


def test_single_element_has_no_std(path: str) -> None:
    # torch.std of one element is nan; a std that does not exist is None.
    s = summarize(torch.tensor([2.5]))
    assert (s.min, s.max, s.mean, s.norm, s.std) == (2.5, 2.5, 2.5, 2.5, None)


def test_zero_dim_tensor(path: str) -> None:
    s = summarize(torch.tensor(-3.5))
    assert (s.shape, s.numel, s.values, s.mean, s.norm, s.std) == ((), 1, (-3.5,), -3.5, 3.5, None)


def test_empty_tensor_has_no_stats(path: str) -> None:
    s = summarize(torch.empty(0, 3))
    assert (s.shape, s.numel, s.values, s.zeros) == ((0, 3), 0, (), 0)
    assert (s.min, s.max, s.mean, s.std, s.norm) == (None,) * 5
    assert not s.all_zero


def test_zeros_are_counted(path: str) -> None:
    s = summarize(torch.zeros(5, 7))
    assert s.zeros == 35 and s.all_zero
    assert (s.min, s.max, s.std, s.norm) == (0.0, 0.0, 0.0, 0.0)


def test_bool_tensor(path: str) -> None:
    s = summarize(torch.tensor([True, False, True, True]))
    assert s.dtype == "bool"
    assert s.values == (True, False, True, True)
    assert all(type(v) is bool for v in s.values)
    assert (s.min, s.max, s.mean, s.zeros) == (0.0, 1.0, 0.75, 1)
    assert s.norm == pytest.approx(math.sqrt(3))


def test_integer_tensor_values_are_exact_ints(path: str) -> None:
    s = summarize(torch.tensor([2**60 + 1, -7, 0], dtype=torch.int64))
    assert s.dtype == "int64"
    assert s.values == (2**60 + 1, -7, 0)
    assert all(type(v) is int for v in s.values)
    assert (s.min, s.max, s.zeros) == (-7.0, float(2**60 + 1), 1)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int32])
def test_small_integer_dtypes(path: str, dtype: torch.dtype) -> None:
    s = summarize(torch.arange(10, dtype=dtype))
    assert (s.dtype, s.values, s.mean) == (str(dtype)[6:], tuple(range(10)), 4.5)
    assert s.std == pytest.approx(math.sqrt(82.5 / 9))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes(path: str, dtype: torch.dtype) -> None:
    t = torch.linspace(-1, 3, 40, dtype=torch.float64).to(dtype)
    s = summarize(t)
    assert s.dtype == str(dtype).removeprefix("torch.")
    # Statistics of the stored (rounded) values, not rounded again to the low precision.
    assert_stats(s, reference(t))


def test_half_values_are_python_floats(path: str) -> None:
    s = summarize(torch.tensor([0.1, NAN], dtype=torch.float16))
    assert s.values[0] == pytest.approx(0.1, rel=1e-3) and math.isnan(s.values[1])
    assert all(type(v) is float for v in s.values)
    assert s.nan == 1


def test_float8_tensor(path: str) -> None:
    dtype = getattr(torch, "float8_e4m3fn", None)
    if dtype is None:
        pytest.skip("this torch has no float8")
    s = summarize(torch.tensor([1.0, 0.5, -2.0]).to(dtype))
    assert (s.dtype, s.values, s.min, s.max) == ("float8_e4m3fn", (1.0, 0.5, -2.0), -2.0, 1.0)


def test_complex_stats_are_over_magnitudes(path: str) -> None:
    t = torch.tensor([3 + 4j, 0j, -1j])
    s = summarize(t)
    assert s.values == (3 + 4j, 0j, -1j)
    assert all(type(v) is complex for v in s.values)
    assert (s.min, s.max, s.zeros) == (0.0, 5.0, 1)
    assert s.mean == pytest.approx(2.0)
    assert s.norm == pytest.approx(math.sqrt(25 + 0 + 1))  # sqrt(sum |z|^2)


def test_conjugate_view_values_are_resolved(path: str) -> None:
    s = summarize(torch.tensor([1 + 2j]).conj())
    assert s.values == (1 - 2j,)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.arange(12.0).reshape(3, 4).t(),
        lambda: torch.arange(12.0).reshape(3, 4)[:, ::2],
        lambda: torch.arange(3.0).expand(4, 3),
        lambda: torch.arange(24.0).reshape(2, 3, 4).permute(2, 0, 1),
    ],
    ids=["transposed", "strided-slice", "expanded", "permuted"],
)
def test_views_are_summarized_in_row_major_order(path: str, make: Any) -> None:
    t = make()
    assert not t.is_contiguous()
    s = summarize(t)
    dense = t.contiguous()
    assert s.shape == tuple(t.shape) and s.numel == t.numel()
    assert_stats(s, reference(dense))
    if t.numel() <= 16:
        assert s.values == tuple(dense.reshape(-1).tolist())


def test_meta_tensor_has_no_data_and_does_not_crash(path: str) -> None:
    s = summarize(torch.empty(3, 4, device="meta"))
    assert (s.shape, s.numel, s.device, s.note) == ((3, 4), 12, "meta", "meta: no data")
    assert (s.min, s.mean, s.norm, s.values) == (None, None, None, None)


def test_sparse_coo_stats_over_stored_values(path: str) -> None:
    indices = torch.tensor([[0, 1, 1], [2, 0, 2]])
    values = torch.tensor([3.0, 4.0, 0.0])
    t = torch.sparse_coo_tensor(indices, values, (2, 3), check_invariants=True)
    s = summarize(t)
    assert (s.layout, s.shape, s.numel) == ("sparse_coo", (2, 3), 6)
    assert (s.min, s.max) == (0.0, 4.0)
    assert s.norm == pytest.approx(5.0)
    assert s.zeros == 4  # three implicit zeros and one stored
    assert s.values == (0.0, 0.0, 3.0, 4.0, 0.0, 0.0)
    assert "3 stored values" in s.note


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_csr_and_empty_sparse(path: str) -> None:
    s = summarize(torch.eye(3).to_sparse_csr())
    assert (s.layout, s.numel, s.zeros, s.mean) == ("sparse_csr", 9, 6, 1.0)
    no_index = torch.zeros(2, 0, dtype=torch.long)
    empty = summarize(torch.sparse_coo_tensor(no_index, [], (3, 3), check_invariants=True))
    assert (empty.numel, empty.zeros, empty.mean) == (9, 9, None)
    assert empty.all_zero


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_quantized_tensor(path: str) -> None:
    q = torch.quantize_per_tensor(torch.tensor([0.5, 1.0, 0.0]), 0.1, 0, torch.quint8)
    s = summarize(q)
    assert (s.dtype, s.values, s.zeros) == ("quint8", (0.5, 1.0, 0.0), 1)
    assert s.mean == pytest.approx(0.5)
    assert "quantized" in s.note


def test_grad_facts(path: str) -> None:
    leaf = torch.ones(3, requires_grad=True)
    s_leaf, s_sum = summarize_many([leaf, leaf + 1])
    assert (s_leaf.requires_grad, s_leaf.grad_fn) == (True, None)
    assert (s_sum.requires_grad, s_sum.grad_fn) == (True, "AddBackward0")
    assert s_sum.values == (2.0, 2.0, 2.0)


def test_a_failing_reduction_gives_a_note_not_an_exception(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("aminmax: not for this tensor type\nmore detail")

    monkeypatch.setattr(torch, "aminmax", refuse)
    s = summarize(torch.ones(3))
    assert (s.shape, s.mean) == ((3,), None)
    assert s.note == "no statistics: aminmax: not for this tensor type"


# -- the observer rule ---------------------------------------------------------------------


def test_values_and_stats_are_fixed_at_capture(path: str) -> None:
    t = torch.tensor([1.0, 2.0, 3.0])
    pending = capture(t)
    t.add_(100)
    (s,) = resolve([pending])
    assert s.values == (1.0, 2.0, 3.0)
    assert (s.min, s.max, s.mean) == (1.0, 3.0, 2.0)


def test_capture_consumes_no_random_numbers(path: str) -> None:
    tensors = [torch.randn(1000), torch.tensor([NAN, 1.0]), torch.arange(5)]
    before = torch.get_rng_state()
    summarize_many(tensors)
    assert torch.equal(before, torch.get_rng_state())


def test_capture_adds_no_autograd_history(path: str) -> None:
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = w * 2
    grad_fn, version = y.grad_fn, y._version
    pending = capture(y)
    assert y.grad_fn is grad_fn and y._version == version
    assert all(not p.requires_grad for p in pending._on_device())
    (y**2).sum().backward()
    assert torch.equal(w.grad, torch.tensor([8.0, -16.0, 24.0]))
    grad_before = w.grad.clone()
    s = summarize(w)
    assert torch.equal(w.grad, grad_before) and w.grad_fn is None
    assert s.requires_grad and w._version == 0


def test_capture_works_under_grad_mode_and_inference_mode(path: str) -> None:
    with torch.inference_mode():
        t = torch.ones(4)
        assert summarize(t).mean == 1.0


# -- batching ------------------------------------------------------------------------------


def test_resolve_keeps_order_and_none(path: str) -> None:
    out = summarize_many([torch.tensor([1.0]), None, torch.tensor([True]), None])
    assert out[1] is None and out[3] is None
    assert out[0].values == (1.0,) and out[2].values == (True,)


def test_deferred_resolve_is_one_transfer_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "_HOST_DEVICE_TYPES", frozenset())
    big = torch.randn(summary.COPY_LIMIT + 1)  # reduced on its device; the others are copied
    tensors = [big, torch.tensor([1 + 1j]), torch.arange(3), torch.tensor([NAN])]
    pending = summary.capture_many([*tensors, None, torch.empty(2, device="meta")])
    assert pending[0].parts and pending[1].data is not None
    copies = []
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        copies.append(self.numel())
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    out = resolve(pending)
    assert len(copies) == 1
    assert out[1].values == (1 + 1j,) and out[2].values == (0, 1, 2) and out[3].nan == 1
    assert out[4] is None and out[5].note == "meta: no data"


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_cases() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    big = torch.randn(1000, 1000, generator=g)
    big[3, 4], big[5, 6] = NAN, -INF
    return [
        big,
        big.t(),
        torch.randn(500, 300, generator=g) * 2 + 5,
        torch.randn(33, generator=g).half(),
        torch.randn(33, generator=g).bfloat16(),
        torch.tensor([2**60 + 1, -3]),
        torch.tensor([True, False]),
        torch.tensor([3 + 4j, NAN]),
        torch.tensor(1.5),
        torch.empty(0, 2),
        torch.full((40,), NAN),
        torch.eye(4).to_sparse(),
    ]


@needs_cuda
def test_cuda_capture_never_syncs_and_matches_cpu() -> None:
    cases = cuda_cases()
    on_gpu = [t.cuda() for t in cases]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pending = summary.capture_many(on_gpu)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for gpu, cpu in zip(resolve(pending), summarize_many(cases), strict=True):
        assert gpu.device.startswith("cuda") and cpu.device == "cpu"
        assert (gpu.shape, gpu.dtype, gpu.nan, gpu.inf, gpu.zeros) == (
            cpu.shape,
            cpu.dtype,
            cpu.nan,
            cpu.inf,
            cpu.zeros,
        )
        assert repr(gpu.values) == repr(cpu.values)
        for name in ("min", "max", "mean", "std", "norm"):
            assert getattr(gpu, name) == pytest.approx(getattr(cpu, name), rel=1e-5), name


@needs_cuda
def test_cuda_resolve_is_one_transfer(monkeypatch: pytest.MonkeyPatch) -> None:
    pending = summary.capture_many([t.cuda() for t in cuda_cases()] + [torch.ones(3)])
    copies = []
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        copies.append(self.device)
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    assert all(s is not None for s in resolve(pending))
    assert len(copies) == 1


# -- JSON ----------------------------------------------------------------------------------


def test_to_json_is_strict_with_nan(path: str) -> None:
    s = summarize(torch.tensor([NAN, INF, 1.0, 3 - 0.0]))
    data = json.loads(json.dumps(s.to_json(), allow_nan=False))
    assert data["values"] == [None, None, 1.0, 3.0]
    assert (data["nan"], data["inf"], data["min"], data["max"]) == (1, 1, 1.0, 3.0)
    all_nan = summarize(torch.full((20,), NAN)).to_json()
    assert json.dumps(all_nan, allow_nan=False)
    assert all_nan["mean"] is None and "values" not in all_nan


# -- walking module outputs ----------------------------------------------------------------


Pair = namedtuple("Pair", ["first", "second"])


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    aux: Any = None


def test_flatten_tensors_walks_containers_in_order() -> None:
    a, b, c, d = (torch.tensor([float(i)]) for i in range(4))
    obj = (a, [None, {"x": b, "y": 3}], Pair(c, "text"), Output(d))
    assert [t if t is None else t.item() for t in flatten_tensors(obj)] == [
        0.0,
        None,
        1.0,
        None,
        2.0,
        None,
        3.0,
        None,
    ]
    assert flatten_tensors(a) == [a]
    assert flatten_tensors(None) == [None]
    assert flatten_tensors(()) == []


def test_flatten_survives_a_structure_containing_itself() -> None:
    loop: list[Any] = [torch.ones(1)]
    loop.append(loop)
    assert flatten_tensors(loop)[0] is loop[0]


def test_first_tensor_and_summarize_value() -> None:
    t = torch.tensor([2.0, 4.0])
    assert first_tensor((None, "x", {"k": t})) is t
    assert first_tensor([1, "two"]) is None
    summaries = summarize_value((t, None))
    assert summaries[0].mean == 3.0 and summaries[1] is None
    assert resolve(capture_value({"out": t}))[0].values == (2.0, 4.0)


# -- formatting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (None, "?"),
        (NAN, "nan"),
        (INF, "inf"),
        (-INF, "-inf"),
        (0.0, "0.0000"),
        (-0.0, "0.0000"),
        (1.10341, "1.1034"),
        (-0.39, "-0.3900"),
        (0.008, "0.0080"),
        (0.001, "0.0010"),
        (1.23456e-5, "1.2346e-05"),
        (12345.678, "12345.6780"),
        (123456.0, "1.2346e+05"),
    ],
)
def test_format_number(x: float | None, text: str) -> None:
    assert format_number(x) == text


def test_format_count_bytes_shape() -> None:
    assert format_count(1234567) == "1,234,567"
    assert format_count(7) == "7"
    assert [format_bytes(n) for n in (0, 512, 1536, 4 * 2**20, 3 * 2**30)] == [
        "0 B",
        "512 B",
        "1.5 KiB",
        "4.0 MiB",
        "3.0 GiB",
    ]
    assert format_shape((3, 196)) == "[3, 196]"
    assert format_shape(()) == "[]"


def line(**fields: Any) -> str:
    base: dict[str, Any] = {"shape": (3, 196), "dtype": "float32", "device": "cpu", "numel": 588}
    return summary_line(TensorSummary(**(base | fields)))


def test_summary_line_statistics() -> None:
    stats = {"min": -2.1, "max": 2.6, "mean": -0.39, "std": 1.07, "norm": 30.0}
    assert line(**stats) == "tensor[3, 196] n=588 x∈[-2.1000, 2.6000] μ=-0.3900 σ=1.0700"
    assert (
        line(**stats, dtype="float16", device="cuda:0", requires_grad=True)
        == "tensor[3, 196] n=588 float16 cuda:0 x∈[-2.1000, 2.6000] μ=-0.3900 σ=1.0700"
    )
    assert line(**stats, nan=3, inf=1).endswith("σ=1.0700 NaN!×3 Inf!×1")
    assert line(zeros=588, min=0.0, max=0.0, mean=0.0, std=0.0) == "tensor[3, 196] n=588 all zeros"


def test_summary_line_small_tensors_show_values() -> None:
    assert summary_line(summarize(torch.tensor(1.10341))) == "tensor 1.1034"
    assert summary_line(summarize(torch.tensor([1.0, 0.008]))) == "tensor[2] [1.0000, 0.0080]"
    y = torch.tensor([1.0, 2.0], requires_grad=True) * 2
    assert summary_line(summarize(y)) == "tensor[2] [2.0000, 4.0000]"
    with_grad = "tensor[2] grad MulBackward0 [2.0000, 4.0000]"
    assert summary_line(summarize(y), autograd=True) == with_grad
    leaf = torch.tensor([1.0], requires_grad=True)
    assert summary_line(summarize(leaf), autograd=True) == "tensor[1] grad [1.0000]"
    assert summary_line(summarize(torch.tensor([1, 0]))) == "tensor[2] int64 [1, 0]"
    assert summary_line(summarize(torch.tensor([NAN, 1.0]))) == "tensor[2] [nan, 1.0000] NaN!×1"
    assert summary_line(summarize(torch.tensor([1 - 2j]))) == "tensor[1] complex64 [1.0000-2.0000j]"


def test_summary_line_special_tensors() -> None:
    assert summary_line(summarize(torch.empty(0, 3))) == "tensor[0, 3] empty"
    assert summary_line(summarize(torch.empty(2, 3, device="meta"))) == "tensor[2, 3] n=6 meta"
    assert summary_line(summarize(torch.full((20,), NAN))) == "tensor[20] NaN!×20"
    assert summary_line(summarize(torch.zeros(4, 5))) == "tensor[4, 5] n=20 all zeros"
    complex_line = summary_line(summarize(torch.full((10,), 3 + 4j)))
    assert complex_line == "tensor[10] complex64 |x|∈[5.0000, 5.0000] μ=5.0000 σ=0.0000"
    sparse = summary_line(summarize(torch.eye(5).to_sparse().coalesce()))
    assert sparse == "tensor[5, 5] n=25 sparse_coo x∈[1.0000, 1.0000] μ=1.0000 σ=0.0000"


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([100, 0, 7, 7], 2) == "▄▄"  # the last two, all equal
    assert sparkline([1.0, None, NAN, INF, -INF, 2.0], 10) == "▁  █▁█"
    assert sparkline([3.0, 1.0], 0) == ""
    assert sparkline([], 5) == ""
