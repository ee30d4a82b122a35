"""Comparing the `state_dict` after a step with the one before it, keeping one reused copy."""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch

from modscope.core import segments
from modscope.core.sampled_state import SampledState
from modscope.core.segments import Segments, joinable
from modscope.core.tensor_stats import bits_of, has_values, nested_shapes, nested_values
from modscope.core.types import StateDiff

_Kind = tuple[torch.device, torch.dtype, int]
"""A group's device, dtype and run (`segments.bounded`: a buffer holds a bounded number)."""


def _comparable(t: torch.Tensor) -> torch.Tensor:
    if t.is_sparse or t.layout != torch.strided:
        t = t.to_dense()
    if t.is_complex():
        return torch.view_as_real(t)
    return segments.comparable(t)


def _host_key_diff(new: torch.Tensor, old: torch.Tensor) -> list[float] | None:
    """`segments.DIFF_COLUMNS` for one key on the CPU, or None when some difference is not
    finite (`_key_diff` then).

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


def _key_diff(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
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


def _sampled_diff(before: SampledState, now: SampledState | None) -> torch.Tensor | None:
    """`segments.DIFF_COLUMNS` of a key kept as a `SampledState`: changed by the digests, the
    largest |delta| and the relative change over the sample (the same positions both times:
    same shape, same seed). None when its shape or dtype changed (no statistics to give)."""
    if now is None or now.shape != before.shape or now.dtype != before.dtype:
        return None
    stats = _key_diff(now.values, before.values)
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
class _Exotic:
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
    def of(cls, t: torch.Tensor) -> _Exotic:
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

    def diff(self, before: _Exotic) -> tuple[list[float | None], int | None] | None:
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
        numbers = _key_diff(new, old).tolist()
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
    shape[axis] = -1  # type: ignore[index]
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


@dataclass(frozen=True, eq=False)
class _Block:
    """Keys of one device and dtype whose previous values lie back to back in one buffer."""

    keys: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    previous: torch.Tensor
    segments: Segments

    def views(self) -> dict[str, torch.Tensor]:
        """Each key's previous value: a view of `previous`, in the key's shape."""
        pieces = self.previous.split([shape.numel() for shape in self.shapes])
        return {
            key: piece.view(shape)
            for key, piece, shape in zip(self.keys, pieces, self.shapes, strict=True)
        }


@dataclass
class _Group:
    """The joinable tensors of one device and dtype in a `state_dict`, in its order."""

    keys: list[str]
    shapes: list[torch.Size]
    tensors: list[torch.Tensor]

    def matches(self, block: _Block) -> bool:
        """True when `block` holds the previous values of exactly these keys and shapes."""
        return block.keys == tuple(self.keys) and block.shapes == tuple(self.shapes)


def _groups(state: Mapping[str, torch.Tensor], sampled: Collection[str]) -> dict[_Kind, _Group]:
    """The state's small tensors grouped by device and dtype, where there are enough to join
    (the `sampled` keys, kept as digests, stay out)."""
    by_kind: dict[tuple[torch.device, torch.dtype], list[tuple[str, torch.Tensor]]] = {}
    for key, value in state.items():
        if (
            key not in sampled
            and isinstance(value, torch.Tensor)
            and value.numel() <= segments.DIFF_MAX_NUMEL
            and joinable(value)
        ):
            by_kind.setdefault((value.device, value.dtype), []).append((key, value))
    groups: dict[_Kind, _Group] = {}
    for (device, dtype), items in by_kind.items():
        for run, members in enumerate(segments.bounded(items, lambda kv: kv[1].numel())):
            if len(members) >= segments.MIN_TENSORS:
                groups[device, dtype, run] = _Group(
                    [k for k, _ in members], [v.shape for _, v in members], [v for _, v in members]
                )
    return groups


class StateTracker:
    """Holds the previous `state_dict` values and diffs the current ones against them.

    The previous copy is allocated once and overwritten in place after each diff, so stepping
    allocates no new memory for it. Many small tensors of one device and dtype share one flat
    buffer (each key's previous value a view of it), copied and compared by some twenty
    kernels for all of them rather than a dozen per key (see `segments`). A group whose keys
    or shapes changed is compared key by key once, then joined anew.

    With a `budget` (bytes), the copies take at most that much: the smallest keys are copied
    until the next would not fit, and each key left over is kept as a `SampledState` (a digest
    of its bytes and a fixed sample of its elements), so whether it changed stays exact and
    its change's statistics are estimated from the sample (`StateDiff.sampled`).
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self._previous: dict[str, torch.Tensor] = {}
        self._blocks: dict[_Kind, _Block] = {}
        self._sampled: dict[str, SampledState] = {}
        self._exotic: dict[str, _Exotic] = {}

    @classmethod
    def against(cls, state: Mapping[str, torch.Tensor]) -> StateTracker:
        """A tracker whose baseline is `state` itself, not a copy: for one `diff(...,
        remember=False)` while `state` stays as it is."""
        tracker = cls()
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        tracker._exotic = {k: _Exotic.of(v) for k, v in tensors.items() if is_exotic(v)}
        tracker._previous = {k: v.detach() for k, v in tensors.items() if k not in tracker._exotic}
        return tracker

    def reset(self, state: Mapping[str, torch.Tensor]) -> None:
        """Take `state` as the baseline the next diff compares against."""
        self._previous = {}
        self._blocks = {}
        self._sampled = {}
        self._exotic = {}
        sampled = self._over_budget(state)
        self._remember(state, _groups(state, sampled), {}, sampled, {}, {})

    @property
    def sampled_keys(self) -> tuple[str, ...]:
        """The keys kept as digests and samples now, not copied whole."""
        return tuple(self._sampled)

    def _over_budget(self, state: Mapping[str, torch.Tensor]) -> set[str]:
        """The keys kept as digests: the largest ones, once copies of the smaller ones have
        filled the budget (none without a budget)."""
        if self.budget is None:
            return set()
        tensors = [(k, v) for k, v in state.items() if isinstance(v, torch.Tensor)]
        # Keys kept in another form (`is_exotic`) are copied whole: their copies come first.
        exotic = sum(_nbytes(v) for _, v in tensors if not v.is_meta and is_exotic(v))
        sizes = sorted(
            (_nbytes(v), i, k)
            for i, (k, v) in enumerate(tensors)
            if SampledState.handles(v) and not is_exotic(v)
        )
        left = self.budget - exotic
        over: set[str] = set()
        for size, _, key in sizes:
            if over or size > left:
                over.add(key)
            else:
                left -= size
        return over

    def _remember(
        self,
        state: Mapping[str, torch.Tensor],
        groups: Mapping[_Kind, _Group],
        flats: Mapping[_Kind, torch.Tensor],
        sampled: Collection[str],
        fresh: Mapping[str, SampledState],
        fresh_exotic: Mapping[str, _Exotic],
    ) -> None:
        """Keep `state` as the previous values; `flats` holds the joined current values of
        the groups whose block still matches (`diff` has just compared them), `fresh` the
        digests `diff` has just taken of the `sampled` keys, `fresh_exotic` the forms it has
        just taken of the `is_exotic` ones."""
        kept: dict[str, torch.Tensor] = {}
        blocks: dict[_Kind, _Block] = {}
        with torch.no_grad():
            # Copies given up first, so that memory is free before new ones are made.
            for key in sampled:
                self._previous.pop(key, None)
            self._sampled = {
                key: fresh[key] if key in fresh else SampledState.of(state[key].detach())
                for key in sampled
            }
            for kind, group in groups.items():
                block = self._blocks.get(kind)
                if block is not None and group.matches(block):
                    block.previous.copy_(flats[kind])
                    kept.update((key, self._previous[key]) for key in block.keys)
                else:
                    block = _new_block(group)
                    kept.update(block.views())
                blocks[kind] = block
            retired = {k for b in self._blocks.values() for k in b.keys}
            exotic: dict[str, _Exotic] = {}
            for key, value in state.items():
                if key in kept or key in sampled:
                    continue
                if not isinstance(value, torch.Tensor) or value.is_meta:
                    continue
                if is_exotic(value):
                    exotic[key] = fresh_exotic[key] if key in fresh_exotic else _Exotic.of(value)
                    continue
                # A view of a retired block's buffer would keep the whole buffer alive.
                old = None if key in retired else self._previous.get(key)
                value = value.detach()
                if (
                    old is not None
                    and old.shape == value.shape
                    and old.dtype == value.dtype
                    and old.device == value.device
                    and old.layout == value.layout == torch.strided
                ):
                    old.copy_(value)
                    kept[key] = old
                else:
                    kept[key] = value.clone()
        self._previous = kept
        self._blocks = blocks
        self._exotic = exotic

    def diff(self, state: Mapping[str, torch.Tensor], *, remember: bool = True) -> StateDiff:
        """Per key: changed / unchanged / added / removed, max |delta| and relative change.

        A changed key whose shape or dtype changed has neither (None); one whose old value was
        all zeros has no relative change (None: a change from zero has no ratio). `counters`
        lists the changed integer and bool keys.
        """
        before = self._previous
        known = before.keys() | self._sampled.keys() | self._exotic.keys()
        added = tuple(k for k in state if k not in known)
        removed = tuple(k for k in (*before, *self._sampled, *self._exotic) if k not in state)
        over = self._over_budget(state)
        groups = _groups(state, over)
        fresh: dict[str, SampledState] = {}
        fresh_exotic: dict[str, _Exotic] = {}
        counts: dict[str, int] = {}
        on_host: list[tuple[str, list[float | None]]] = []
        rows: dict[torch.device, list[tuple[Sequence[str], torch.Tensor]]] = {}
        flats: dict[_Kind, torch.Tensor] = {}
        joined: set[str] = set()
        reshaped: list[str] = []
        with torch.no_grad():
            for kind, group in groups.items():
                block = self._blocks.get(kind)
                if block is None or not group.matches(block):
                    continue
                flat = flats[kind] = segments.flatten(group.tensors)
                stats = segments.diff_stats(flat, block.previous, block.segments)
                rows.setdefault(flat.device, []).append((group.keys, stats))
                joined.update(group.keys)
            for key, value in state.items():
                if key in joined or key not in known:
                    continue
                if not isinstance(value, torch.Tensor) or value.is_meta:
                    continue
                if key in self._sampled:
                    now = SampledState.of(value.detach()) if SampledState.handles(value) else None
                    stats = _sampled_diff(self._sampled[key], now)
                    if stats is None:
                        reshaped.append(key)  # a new shape or dtype: changed, no statistics
                    else:
                        rows.setdefault(stats.device, []).append(((key,), stats.reshape(1, -1)))
                    if now is not None:
                        fresh[key] = now
                    continue
                if is_exotic(value) or key in self._exotic:
                    self._diff_exotic(key, value, fresh_exotic, counts, on_host, reshaped)
                    continue
                new, old = value.detach(), before[key]
                if new.shape != old.shape or new.dtype != old.dtype:
                    reshaped.append(key)  # a new tensor under the old key: changed
                    continue
                if new.device.type == "cpu":
                    numbers = _host_key_diff(new, old)
                    if numbers is not None:
                        on_host.append((key, numbers))
                        continue
                stats = _key_diff(new, old).reshape(1, -1)
                rows.setdefault(stats.device, []).append(((key,), stats))
        changed_keys: list[str] = list(reshaped)
        unchanged: list[str] = []
        max_abs: dict[str, float | None] = {k: None for k in reshaped}
        rel_change: dict[str, float | None] = {k: None for k in reshaped}
        results = [
            zip(
                (key for batch, _ in entries for key in batch),
                torch.cat([stats for _, stats in entries]).cpu().tolist(),
                strict=True,
            )
            for entries in rows.values()
        ]
        for key, (flag, max_delta, rel) in itertools.chain(on_host, *results):
            if flag:
                changed_keys.append(key)
                max_abs[key] = max_delta
                rel_change[key] = None if rel == segments.FROM_ZERO else rel
            else:
                unchanged.append(key)
        order = {k: i for i, k in enumerate(state)}
        changed_keys.sort(key=order.__getitem__)
        unchanged.sort(key=order.__getitem__)
        sampled = tuple(k for k in state if k in self._sampled)
        if remember:
            self._remember(state, groups, flats, over, fresh, fresh_exotic)
        return StateDiff(
            counters=tuple(k for k in changed_keys if _is_counter(state[k])),
            changed=tuple(changed_keys),
            unchanged=tuple(unchanged),
            added=added,
            removed=removed,
            max_abs_delta={k: max_abs[k] for k in changed_keys},
            rel_change={k: rel_change[k] for k in changed_keys},
            sampled=sampled,
            changed_elements={k: counts[k] for k in changed_keys if k in counts},
        )

    def _diff_exotic(
        self,
        key: str,
        value: torch.Tensor,
        fresh: dict[str, _Exotic],
        counts: dict[str, int],
        on_host: list[tuple[str, list[float | None]]],
        reshaped: list[str],
    ) -> None:
        """Compare an `is_exotic` key (or one that was) with its previous form."""
        old = self._exotic.get(key)
        now = _Exotic.of(value) if is_exotic(value) else None
        if now is not None:
            fresh[key] = now
        found = now.diff(old) if now is not None and old is not None else None
        if found is None:
            reshaped.append(key)  # a new dtype, shape or quantization: changed
            return
        numbers, count = found
        on_host.append((key, numbers))
        if count is not None:
            counts[key] = count


def _is_counter(t: torch.Tensor) -> bool:
    """Integer and bool tensors (`num_batches_tracked`, step counters, masks): their change
    counts events, not a scale, so it is not compared with the floating ones'."""
    return not (t.is_floating_point() or t.is_complex())


def _new_block(group: _Group) -> _Block:
    """A block holding a copy of `group`'s tensors."""
    previous = segments.flatten(group.tensors)
    sizes = [s.numel() for s in group.shapes]
    return _Block(
        tuple(group.keys), tuple(group.shapes), previous, Segments.of(sizes, previous.device)
    )


def compare_states(new: Mapping[str, torch.Tensor], old: Mapping[str, torch.Tensor]) -> StateDiff:
    """`new` against `old` as `StateTracker.diff` does, key by key, copying neither: two
    timelines' states after the same step (`Session.compare_timelines`)."""
    return StateTracker.against(old).diff(new, remember=False)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
