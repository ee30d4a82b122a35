"""The loss of an iteration as the script contract reads it, its value for a person, and the
tensor that stands for the model's output beside it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from modscope.core.contract.tensors import TensorSummary
from modscope.core.stats.summary import first_tensor


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


def main_output(output: Any) -> torch.Tensor | None:
    """The tensor that stands for a model's output (the step's `output`): the first tensor in
    it, except that a mapping holding a `loss` beside other tensors (a Hugging Face
    `ModelOutput` computed with labels) gives its first tensor after the loss: the logits, not
    the loss again."""
    if isinstance(output, Mapping) and isinstance(output.get("loss"), torch.Tensor):
        rest = first_tensor([v for k, v in output.items() if k != "loss"])
        if rest is not None:
            return rest
    return first_tensor(output)
