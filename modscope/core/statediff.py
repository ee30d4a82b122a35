"""Comparing the `state_dict` after a step with the one before it, keeping one reused copy."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from modscope.core.types import StateDiff


def _comparable(t: torch.Tensor) -> torch.Tensor:
    if t.is_sparse or t.layout != torch.strided:
        t = t.to_dense()
    if t.is_complex():
        return torch.view_as_real(t)
    if t.is_floating_point():
        return t
    return t.to(torch.float64)


class StateTracker:
    """Holds the previous `state_dict` values and diffs the current ones against them.

    The previous copy is allocated once per key and overwritten in place after each diff, so
    stepping allocates no new memory for it.
    """

    def __init__(self) -> None:
        self._previous: dict[str, torch.Tensor] = {}

    def reset(self, state: Mapping[str, torch.Tensor]) -> None:
        """Take `state` as the baseline the next diff compares against."""
        self._previous = {}
        self._remember(state)

    def _remember(self, state: Mapping[str, torch.Tensor]) -> None:
        kept: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for key, value in state.items():
                if not isinstance(value, torch.Tensor) or value.is_meta:
                    continue
                old = self._previous.get(key)
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

    def diff(self, state: Mapping[str, torch.Tensor], *, remember: bool = True) -> StateDiff:
        """Per key: changed / unchanged / added / removed, max |delta| and relative change."""
        before = self._previous
        added = tuple(k for k in state if k not in before)
        removed = tuple(k for k in before if k not in state)
        common = [
            k
            for k in state
            if k in before and isinstance(state[k], torch.Tensor) and not state[k].is_meta
        ]
        rows: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
        reshaped: list[str] = []
        with torch.no_grad():
            for key in common:
                new, old = state[key].detach(), before[key]
                if new.shape != old.shape:
                    reshaped.append(key)
                    continue
                a, b = _comparable(new), _comparable(old)
                delta = a - b
                both_nan = torch.isnan(a) & torch.isnan(b)
                changed = ((a != b) & ~both_nan).any()
                if delta.numel():
                    max_delta = torch.where(both_nan, 0.0, delta.abs()).amax()
                else:
                    max_delta = torch.zeros((), dtype=torch.float64, device=a.device)
                delta_norm = torch.linalg.vector_norm(torch.where(both_nan, 0.0, delta))
                rel = delta_norm / torch.linalg.vector_norm(b)
                rel = torch.where(delta_norm == 0, 0.0, rel)
                stats = torch.stack([changed.double(), max_delta.double(), rel.double()])
                rows.setdefault(stats.device, []).append((key, stats))
        changed_keys: list[str] = list(reshaped)
        unchanged: list[str] = []
        max_abs: dict[str, float | None] = {k: None for k in reshaped}
        rel_change: dict[str, float | None] = {k: None for k in reshaped}
        for entries in rows.values():
            values = torch.stack([s for _, s in entries]).cpu().tolist()
            for (key, _), (flag, max_delta, rel) in zip(entries, values, strict=True):
                if flag:
                    changed_keys.append(key)
                    max_abs[key] = max_delta
                    rel_change[key] = rel
                else:
                    unchanged.append(key)
        order = {k: i for i, k in enumerate(state)}
        changed_keys.sort(key=order.__getitem__)
        unchanged.sort(key=order.__getitem__)
        if remember:
            self._remember(state)
        return StateDiff(
            changed=tuple(changed_keys),
            unchanged=tuple(unchanged),
            added=added,
            removed=removed,
            max_abs_delta={k: max_abs[k] for k in changed_keys},
            rel_change={k: rel_change[k] for k in changed_keys},
        )
