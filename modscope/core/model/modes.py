"""Which modules compute something else in eval mode than in training mode."""

from __future__ import annotations

import types
import weakref

from torch import nn

from modscope.core.model.walk import distinct_modules

_TORCH_NN = "torch.nn."

_READS_TRAINING: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()
"""Per class, whether its forward reads `training` (weak: a reloaded script's classes go)."""


def mode_matters(module: nn.Module) -> bool:
    """True for a module whose forward computes something else in eval mode: batch and instance
    norms that track statistics, dropouts with p > 0, RNNs and attention with dropout, and any
    other class whose forward reads `self.training`."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.modules.instancenorm._InstanceNorm):
        return bool(module.track_running_stats)
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    if isinstance(module, nn.RNNBase | nn.MultiheadAttention):
        return float(getattr(module, "dropout", 0.0) or 0.0) > 0
    cls = type(module)
    if cls.__module__.startswith(_TORCH_NN) or cls.__module__ == "torch.nn":
        return False
    return forward_reads_training(cls)


def subtree_mode_matters(module: nn.Module) -> bool:
    """True when `module` or a module registered below it computes something else in eval mode."""
    return any(mode_matters(m) for _, m in distinct_modules(module))


def forward_reads_training(cls: type) -> bool:
    """True when the forward of a module class reads an attribute named `training`.

    Read from the bytecode (its names and constants, nested functions included), so classes made
    at run time without a source file are judged too.
    """
    known = _READS_TRAINING.get(cls)
    if known is None:
        forward = getattr(cls, "forward", None)
        code = getattr(forward, "__code__", None)
        known = code is not None and _code_reads_training(code)
        _READS_TRAINING[cls] = known
    return known


def _code_reads_training(code: types.CodeType) -> bool:
    if "training" in code.co_names or "training" in code.co_consts:
        return True
    return any(isinstance(c, types.CodeType) and _code_reads_training(c) for c in code.co_consts)
