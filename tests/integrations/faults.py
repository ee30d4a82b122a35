"""Faults the trainer tests plant in a model (tests/integrations)."""

from __future__ import annotations

import torch


class NanGrad(torch.autograd.Function):
    """The identity forward, a NaN gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")
