"""The loss of an iteration as the script contract reads it, and its value for a person."""

from __future__ import annotations

from typing import Any

import torch

from modscope.core.types import TensorSummary


class LossError(Exception):
    """The loss a script produced cannot be back-propagated."""


def is_scalar_loss(output: Any) -> bool:
    """True when a model's output can serve as the loss itself: a one-element floating (or
    complex) tensor (docs/design.md section 1, an absent `loss_fn`)."""
    return (
        isinstance(output, torch.Tensor)
        and output.numel() == 1
        and (output.is_floating_point() or output.is_complex())
    )


def check_loss(loss: Any, source: str) -> None:
    """Raise `LossError` unless `loss` (what `source` returned) is a one-element tensor."""
    if not isinstance(loss, torch.Tensor):
        raise LossError(f"{source} returned a {type(loss).__name__}, not a tensor")
    if loss.numel() != 1:
        raise LossError(
            f"{source} returned a tensor of shape {list(loss.shape)}: reduce it to a scalar "
            "(e.g. .mean())"
        )


def loss_value(summary: TensorSummary | None) -> float | None:
    """The loss as a number, from its summary (the magnitude of a complex one)."""
    if summary is None:
        return None
    if summary.values:
        value = summary.values[0]
        if isinstance(value, complex):
            return abs(value)
        return float(value)
    return summary.mean
