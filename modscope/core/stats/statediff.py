"""Comparing the `state_dict` after a step with the one before it, keeping one reused copy."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch

from modscope.core.contract.steps import StateDiff
from modscope.core.stats import chunked, segments
from modscope.core.stats.key_diffs import (
    ExoticForm,
    host_key_diff,
    is_exotic,
    key_diff,
    sampled_diff,
)
from modscope.core.stats.sampled import SampledState
from modscope.core.stats.segments import Segments, joinable

_Kind = tuple[torch.device, torch.dtype, int]
"""A group's device, dtype and run (`segments.bounded`: a buffer holds a bounded number)."""


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
        # The copies of the keys outside the blocks. A block's keys have no view each: tens of
        # thousands of views would take more memory than the values (`previous_of`).
        self._previous: dict[str, torch.Tensor] = {}
        self._blocks: dict[_Kind, _Block] = {}
        self._sampled: dict[str, SampledState] = {}
        self._exotic: dict[str, ExoticForm] = {}

    @classmethod
    def against(cls, state: Mapping[str, torch.Tensor]) -> StateTracker:
        """A tracker whose baseline is `state` itself, not a copy: for one `diff(...,
        remember=False)` while `state` stays as it is."""
        tracker = cls()
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        tracker._exotic = {k: ExoticForm.of(v) for k, v in tensors.items() if is_exotic(v)}
        tracker._previous = {k: v.detach() for k, v in tensors.items() if k not in tracker._exotic}
        return tracker

    def reset(self, state: Mapping[str, torch.Tensor]) -> None:
        """Take `state` as the baseline the next diff compares against."""
        self._previous = {}
        self._blocks = {}
        self._sampled = {}
        self._exotic = {}
        sampled = self._over_budget(state)
        self._remember(state, _groups(state, sampled), {}, sampled, {}, {}, set())

    def previous_of(self, key: str) -> torch.Tensor | None:
        """The copy kept of `key`'s value (a view of its block's buffer for a joined key);
        None for a key kept as a digest or in another form, or not known."""
        for block in self._blocks.values():
            if key in block.keys:
                return block.views()[key]
        return self._previous.get(key)

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
        fresh_exotic: Mapping[str, ExoticForm],
        refreshed: Collection[str],
    ) -> None:
        """Keep `state` as the previous values; `flats` holds the joined current values of
        the groups whose block still matches (`diff` has just compared them), `fresh` the
        digests `diff` has just taken of the `sampled` keys, `fresh_exotic` the forms it has
        just taken of the `is_exotic` ones, `refreshed` the keys whose copies `diff` has
        already overwritten with their values, chunk by chunk (`chunked`)."""
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
                else:
                    block = _new_block(group)
                blocks[kind] = block
            in_blocks = {k for b in blocks.values() for k in b.keys}
            exotic: dict[str, ExoticForm] = {}
            # Keys whose value is one tensor (tied weights: `lm_head.weight` is
            # `wte.weight`) share one copy; a copy shared before is not written for a key
            # whose value is another tensor now.
            copy_of: dict[int, torch.Tensor] = {}
            taken: set[int] = set()
            for key, value in state.items():
                if key in in_blocks or key in sampled:
                    continue
                if not isinstance(value, torch.Tensor) or value.is_meta:
                    continue
                if key in refreshed:
                    kept[key] = copy_of[id(value)] = self._previous[key]
                    taken.add(id(kept[key]))
                    continue
                if is_exotic(value):
                    exotic[key] = fresh_exotic[key] if key in fresh_exotic else ExoticForm.of(value)
                    continue
                shared = copy_of.get(id(value))
                if shared is not None and shared.shape == value.shape:
                    kept[key] = shared
                    continue
                old = self._previous.get(key)
                detached = value.detach()
                if (
                    old is not None
                    and id(old) not in taken
                    and old.shape == detached.shape
                    and old.dtype == detached.dtype
                    and old.device == _HOST
                    and old.layout == detached.layout == torch.strided
                ):
                    old.copy_(detached)
                    kept[key] = old
                else:
                    kept[key] = _host_copy(detached)
                copy_of[id(value)] = kept[key]
                taken.add(id(kept[key]))
        self._previous = kept
        self._blocks = blocks
        self._exotic = exotic

    def diff(self, state: Mapping[str, torch.Tensor], *, remember: bool = True) -> StateDiff:
        """Per key: changed / unchanged / added / removed, max |delta| and relative change.

        A changed key whose shape or dtype changed has neither (None); one whose old value was
        all zeros has no relative change (None: a change from zero has no ratio). `counters`
        lists the changed integer and bool keys.
        """
        chunked.forget_taken()
        over = self._over_budget(state)
        groups = _groups(state, over)
        # The keys of a block that the state's group still matches are compared together;
        # those of the others, key by key, against views of their block.
        matched = {
            kind
            for kind, group in groups.items()
            if (block := self._blocks.get(kind)) is not None and group.matches(block)
        }
        before: dict[str, torch.Tensor] = {}
        for kind, block in self._blocks.items():
            if kind not in matched:
                before.update(block.views())
        before.update(self._previous)
        compared = {k for kind in matched for k in self._blocks[kind].keys}
        known = before.keys() | compared | self._sampled.keys() | self._exotic.keys()
        added = tuple(k for k in state if k not in known)
        removed = tuple(k for k in (*before, *self._sampled, *self._exotic) if k not in state)
        fresh: dict[str, SampledState] = {}
        fresh_exotic: dict[str, ExoticForm] = {}
        refreshed: set[str] = set()
        tied: dict[int, tuple[torch.Tensor, Sequence[float | None]]] = {}
        # A copy shared by keys whose values are now different tensors (a tie broken) is
        # compared by each and written by none in the diff: `_remember` gives them copies
        # of their own.
        values_of: dict[int, set[int]] = {}
        for key, value in state.items():
            if key in before:
                values_of.setdefault(id(before[key]), set()).add(id(value))
        untied = {copy for copy, values in values_of.items() if len(values) > 1}
        counts: dict[str, int] = {}
        on_host: list[tuple[str, Sequence[float | None]]] = []
        rows: dict[torch.device, list[tuple[Sequence[str], torch.Tensor]]] = {}
        flats: dict[_Kind, torch.Tensor] = {}
        reshaped: list[str] = []
        with torch.no_grad():
            for kind, group in groups.items():
                if kind not in matched:
                    continue
                block = self._blocks[kind]
                flat = flats[kind] = segments.flatten(group.tensors)
                previous = block.previous.to(flat.device, non_blocking=True)
                stats = segments.diff_stats(flat, previous, block.segments)
                rows.setdefault(flat.device, []).append((group.keys, stats))
            for key, value in state.items():
                if key in compared or key not in known:
                    continue
                if not isinstance(value, torch.Tensor) or value.is_meta:
                    continue
                if key in self._sampled:
                    now = SampledState.of(value.detach()) if SampledState.handles(value) else None
                    approx = sampled_diff(self._sampled[key], now)
                    if approx is None:
                        reshaped.append(key)  # a new shape or dtype: changed, no statistics
                    else:
                        rows.setdefault(approx.device, []).append(((key,), approx.reshape(1, -1)))
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
                if _chunked(new, old):
                    seen = tied.get(id(value))
                    if seen is not None and seen[0] is old:
                        # The tensor of a key diffed already, sharing its copy (tied
                        # weights), which that diff has refreshed: the same numbers.
                        on_host.append((key, seen[1]))
                        if remember:
                            refreshed.add(key)
                        continue
                    # Compared and refreshed chunk by chunk: the copy is updated in place,
                    # with no temporary the size of the tensor.
                    # With `remember` (a step's record), the summary's statistics of the key
                    # are taken from the same chunks (`chunked.taken_stats`).
                    refresh = remember and id(old) not in untied
                    columns = chunked.chunked_diff(
                        new, old, refresh=refresh, summarize=value if remember else None
                    )
                    tied[id(value)] = (old, columns)
                    on_host.append((key, columns))
                    if refresh:
                        refreshed.add(key)
                    continue
                if new.device.type == "cpu":
                    numbers = host_key_diff(new, old)
                    if numbers is not None:
                        on_host.append((key, numbers))
                        continue
                stats = key_diff(new, old.to(new.device, non_blocking=True)).reshape(1, -1)
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
            self._remember(state, groups, flats, over, fresh, fresh_exotic, refreshed)
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
        fresh: dict[str, ExoticForm],
        counts: dict[str, int],
        on_host: list[tuple[str, Sequence[float | None]]],
        reshaped: list[str],
    ) -> None:
        """Compare an `is_exotic` key (or one that was) with its previous form."""
        old = self._exotic.get(key)
        now = ExoticForm.of(value) if is_exotic(value) else None
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
    """A block holding a copy of `group`'s tensors, on the host; its segments on their device
    (where `diff` compares them)."""
    joined = segments.flatten(group.tensors)
    sizes = [s.numel() for s in group.shapes]
    previous = joined if joined.device == _HOST else joined.to(_HOST)
    return _Block(
        tuple(group.keys), tuple(group.shapes), previous, Segments.of(sizes, joined.device)
    )


def compare_states(new: Mapping[str, torch.Tensor], old: Mapping[str, torch.Tensor]) -> StateDiff:
    """`new` against `old` as `StateTracker.diff` does, key by key, copying neither: two
    timelines' states after the same step (`Session.compare_timelines`)."""
    return StateTracker.against(old).diff(new, remember=False)


_HOST = torch.device("cpu")


def _host_copy(value: torch.Tensor) -> torch.Tensor:
    """A copy of `value` in host memory, in row-major order: the previous value of a tensor
    on a device lives on the host, so a model on a GPU never gets a second copy of itself in
    device memory (the `--memory-budget` counts it, as host memory)."""
    if value.device == _HOST:
        return value.clone(memory_format=torch.contiguous_format)
    return value.to(_HOST, memory_format=torch.contiguous_format, copy=True)


def _chunked(new: torch.Tensor, old: torch.Tensor) -> bool:
    """True for a key compared chunk by chunk (`chunked.chunked_diff`): a dense tensor of
    more than one chunk, of a real dtype with values."""
    return not new.is_complex() and old.layout == torch.strided and chunked.is_large(new)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
