"""Where the doctor runs the model: a deep copy when memory allows, else the originals, restored.

`Snapshot` records everything a forward, a backward and an optimizer step can change through a
model (module attributes and registries, hook tables, train/eval flags, parameters, buffers,
gradients, plain tensor attributes and the containers that hold them, optimizer and scheduler
state, the RNG states) and puts it back. `Sandbox` chooses between a copy and a snapshot.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import os
import random
import sys
from collections import deque
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin

from modscope.core.doctor.walk import Reachable, is_modscope_hook
from modscope.core.session import Session

MEMORY_FRACTION = 0.25
"""Copy model and optimizer when their tensors take less than this share of free memory."""

_HOOK_TABLES = (
    "_forward_pre_hooks",
    "_forward_hooks",
    "_backward_pre_hooks",
    "_backward_hooks",
)


class CloneLevel(enum.Enum):
    """Which tensor values a `Snapshot` copies (references and structure are always kept)."""

    NONE = "none"
    BUFFERS = "buffers"
    ALL = "all"


@dataclasses.dataclass
class _SavedTensor:
    tensor: torch.Tensor
    cls: type
    data: torch.Tensor
    signature: tuple[Any, ...]
    version: int
    requires_grad: bool
    grad: torch.Tensor | None
    clone: torch.Tensor | None


def _signature(t: torch.Tensor) -> tuple[Any, ...]:
    if isinstance(t, UninitializedTensorMixin):
        return ("uninitialized", t.dtype, t.device)
    try:
        return (t.dtype, t.device, tuple(t.shape), t.stride(), t.storage_offset(), t.data_ptr())
    except Exception:  # sparse and exotic layouts have no strides or pointer
        return (t.dtype, t.device, tuple(t.shape))


def _same(t: torch.Tensor, saved: torch.Tensor) -> bool:
    try:
        return t.shape == saved.shape and t.dtype == saved.dtype and torch.equal(t, saved)
    except Exception:  # layouts torch.equal does not support: restore to be safe
        return False


def _contents(container: Any) -> Any:
    if isinstance(container, dict):
        return dict(container)
    if isinstance(container, (set, list, deque)):
        return list(container)
    return None


def _put_back(container: Any, saved: Any) -> None:
    if isinstance(container, dict):
        if container.keys() != saved.keys() or any(container[k] is not v for k, v in saved.items()):
            container.clear()
            container.update(saved)
    elif isinstance(container, list):
        if len(container) != len(saved) or any(
            a is not b for a, b in zip(container, saved, strict=True)
        ):
            container[:] = saved
    elif isinstance(container, (set, deque)):
        container.clear()
        if isinstance(container, set):
            container.update(saved)
        else:
            container.extend(saved)


class RngState:
    """The global random states: torch (CPU and initialized CUDA devices), `random`, NumPy's."""

    def __init__(self, generators: tuple[torch.Generator, ...] = ()) -> None:
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.python = random.getstate()
        numpy = sys.modules.get("numpy")
        self.numpy = numpy.random.get_state() if numpy is not None else None
        self.generators = [(g, g.get_state()) for g in generators]

    def restore(self) -> None:
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        random.setstate(self.python)
        numpy = sys.modules.get("numpy")
        if self.numpy is not None and numpy is not None:
            numpy.random.set_state(self.numpy)
        for g, state in self.generators:
            g.set_state(state)


