"""Turning a script's `inputs` into one batch per iteration, and calling its loss."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, Protocol

import torch
from torch import nn

from modscope.core.contract.script_names import MISSING


class InputsError(Exception):
    """The script's `inputs` cannot produce a batch."""


def spread(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments a batch is spread into: `model(*args, **kwargs)`."""
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, tuple | list):
        return tuple(batch), {}
    if isinstance(batch, Mapping):
        return (), dict(batch)
    return (batch,), {}


def describe_inputs(inputs: Any) -> str:
    """How `inputs` is read, in words for the UI."""
    if inputs is MISSING:
        return "no inputs"
    if isinstance(inputs, torch.Tensor):
        return "one tensor"
    if isinstance(inputs, tuple):
        return f"a tuple of {len(inputs)} positional arguments"
    if isinstance(inputs, Mapping):
        return f"keyword arguments {', '.join(map(str, inputs))}"
    if callable(inputs) and not isinstance(inputs, nn.Module):
        return "a fresh batch from a function each step"
    return f"batches from {type(inputs).__name__}, in turn"


def tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in `value` (nested tuples, lists and dicts)."""
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size()
    if isinstance(value, Mapping):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(v) for v in value)
    return 0


def clone_tree(value: Any) -> Any:
    """`value` with every tensor cloned (detached; a leaf keeps `requires_grad`) and everything
    else deep-copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad and value.is_leaf)
    if isinstance(value, dict):
        return type(value)((k, clone_tree(v)) for k, v in value.items())
    if isinstance(value, list):
        return [clone_tree(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(clone_tree(v) for v in value)
    return copy.deepcopy(value)


class RngSnapshot(Protocol):
    """What `BatchSource.keep_replay` needs of an RNG capture (`checkpoints.RngState`)."""

    def restore(self) -> None: ...

    def same(self, other: Any) -> bool: ...


class BatchSource:
    """Yields the batch for each iteration from a script's `inputs`.

    The order is that of docs/design.md section 1: a tensor, a tuple, a mapping, a zero-argument
    callable (a fresh batch per step), or any other iterable (its items in turn, started again
    when exhausted).

    For rewind, `position` counts the batches handed out and `seek` moves it back. A tensor,
    tuple or mapping is the same batch each time; a function's batch is decided by the RNGs
    (restored by the checkpoint, the script's own generators included); a sequence (a list) is
    replayed by index. Any other iterable (a `DataLoader`, a generator) is replayed from copies
    of the batches it yielded, kept once `keep_replay` is on: exact whatever decides its order
    (a shuffling sampler, workers, random transforms), at the cost of one copy of each batch
    since the oldest checkpoint. Where fetching a batch moved an RNG (a `DataLoader` without a
    generator draws its seeds from torch's), the RNGs after the fetch are kept too and restored
    when the batch is replayed.
    """

    def __init__(self, inputs: Any) -> None:
        self.inputs = inputs
        self._iterator: Iterator[Any] | None = None
        self._given = 0
        self.position = 0
        """Batches handed out on this timeline."""
        self.kept_bytes = 0
        """Bytes of the batches kept for replay."""
        self._capture_rng: Callable[[], RngSnapshot] | None = None
        self._kept: list[tuple[Any, RngSnapshot | None]] = []
        self._kept_from = 0
        self._drawn = 0

    @property
    def replays_kept(self) -> bool:
        """True when rewinding replays kept copies of the batches (not a list, not fixed)."""
        inputs = self.inputs
        return not (
            inputs is MISSING
            or isinstance(inputs, torch.Tensor | tuple | Mapping | Sequence)
            or (callable(inputs) and not isinstance(inputs, nn.Module))
        )

    def keep_replay(self, capture_rng: Callable[[], RngSnapshot] | None) -> None:
        """Keep copies of the batches from now on (`capture_rng` reads the RNGs), or stop
        (None: the copies before `position` are dropped)."""
        self._capture_rng = capture_rng if self.replays_kept else None
        if capture_rng is None:
            self.forget_before(self.position)

    def forget_before(self, position: int) -> None:
        """Drop the kept batches before `position` (no rewind goes back past it)."""
        drop = min(max(0, position - self._kept_from), len(self._kept))
        self.kept_bytes -= sum(tensor_bytes(b) for b, _ in self._kept[:drop])
        del self._kept[:drop]
        self._kept_from += drop

    def seek(self, position: int) -> None:
        """Hand out batch number `position` next, as the first time."""
        inputs = self.inputs
        if self.replays_kept:
            if position < self._kept_from or position > self._drawn:
                raise ValueError(f"batch {position} is no longer kept")
        elif isinstance(inputs, Sequence) and not isinstance(inputs, tuple):
            self._iterator = iter(inputs)
            if len(inputs):
                for _ in islice(self._iterator, position % len(inputs)):
                    pass
            self._given = position
        self.position = position

    @property
    def defined(self) -> bool:
        return self.inputs is not MISSING

    def next(self) -> Any:
        inputs = self.inputs
        if inputs is MISSING:
            raise InputsError(
                "the script defines no `inputs`; set `inputs = ...` (a tensor, a tuple of "
                "arguments, a dict, a function returning a batch, or a DataLoader)"
            )
        if isinstance(inputs, torch.Tensor | tuple | Mapping):
            batch = inputs
        elif callable(inputs) and not isinstance(inputs, nn.Module):
            batch = inputs()
        elif not self.replays_kept:
            batch = self._next_item()
        elif self.position < self._drawn:
            batch, after = self._kept[self.position - self._kept_from]
            batch = clone_tree(batch)
            if after is not None:
                after.restore()
        elif self._capture_rng is not None:
            batch = self._keep_next(self._capture_rng)
        else:
            batch = self._next_item()
            self._drawn += 1
            self._kept_from = self._drawn
        self.position += 1
        return batch

    def _keep_next(self, capture_rng: Callable[[], RngSnapshot]) -> Any:
        before = capture_rng()
        batch = self._next_item()
        after = capture_rng()
        # A copy: the iteration may change the batch in place.
        kept = clone_tree(batch)
        self._kept.append((kept, None if after.same(before) else after))
        self.kept_bytes += tensor_bytes(kept)
        self._drawn += 1
        return batch

    def _next_item(self) -> Any:
        if self._iterator is None:
            self._iterator = self._start()
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._iterator = self._start()
            try:
                batch = next(self._iterator)
            except StopIteration:
                raise InputsError(self._exhausted()) from None
        self._given += 1
        return batch

    def _exhausted(self) -> str:
        if not self._given:
            return "`inputs` is an empty iterable: it yields no batch"
        batches = f"{self._given} batch" if self._given == 1 else f"{self._given:,} batches"
        kind = type(self.inputs).__name__
        if isinstance(self.inputs, Iterator):
            return (
                f"`inputs` ran out after {batches}: it is a {kind}, an iterator that cannot "
                "start again; make it a list or a DataLoader, or a function returning a batch"
            )
        return f"`inputs` ran out after {batches}: started again, the {kind} yielded nothing"

    def _start(self) -> Iterator[Any]:
        try:
            return iter(self.inputs)
        except TypeError:
            raise InputsError(
                f"`inputs` is a {type(self.inputs).__name__}: not a tensor, tuple, dict, "
                "function or iterable"
            ) from None


def takes_batch(fn: Callable[..., Any]) -> bool:
    """True when `loss_fn` takes two arguments: `loss_fn(output, batch)`."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
        return True
    return len(positional) >= 2
