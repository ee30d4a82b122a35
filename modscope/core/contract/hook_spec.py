"""What a hook is, as plain data (torch-free): its kind and action, the `--hook` spec, its identity.

The app's hook dialog, the session controller and the engine share these; nothing here imports
torch, so the app can build and show them without it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class HookKind(str, enum.Enum):
    """The module hook kinds modscope attaches (docs/design.md section 2)."""

    FORWARD_PRE = "forward-pre"
    FORWARD = "forward"
    BACKWARD = "backward"
    BACKWARD_PRE = "backward-pre"
    LEGACY_BACKWARD = "legacy-backward"

    @property
    def is_backward(self) -> bool:
        return self in (HookKind.BACKWARD, HookKind.BACKWARD_PRE, HookKind.LEGACY_BACKWARD)


class HookAction(str, enum.Enum):
    """What a modscope hook does when it fires."""

    OBSERVE = "observe"
    SCALE = "scale"
    ZERO = "zero"
    PAUSE = "pause"


_KINDS = {kind.value: kind for kind in HookKind}
_ACTIONS = {action.value: action for action in HookAction}


class HookSpecError(ValueError):
    """A `--hook` spec that does not parse, or names no module."""


@dataclass(frozen=True)
class HookSpec:
    """`MODULE:KIND[:ACTION[=ARG]]`: where to hook, which kind, and what the hook does."""

    module: str
    kind: HookKind
    action: HookAction = HookAction.OBSERVE
    factor: float | None = None

    def __post_init__(self) -> None:
        if self.factor is not None and not math.isfinite(self.factor):
            raise HookSpecError(_not_finite(repr(self.factor), self.factor))

    @classmethod
    def parse(cls, text: str) -> HookSpec:
        """Parse `logModel:forward-pre:scale=2` (module paths may themselves contain colons)."""
        parts = text.split(":")
        if len(parts) >= 2 and parts[-1] in _KINDS:
            module, kind_text, action_text = ":".join(parts[:-1]), parts[-1], "observe"
        elif len(parts) >= 3 and parts[-2] in _KINDS:
            module, kind_text, action_text = ":".join(parts[:-2]), parts[-2], parts[-1]
        else:
            raise HookSpecError(
                f"hook spec {text!r}: expected MODULE:KIND[:ACTION[=ARG]] with KIND one of "
                f"{', '.join(_KINDS)}"
            )
        name, _, arg = action_text.partition("=")
        if name not in _ACTIONS:
            raise HookSpecError(
                f"hook spec {text!r}: action {name!r} is not one of {', '.join(_ACTIONS)}"
            )
        action = _ACTIONS[name]
        factor: float | None = None
        if action is HookAction.SCALE:
            factor = _factor(text, arg)
        elif arg:
            raise HookSpecError(f"hook spec {text!r}: action {name!r} takes no argument")
        if module == ".":
            module = ""
        return cls(module, _KINDS[kind_text], action, factor)

    def __str__(self) -> str:
        """The spec as `--hook` takes it; a scale still without its factor reads `scale`."""
        action = self.action.value
        if self.action is HookAction.SCALE and self.factor is not None:
            action += f"={self.factor:g}"
        return f"{self.module or '.'}:{self.kind.value}:{action}"


def _factor(text: str, arg: str) -> float:
    try:
        factor = float(arg)
    except ValueError:
        raise HookSpecError(f"hook spec {text!r}: scale needs a number, e.g. scale=2") from None
    if not math.isfinite(factor):
        raise HookSpecError(f"hook spec {text!r}: {_not_finite(arg, factor)}")
    return factor


def _not_finite(typed: str, factor: float) -> str:
    what = "NaN" if math.isnan(factor) else "infinite"
    return (
        f"scale needs a finite number, e.g. scale=2: {typed} is {what}, which would turn "
        "every value the hook touches into NaN or Inf"
    )


@dataclass(frozen=True)
class HookId:
    """Where one hook is registered, so that it can be found again and removed.

    `registry` is `"modscope"` for modscope's own hooks (`key` numbers them), the name of the
    dict that holds a module's hook (`"_forward_hooks"`, ...), of a global hook dict of
    `torch.nn.modules.module` (`"_global_forward_hooks"`, ...), or `"post_accumulate"` for a
    parameter's post-accumulate-grad hook (`param` names the parameter). `key` is the hook's
    key in that dict (PyTorch's handle id).
    """

    registry: str
    key: int
    param: str | None = None

    @property
    def is_modscope(self) -> bool:
        return self.registry == MODSCOPE_REGISTRY

    @property
    def is_global(self) -> bool:
        return self.registry.startswith("_global_")

    def __str__(self) -> str:
        if self.param is not None:
            return f"{self.registry}:{self.param}:{self.key}"
        return f"{self.registry}:{self.key}"


MODSCOPE_REGISTRY = "modscope"
POST_ACCUMULATE_REGISTRY = "post_accumulate"


@dataclass(frozen=True)
class HookInfo:
    """One hook that can fire on a module, whoever registered it."""

    hook_id: HookId
    module: str
    kind: str
    owner: str
    qualname: str
    location: str | None
    action: str | None = None
    flags: tuple[str, ...] = ()
    target: str | None = None