class Snapshot:
    """What running `model` (with its optimizer and scheduler) can change, to be put back.

    With `CloneLevel.NONE` values changed in place are not restored (only references, which
    is enough to guard the originals while a copy runs); `BUFFERS` restores the values of
    buffers and plain tensors; `ALL` also those of parameters, gradients and optimizer state.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        clone: CloneLevel = CloneLevel.ALL,
        generators: tuple[torch.Generator, ...] = (),
    ) -> None:
        reach = Reachable(model)
        self.rng = RngState(generators)
        self._modules = [(m, type(m), dict(m.__dict__)) for m in reach.modules]
        containers: dict[int, Any] = {}
        for m in reach.modules:
            for value in m.__dict__.values():
                if isinstance(value, (dict, set, list, deque)):
                    containers.setdefault(id(value), value)
        for c in reach.containers:
            containers.setdefault(id(c), c)
        self._optimizer = optimizer
        self._scheduler = scheduler
        tensors: dict[int, tuple[torch.Tensor, bool]] = {}
        parameters = {id(t) for t in reach.tensors if isinstance(t, nn.Parameter)}

        def add(t: Any, values: bool) -> None:
            if isinstance(t, torch.Tensor) and id(t) not in tensors:
                tensors[id(t)] = (t, values)

        everything = clone is CloneLevel.ALL
        for t in reach.tensors:
            add(t, everything or (clone is CloneLevel.BUFFERS and id(t) not in parameters))
            if t.is_leaf and t.grad is not None:
                add(t.grad, everything)
        if optimizer is not None:
            self._optimizer_dict = dict(optimizer.__dict__)
            self._groups = list(optimizer.param_groups)
            for group in optimizer.param_groups:
                containers.setdefault(id(group), group)
                for value in group.values():
                    add(value, everything)
                    if isinstance(value, list):
                        containers.setdefault(id(value), value)
            self._state = dict(optimizer.state)
            for key, per_param in optimizer.state.items():
                add(key, everything)
                if isinstance(per_param, dict):
                    containers.setdefault(id(per_param), per_param)
                    for value in per_param.values():
                        add(value, everything)
        if scheduler is not None:
            self._scheduler_dict = dict(scheduler.__dict__)
        self._containers = [(c, _contents(c)) for c in containers.values()]
        self._tensors = [self._save(t, values) for t, values in tensors.values()]

    @staticmethod
    def _save(t: torch.Tensor, values: bool) -> _SavedTensor:
        clone = None
        if values and not isinstance(t, UninitializedTensorMixin):
            with torch.no_grad():
                clone = t.detach().clone()
        return _SavedTensor(
            tensor=t,
            cls=type(t),
            data=t.data,
            signature=_signature(t),
            version=t._version,
            requires_grad=t.requires_grad,
            grad=t.grad if t.is_leaf else None,
            clone=clone,
        )

    def restore(self) -> None:
        """Put everything back as it was when the snapshot was taken."""
        for container, saved in self._containers:
            _put_back(container, saved)
        for module, cls, attrs in self._modules:
            if type(module) is not cls:
                module.__class__ = cls
            current = module.__dict__
            for key in [k for k in current if k not in attrs]:
                del current[key]
            for key, value in attrs.items():
                if current.get(key, attrs) is not value:
                    current[key] = value
        with torch.no_grad():
            for s in self._tensors:
                self._restore_tensor(s)
        if self._optimizer is not None:
            opt = self._optimizer
            _put_back(opt.__dict__, self._optimizer_dict)
            opt.param_groups[:] = self._groups
            _put_back(opt.state, self._state)
        if self._scheduler is not None:
            _put_back(self._scheduler.__dict__, self._scheduler_dict)
        self.rng.restore()

    @staticmethod
    def _restore_tensor(s: _SavedTensor) -> None:
        t = s.tensor
        if type(t) is not s.cls:
            t.__class__ = s.cls  # a lazy parameter materialized (UninitializedParameter)
        if _signature(t) != s.signature:
            t.data = s.data  # `.data` was replaced, or the tensor materialized or resized
        # The version counter misses some in-place writes (BatchNorm's running statistics are
        # updated inside its kernel, and their version stays), so compare the values too.
        if s.clone is not None and (t._version != s.version or not _same(t, s.clone)):
            if t.shape == s.clone.shape and t.dtype == s.clone.dtype:
                t.copy_(s.clone)
            else:
                t.data = s.clone
        if t.is_leaf:
            if t.requires_grad != s.requires_grad:
                t.requires_grad_(s.requires_grad)
            if t.grad is not s.grad:
                t.grad = s.grad


def strip_modscope_hooks(model: nn.Module) -> None:
    """Remove the module hooks modscope's own hook manager added (a copy must not report to the
    session it was copied from)."""
    for module in Reachable(model).modules:
        for table in _HOOK_TABLES:
            hooks = getattr(module, table, None)
            if hooks:
                for key in [k for k, fn in hooks.items() if is_modscope_hook(fn)]:
                    del hooks[key]


def _rewrap_scheduler_step(
    original: torch.optim.Optimizer, optimizer: torch.optim.Optimizer
) -> None:
    """An LR scheduler wraps `optimizer.step` in a closure holding a weak reference to *its*
    optimizer. Optimizer pickling drops that instance attribute (the scheduler then warns that
    step was overridden), and a copy that kept it would step the original: wrap the copy's own."""
    if not getattr(original.step, "_wrapped_by_lr_sched", False):
        return
    func = type(optimizer).step

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        optimizer._opt_called = True  # type: ignore[attr-defined]
        return func(optimizer, *args, **kwargs)

    wrapper._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    optimizer.step = wrapper  # type: ignore[method-assign]


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


