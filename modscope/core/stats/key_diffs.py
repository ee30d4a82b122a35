"""One key's value against its previous one: a copy, a sample, or an exotic tensor's forms."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch

from modscope.core.stats import segments
from modscope.core.stats.sampled import SampledState
from modscope.core.stats.tensor_stats import bits_of, has_values, nested_shapes, nested_values


def _comparable(t: torch.Tensor) -> torch.Tensor:
    if t.is_sparse or t.layout != torch.strided:
        t = t.to_dense()
    if t.is_complex():
        return torch.view_as_real(t)
    return segments.comparable(t)


def host_key_diff(new: torch.Tensor, old: torch.Tensor) -> list[float] | None:
    """`segments.DIFF_COLUMNS` for one key on the CPU, or None when some difference is not
    finite (`key_diff` then).

    On the CPU reading a number back costs nothing, so the scalar work is Python's: when every
    difference is finite (no NaN, no infinity on either side) `a != b` is exactly
    `a - b != 0`, and four passes over the tensor (the difference, its extremes, two norms)
    and five other calls do. Models of thousands of mid-sized tensors spent more on the two
    dozen scalar tensor ops per key this replaces than on the passes.
    """
    a, b = _comparable(new), _comparable(old)
    if not a.numel():
        return None
    delta = a - b
    lo, hi = torch.aminmax(delta)
    max_delta = max(-float(lo), float(hi))
    if not math.isfinite(max_delta):
        return None
    if max_delta == 0:
        if new.element_size() == 8 and not new.is_floating_point() and not torch.equal(new, old):
            return None  # int64 past 2**53: float64 rounded the difference away
        return [0.0, 0.0, 0.0]  # before the norms: most keys of a deep model may not move
    wide = torch.promote_types(a.dtype, torch.float32)
    delta_norm = torch.linalg.vector_norm(delta, dtype=wide)
    old_norm = torch.linalg.vector_norm(b, dtype=wide)
    if float(old_norm) == 0:
        return [1.0, max_delta, segments.FROM_ZERO]
    return [1.0, max_delta, float(delta_norm / old_norm)]


def key_diff(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """`segments.DIFF_COLUMNS` for one key, as a float64 tensor of 3 on its device."""
    a, b = _comparable(new), _comparable(old)
    delta = a - b
    wide = torch.promote_types(a.dtype, torch.float32)
    # Equal infinities are unchanged too, although their difference is NaN.
    same = segments.exactly_same(new, old, a, b)
    changed = (~same).any()
    if delta.numel():
        max_delta = torch.where(same, 0.0, delta.abs()).amax()
    else:
        max_delta = torch.zeros((), dtype=torch.float64, device=a.device)
    # Norms of fp16/bf16 in float32: in their own dtype they overflow past 65504 (fp16) and
    # keep 3 significant digits, as `summary` notes too.
    delta_norm = torch.linalg.vector_norm(torch.where(same, 0.0, delta), dtype=wide)
    rel = _relative(delta_norm, torch.linalg.vector_norm(b, dtype=wide))
    return torch.stack([changed.double(), max_delta.double(), rel.double()])


def sampled_diff(before: SampledState, now: SampledState | None) -> torch.Tensor | None:
    """`segments.DIFF_COLUMNS` of a key kept as a `SampledState`: changed by the digests, the
    largest |delta| and the relative change over the sample (the same positions both times:
    same shape, same seed). None when its shape or dtype changed (no statistics to give)."""
    if now is None or now.shape != before.shape or now.dtype != before.dtype:
        return None
    stats = key_diff(now.values, before.values)
    changed = float(now.digest != before.digest)
    return torch.cat([torch.tensor([changed], dtype=torch.float64, device=stats.device), stats[1:]])


def _relative(delta_norm: torch.Tensor, old_norm: torch.Tensor) -> torch.Tensor:
    """‖new - old‖ / ‖old‖: 0 when nothing changed, `segments.FROM_ZERO` from all zeros."""
    rel = torch.where(delta_norm == 0, 0.0, delta_norm / old_norm)
    return torch.where((delta_norm != 0) & (old_norm == 0), segments.FROM_ZERO, rel)


def is_exotic(t: torch.Tensor) -> bool:
    """True for a tensor the diff keeps in another form than a copy of itself: nested (no
    `clone`), quantized (no arithmetic on its own values), or of a dtype without arithmetic
    (`bits8`, `int4`...: compared bit by bit)."""
    return t.is_nested or t.is_quantized or not has_values(t.dtype)


@dataclass(frozen=True, eq=False)
class ExoticForm:
    """The previous value of an `is_exotic` key, in the forms its diff compares.

    `form` says what else must be equal for the elements to be compared (dtype, shapes of a
    nested tensor's components, quantization parameters); `bits` the elements as integers of
    their width, for dtypes compared bit by bit (exact: `changed` and the count of changed
    elements); `values` the elements as numbers where they have a meaning (a nested tensor's
    values; a packed quantized one's, `quint4x2`), for |delta| and the relative change. A
    quantized tensor keeps its integers only (`quantization` maps them to values), so its copy
    takes no more memory than the tensor."""

    form: tuple[object, ...]
    bits: torch.Tensor | None
    values: torch.Tensor | None
    quantization: tuple[object, ...] | None = None

    @classmethod
    def of(cls, t: torch.Tensor) -> ExoticForm:
        with torch.no_grad():
            if t.is_nested:
                return cls((t.dtype, t.layout, nested_shapes(t)), None, nested_values(t))
            if t.is_quantized:
                quantization = _quantization(t)
                form = (t.dtype, tuple(t.shape), *quantization)
                ints = bits_of(t)
                if ints.numel() == t.numel():
                    return cls(form, ints, None, quantization)
                # Packed (two elements a byte): compared by value, one to one with the bits.
                return cls(form, None, t.dequantize().reshape(-1), quantization)
            # No arithmetic at all: a copy of the raw bits (the dtype's own `clone` may not
            # exist: `int4` has none).
            return cls((t.dtype, tuple(t.shape)), bits_of(t.detach()).reshape(-1).clone(), None)

    def numbers(self) -> torch.Tensor | None:
        """The elements as numbers, flat; None where they have no meaning."""
        if self.values is not None:
            return self.values
        if self.quantization is not None and self.bits is not None:
            return _dequantized(self.bits, self.quantization).reshape(-1)
        return None

    def diff(self, before: ExoticForm) -> tuple[list[float | None], int | None] | None:
        """`segments.DIFF_COLUMNS` against `before` (max |delta| and the relative change None
        where they have no meaning) and the count of changed elements where compared bit by
        bit; None when the form changed (changed, nothing to compare)."""
        if self.form != before.form:
            return None
        count = None
        if self.bits is not None and before.bits is not None:
            count = int((self.bits != before.bits).sum())
            if count == 0:
                return [0.0, 0.0, 0.0], 0
        new, old = self.numbers(), before.numbers()
        if new is None or old is None:
            return [1.0, None, segments.FROM_ZERO], count
        if count is None and self.quantization is not None:
            count = int((new != old).sum())  # one value per integer, the parameters equal
        numbers = key_diff(new, old).tolist()
        if count is not None:
            numbers[0] = float(count > 0)  # the bits decide, not values that may round alike
        return numbers, count


def _dequantized(ints: torch.Tensor, quantization: tuple[object, ...]) -> torch.Tensor:
    """The values of a quantized tensor's integers `ints` (its `int_repr()`), as `dequantize`
    computes them: (q - zero point) * scale in float32."""
    scheme, *params = quantization
    q = ints.to(torch.float32)
    if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        scale, zero_point = params
        return (q - float(zero_point)) * torch.tensor(scale, dtype=torch.float32)  # type: ignore[arg-type]
    axis, scales, zero_points = params
    shape = [1] * q.dim()
    shape[cast(int, axis)] = -1  # `_quantization` puts the channel axis here, an int
    scale_t = torch.tensor(scales, dtype=torch.float32, device=q.device).view(shape)
    zero_t = torch.tensor(zero_points, dtype=torch.float32, device=q.device).view(shape)
    return (q - zero_t) * scale_t


def _quantization(t: torch.Tensor) -> tuple[object, ...]:
    """What maps a quantized tensor's integers to its values: its scheme and parameters."""
    scheme = t.qscheme()
    if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return scheme, t.q_scale(), t.q_zero_point()
    return (
        scheme,
        t.q_per_channel_axis(),
        tuple(t.q_per_channel_scales().tolist()),
        tuple(t.q_per_channel_zero_points().tolist()),
    )
