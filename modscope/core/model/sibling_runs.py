"""Runs of identical numbered siblings (`blocks.0-3299: 3,300 x Block`), found from an inventory."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from modscope.core.contract.tree import Inventory, ModuleInfo

FOLD_MIN = 3
"""Runs of at least this many identical numbered siblings fold into one tree node (`modscope
tree` and the app's tree alike)."""


@dataclass(frozen=True, slots=True)
class SiblingRun:
    """Consecutive siblings with one structure: `children[start:start + count]`."""

    start: int
    count: int
    first: ModuleInfo
    last: ModuleInfo


def fold_runs(
    children: Sequence[ModuleInfo],
    inventory: Inventory | None = None,
    *,
    numbered_only: bool = True,
) -> list[SiblingRun]:
    """Group runs of identical consecutive siblings, for "blocks.0-3299: 3,300 x Block".

    Returns runs that cover `children` in order; a run with `count >= 2` can be folded, one with
    `count == 1` is a lone sibling. Two siblings are identical when their structure signatures
    match: type name and the name, shape, dtype, device and requires_grad of every parameter and
    buffer, recursively through their children (needs `inventory`; without it only the
    siblings' own tensors, child count and totals are compared). With `numbered_only`, a run also
    needs names that count up by one (`0, 1, 2`, as in Sequential and ModuleList), so named
    siblings such as `norm1`, `norm2` stay apart.
    """
    if inventory is not None:
        signatures = structure_signatures(inventory)
        sig: list[Hashable] = [
            signatures[c.path] if c.path in signatures else _shallow_signature(c) for c in children
        ]
    else:
        sig = [_shallow_signature(c) for c in children]
    runs: list[SiblingRun] = []
    i = 0
    while i < len(children):
        j = i + 1
        while j < len(children) and sig[j] == sig[i] and _continues(children, j, numbered_only):
            j += 1
        runs.append(SiblingRun(i, j - i, children[i], children[j - 1]))
        i = j
    return runs


_signature_cache: tuple[Inventory | None, dict[str, int]] = (None, {})


def structure_signatures(inventory: Inventory) -> dict[str, int]:
    """Map each module path to a small int that is equal exactly for equal structure.

    Computed bottom-up once per inventory (the last one is cached, as a tree printer asks for
    every parent's children in turn).
    """
    global _signature_cache
    cached_for, cached = _signature_cache
    if cached_for is inventory:
        return cached
    table: dict[tuple[Any, ...], int] = {}
    out: dict[str, int] = {}
    # path -> (name, signature), what a parent's key holds of each child.
    named: dict[str, tuple[str, int]] = {}
    # Preorder lists parents before children, so reversed order sees every child first. Empty
    # parts are spelled `()` rather than built: most modules of a large model hold no tensors
    # or no children, and this runs for every module of the tree.
    for m in reversed(inventory.modules):
        key = (
            m.type_name,
            tuple([(p.name, p.shape, p.dtype, p.device, p.requires_grad) for p in m.parameters])
            if m.parameters
            else (),
            tuple([(b.name, b.shape, b.dtype, b.device, b.persistent) for b in m.buffers])
            if m.buffers
            else (),
            tuple([named[c] for c in m.children if c in named]) if m.children else (),
        )
        signature = out[m.path] = table.setdefault(key, len(table))
        named[m.path] = (m.name, signature)
    _signature_cache = (inventory, out)
    return out


def _shallow_signature(m: ModuleInfo) -> Hashable:
    return (
        m.type_name,
        tuple((p.name, p.shape, p.dtype, p.device, p.requires_grad) for p in m.parameters),
        tuple((b.name, b.shape, b.dtype, b.device, b.persistent) for b in m.buffers),
        len(m.children),
        m.totals,
    )


def _continues(children: Sequence[ModuleInfo], j: int, numbered_only: bool) -> bool:
    if not numbered_only:
        return True
    prev, cur = children[j - 1].name, children[j].name
    return prev.isdecimal() and cur.isdecimal() and int(cur) == int(prev) + 1
