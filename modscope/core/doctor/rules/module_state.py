"""Findings about one module's state and behaviour: train/eval mode, device and dtype
placement, randomness in eval mode, a module run twice in one forward."""

from __future__ import annotations

from collections.abc import Sequence

from modscope.core.contract.findings import Finding, FindingKind
from modscope.core.contract.fmt import plural
from modscope.core.doctor.rules.wording import accessor, finding, last_name, listing, where


def mode_mismatch(
    path: str, type_name: str, training: bool, root_training: bool, step: int | None
) -> Finding:
    mode = "train" if training else "eval"
    root_mode = "train" if root_training else "eval"
    effect = (
        "it uses running statistics without updating them and its dropout is off"
        if not training
        else "its dropout stays on and BatchNorm keeps updating running statistics"
    )
    return finding(
        FindingKind.MODE_MISMATCH,
        path,
        f"{where(path, type_name)} is in {mode} mode while the model is in {root_mode} mode: "
        f"{effect}. Intended for a frozen BatchNorm, a slip otherwise.",
        f"model.{root_mode}() sets every submodule; to keep {path} in {mode} mode on purpose, "
        f"override train(): super().train(mode); {accessor(path, 'self')}.{mode}()",
        step=step,
    )


def device_mismatch(path: str, type_name: str, placement: Sequence[str]) -> Finding:
    return finding(
        FindingKind.DEVICE_MISMATCH,
        path,
        f"{where(path, type_name)} holds tensors on different devices ({listing(placement)}): "
        "its forward fails with 'Expected all tensors to be on the same device', or copies "
        "every call.",
        "model.to(device) after every tensor is created; create new tensors with "
        "device=self.weight.device (or register them as buffers so .to() moves them)",
    )


def dtype_mismatch(path: str, type_name: str, placement: Sequence[str]) -> Finding:
    return finding(
        FindingKind.DTYPE_MISMATCH,
        path,
        f"{where(path, type_name)} holds floating tensors of different dtypes "
        f"({listing(placement)}): operations between them promote or fail "
        "('expected scalar type').",
        "model.to(dtype) (or .half() / .float()) after every tensor is created, or create them "
        "with dtype=self.weight.dtype",
    )


def eval_nondeterministic(path: str, type_name: str, step: int | None = None) -> Finding:
    inside = "the model's own forward" if not path else f"the forward of {where(path, type_name)}"
    return finding(
        FindingKind.EVAL_NONDETERMINISTIC,
        path,
        "in eval mode two forward passes on the same batch differ (with different random seeds; "
        f"the same seed gives the same result): {inside} draws random numbers whatever "
        "self.training says, e.g. F.dropout(x, p) without training=, so evaluation and "
        "inference are noisy.",
        "F.dropout(x, p, training=self.training), or an nn.Dropout(p) submodule, which follows "
        "model.eval() itself",
        step=step,
    )


def reused_module(
    path: str, type_name: str, calls: int, names: Sequence[str], step: int
) -> Finding:
    return finding(
        FindingKind.REUSED_MODULE,
        path,
        f"{where(path, type_name)} runs {calls} times in one forward: its "
        f"{plural(len(names), 'parameter')} ({listing(names)}) "
        f"{'collects' if len(names) == 1 else 'collect'} the gradient of every call, summed "
        "(the same as shared weights).",
        "nothing to fix if sharing is intended; for separate layers create one instance per "
        f"call: self.{last_name(path)}_2 = {type_name}(...), and call each once",
        step=step,
    )
