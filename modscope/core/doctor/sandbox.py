"""Where the doctor runs the model: a deep copy when memory allows and the copy is independent,
else the originals, restored from a `Snapshot` afterwards."""

from __future__ import annotations

import dataclasses
import enum
from types import TracebackType
from typing import Any

import torch
from torch import nn

from modscope.core.doctor.model_copy import Tripwire, deep_copy, shared_code, strip_modscope_hooks
from modscope.core.doctor.reachable import Reachable
from modscope.core.doctor.snapshot import CloneLevel, RngState, Snapshot
from modscope.core.model.walk import refusing_hooks, refusing_phrase
from modscope.core.rewind.rng import available_bytes
from modscope.core.session import Session, SessionOptions

__all__ = [
    "MEMORY_FRACTION",
    "CloneLevel",
    "RngState",
    "Sandbox",
    "SandboxMode",
    "Snapshot",
    "available_bytes",
    "fits",
    "state_bytes",
]

MEMORY_FRACTION = 0.25
"""Copy model and optimizer when their tensors take less than this share of free memory."""

# -- memory -------------------------------------------------------------------------------------


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, int]:
    """Bytes of the tensors a copy would duplicate, per device: model tensors, gradients and
    optimizer state."""
    out: dict[str, int] = {}
    seen: set[int] = set()

    def add(t: Any) -> None:
        if not isinstance(t, torch.Tensor) or id(t) in seen:
            return
        seen.add(id(t))
        try:
            n = t.numel() * t.element_size()
        except Exception:
            return
        key = str(t.device)
        out[key] = out.get(key, 0) + n

    for t in Reachable(model).tensors:
        add(t)
        if t.is_leaf:
            add(t.grad)
    if optimizer is not None:
        for per_param in optimizer.state.values():
            if isinstance(per_param, dict):
                for value in per_param.values():
                    add(value)
    return out


def fits(need: dict[str, int], fraction: float) -> bool:
    """True when on every device `need` is below `fraction` of the free memory (or unknown): on
    the CPU what this process may still use, within its rlimits and cgroup as `--memory-budget`
    reckons it (`sizes.host_available`)."""
    for device, n in need.items():
        free = available_bytes(device)
        if free is not None and n > fraction * free:
            return False
    return True


# -- the sandbox --------------------------------------------------------------------------------


class SandboxMode(str, enum.Enum):
    """How the dynamic checks are kept off the user's objects."""

    COPY = "copy"
    RESTORE = "restore"
    RESTORE_NO_STEP = "restore-no-step"