def available_bytes(device: str) -> int | None:
    """Free memory on a device in bytes, or None when it cannot be told."""
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    if kind == "cuda" and torch.cuda.is_available():
        try:
            return torch.cuda.mem_get_info(torch.device(device))[0]
        except Exception:
            return None
    return None


def fits(need: dict[str, int], fraction: float) -> bool:
    """True when on every device `need` is below `fraction` of the free memory (or unknown)."""
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
    memory and copying works; else a session on the originals, restored on exit from a
    `Snapshot` (without optimizer steps when even a snapshot would not fit). Either way the RNG
    states, train/eval flags and everything else a `Snapshot` holds are as before on exit.
    """

    def __init__(self, session: Session, *, fraction: float = MEMORY_FRACTION) -> None:
        self.source = session
        self.fraction = fraction
        self.mode: SandboxMode | None = None
        self.notes: list[str] = []
        self.session: Session | None = None
        self.steps_allowed = True
        self._guard: Snapshot | None = None
        self._swapped: list[tuple[dict[str, Any], str, Any]] = []

    def __enter__(self) -> Session:
        script = self.source.script
        model, optimizer, scheduler = script.model, script.optimizer, script.scheduler
        namespace = vars(script.module) if script.module is not None else {}
        generators = tuple(v for v in namespace.values() if isinstance(v, torch.Generator))
        need = state_bytes(model, optimizer)
        if fits(need, self.fraction):
            self._guard = Snapshot(
                model, optimizer, scheduler, clone=CloneLevel.NONE, generators=generators
            )
            copied = self._copy(model, optimizer, scheduler, namespace)
            if copied is not None:
                self.mode = SandboxMode.COPY
                return self._start(
                    dataclasses.replace(
                        script, model=copied[0], optimizer=copied[1], scheduler=copied[2]
                    )
                )
        copy_failed = self._guard is not None
        if copy_failed or fits(need, 2 * self.fraction):
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
        self.session = Session(script, sink=self.source.sink)
        return self.session

    def _copy(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        namespace: dict[str, Any],
    ) -> tuple[nn.Module, Any, Any] | None:
        memo: dict[int, Any] = {}
        # deepcopy refuses non-leaf tensors (a buffer that carries autograd history, the weight
        # the old weight_norm derives): copy their values without the history.
        with torch.no_grad():
            for t in Reachable(model).tensors:
                if t.grad_fn is not None:
                    memo[id(t)] = t.detach().clone()
        try:
            copied = copy.deepcopy((model, optimizer, scheduler), memo)
        except Exception as exc:  # an attribute that cannot be copied (a lock, a file, ...)
            self.notes.append(
                f"the model could not be copied ({type(exc).__name__}); checks ran on it and "
                "restored it"
            )
            return None
        strip_modscope_hooks(copied[0])
        if optimizer is not None and copied[1] is not None:
            _rewrap_scheduler_step(optimizer, copied[1])
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
            for namespace, name, value in reversed(self._swapped):
                namespace[name] = value
            self._swapped.clear()
            if self._guard is not None:
                self._guard.restore()
            self.session = None
