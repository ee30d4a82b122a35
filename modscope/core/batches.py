"""Turning a script's `inputs` into one batch per iteration, and calling its loss."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from modscope.core.script_names import MISSING


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


class BatchSource:
    """Yields the batch for each iteration from a script's `inputs`.

    The order is that of docs/design.md section 1: a tensor, a tuple, a mapping, a zero-argument
    callable (a fresh batch per step), or any other iterable (its items in turn, started again
    when exhausted).
    """

    def __init__(self, inputs: Any) -> None:
        self.inputs = inputs
        self._iterator: Iterator[Any] | None = None
        self._given = 0

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
            return inputs
        if callable(inputs) and not isinstance(inputs, nn.Module):
            return inputs()
        return self._next_item()

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