class Sandbox:
    """A session for the dynamic checks that leaves the user's model as it found it.

    Entering gives a `Session` on a deep copy of model, optimizer and scheduler (with the
    script's globals that name them pointing at the copies meanwhile, so a `train_step` that
    uses the global `optimizer` steps the copy) when their tensors take under `fraction` of free
    memory, copying works, and the copy does not reach the original through code
    (`model_copy.shared_code`); else a session on the originals, restored on exit from a
    `Snapshot` (without optimizer steps when even a snapshot would not fit). `copy=False` skips
    the copy. Either way the RNG states, train/eval flags and everything else a `Snapshot` holds
    are as before on exit.

    While a copy runs, `shares_code()` tells whether it touched the original after all (it
    called one of the original's modules, or wrote an original tensor or gradient): its results
    are then not the model's, and the caller runs the checks again with `copy=False`. The
    original's gradients are put back on exit either way.
    """

    def __init__(
        self, session: Session, *, fraction: float = MEMORY_FRACTION, copy: bool = True
    ) -> None:
        self.source = session
        self.fraction = fraction
        self.allow_copy = copy
        self.mode: SandboxMode | None = None
        self.notes: list[str] = []
        self.session: Session | None = None
        self.steps_allowed = True
        self.shared: str | None = None
        """How the copy was found to reach the original, in words (then it is not used)."""
        self._guard: Snapshot | None = None
        self._tripwire: Tripwire | None = None
        self._swapped: list[tuple[dict[str, Any], str, Any]] = []

    def __enter__(self) -> Session:
        script = self.source.script
        model, optimizer, scheduler = script.model, script.optimizer, script.scheduler
        namespace = vars(script.module) if script.module is not None else {}
        generators = script.generators()
        need = state_bytes(model, optimizer)
        tried_copy = False
        if self.allow_copy and fits(need, self.fraction):
            tried_copy = True
            self._guard = Snapshot(
                model, optimizer, scheduler, clone=CloneLevel.GRADS, generators=generators
            )
            copied = self._copy(model, optimizer, scheduler, namespace)
            if copied is not None:
                self.mode = SandboxMode.COPY
                self._tripwire = Tripwire(model)
                return self._start(
                    dataclasses.replace(
                        script, model=copied[0], optimizer=copied[1], scheduler=copied[2]
                    )
                )
        if tried_copy or not self.allow_copy or fits(need, 2 * self.fraction):
            self.mode = SandboxMode.RESTORE
            self._guard = Snapshot(model, optimizer, scheduler, generators=generators)
        else:
            self.mode = SandboxMode.RESTORE_NO_STEP
            self._guard = Snapshot(
                model, optimizer, scheduler, clone=CloneLevel.BUFFERS, generators=generators
            )
            if script.train_step is not None:
                self.steps_allowed = False
                self.notes.append(
                    "too large to copy or snapshot: train_step iterations were not run"
                )
            else:
                self.notes.append(
                    "too large to copy or snapshot: iterations ran without optimizer steps"
                )
            script = dataclasses.replace(script, optimizer=None, scheduler=None)
        strip_modscope_hooks(model)
        return self._start(script)

    def _start(self, script: Any) -> Session:
        self.session = Session(script, SessionOptions(sink=self.source.sink))
        return self.session

    def _copy(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        namespace: dict[str, Any],
    ) -> tuple[nn.Module, Any, Any] | None:
        scripted = refusing_hooks(model)
        if scripted:
            # deepcopy of a ScriptModule gives non-leaf clones of its parameters (CloneBackward):
            # they would never train, and the copied optimizer would hold other tensors.
            self.notes.append(
                f"{refusing_phrase(scripted)} cannot be copied faithfully: checks ran on the "
                "model itself and restored it"
            )
            return None
        try:
            copied, memo = deep_copy(model, optimizer, scheduler)
        except Exception as exc:  # an attribute that cannot be copied (a lock, a file, ...)
            self.notes.append(
                f"the model could not be copied ({type(exc).__name__}); checks ran on it and "
                "restored it"
            )
            return None
        self.shared = shared_code(copied[0], model)
        if self.shared is not None:
            self.notes.append(_shared_note(self.shared))
            return None
        originals = (nn.Module, torch.Tensor, torch.optim.Optimizer)
        for name, value in list(namespace.items()):
            twin = memo.get(id(value))
            if (
                twin is not None
                and twin is not value
                and (isinstance(value, originals) or value is scheduler)
            ):
                self._swapped.append((namespace, name, value))
                namespace[name] = twin
        return copied

    def shares_code(self) -> bool:
        """True when the copy ran the original's code or wrote its tensors since entering (then
        `shared` says how, and a note says what was done)."""
        if self.mode is not SandboxMode.COPY or self._guard is None:
            return False
        if self.shared is None:
            tripped = self._tripwire.tripped if self._tripwire is not None else None
            self.shared = tripped or self._guard.touched()
            if self.shared is not None:
                self.notes.append(_shared_note(self.shared))
        return self.shared is not None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.session is not None:
                self.session.close()
        finally:
            if self._tripwire is not None:
                self._tripwire.remove()
                self._tripwire = None
            for namespace, name, value in reversed(self._swapped):
                namespace[name] = value
            self._swapped.clear()
            if self._guard is not None:
                self._guard.restore()
            self.session = None


def _shared_note(how: str) -> str:
    return (
        f"a copy of the model still runs the model's own code ({how}): checks ran on the "
        "model itself and restored it"
    )
