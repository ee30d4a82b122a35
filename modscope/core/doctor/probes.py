"""Hooks the doctor puts on a sandboxed model: calls per forward, non-finite outputs, eval runs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.nn.utils.parametrize import ParametrizationList
from torch.utils.hooks import RemovableHandle

from modscope.core.contract.findings import Finding
from modscope.core.doctor import rules
from modscope.core.doctor.snapshot import CloneLevel, RngState, Snapshot
from modscope.core.model.walk import (
    compiled_region,
    distinct_modules,
    eager_hook,
    hook_sites,
    in_backward,
    subtree_tensors,
)
from modscope.core.script.batches import BatchSource, spread
from modscope.core.stats.summary import flatten_tensors

if TYPE_CHECKING:
    from typing_extensions import Buffer

# Two seeds for the eval-mode passes; the first is run twice to tell random draws from other
# non-determinism (GPU atomics, time).
SEEDS = (20240501, 77777)


def _parametrization_ids(model: nn.Module) -> set[int]:
    """Modules that compute a parametrized weight: accessing `weight` calls them, once per
    access (an LSTM reads its weights several times per forward), so they look reused."""
    out: set[int] = set()
    for _, module in distinct_modules(model):
        if isinstance(module, ParametrizationList):
            out.update(id(m) for m in module.modules())
    return out


def _has_nonfinite(value: Any) -> bool:
    for t in flatten_tensors(value):
        if (
            t is not None
            and t.layout == torch.strided
            and t.device.type != "meta"
            and (t.is_floating_point() or t.is_complex())
            and t.numel() > 0
            and not bool(torch.isfinite(t.detach()).all())
        ):
            return True
    return False


class ForwardProbe:
    """Forward-pre and forward hooks on every module of a sandboxed model.

    Counts how often each module runs within one call of the root module (`reused-module`;
    calls during backward, from activation checkpointing, do not count) and notes the first
    module, in the order forwards finish (innermost first), whose output held NaN or Inf.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = distinct_modules(model)
        self._excluded = _parametrization_ids(model)
        self._names = {id(m): (path, type(m).__name__) for path, m in self.modules}
        self._handles: list[RemovableHandle] = []
        self._depth = 0
        self._calls: dict[int, int] = {}
        self.max_calls: dict[int, int] = {}
        self.first_seen: dict[int, int] = {}
        self.step = 0
        self._nonfinite: tuple[str, str] | None = None

    def attach(self) -> None:
        compiled = compiled_region(self.model)
        try:
            for _, module, inside in hook_sites(self.modules, compiled):
                pre = eager_hook(self._pre(module), compiled=inside)
                post = eager_hook(self._post(module), compiled=inside)
                self._handles.append(module.register_forward_pre_hook(pre))
                self._handles.append(module.register_forward_hook(post))
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def begin_step(self, step: int) -> None:
        self.step = step
        self._depth = 0
        self._calls = {}
        self._nonfinite = None

    def take_nonfinite(self) -> tuple[str, str] | None:
        """The first module whose output was non-finite since the step began (path, type)."""
        found, self._nonfinite = self._nonfinite, None
        return found

    def _pre(self, module: nn.Module) -> Callable[..., None]:
        key = id(module)
        is_root = module is self.model
        counted = key not in self._excluded

        def pre(mod: nn.Module, args: Any) -> None:
            if is_root:
                if self._depth == 0:
                    self._calls = {}
                self._depth += 1
            if self._depth > 0 and counted and not in_backward():
                self._calls[key] = self._calls.get(key, 0) + 1

        return pre

    def _post(self, module: nn.Module) -> Callable[..., None]:
        key = id(module)
        is_root = module is self.model

        def post(mod: nn.Module, args: Any, output: Any) -> None:
            if self._nonfinite is None and _has_nonfinite(output):
                self._nonfinite = self._names[key]
            if is_root and self._depth > 0:
                self._depth -= 1
                if self._depth == 0:
                    for k, n in self._calls.items():
                        if n > self.max_calls.get(k, 0):
                            self.max_calls[k] = n
                            self.first_seen.setdefault(k, self.step)

        return post

    def reused_findings(self) -> list[Finding]:
        """`reused-module` for modules holding parameters that ran more than once in one
        forward; a module inside a reused one is left out when it ran no more often."""
        out = []
        reported: dict[str, int] = {}
        for path, module in self.modules:
            calls = self.max_calls.get(id(module), 0)
            if calls < 2:
                continue
            names = [n for n, _, _ in subtree_tensors(module, buffers=False)]
            if not names:
                continue
            if any(path.startswith(a + ".") and n >= calls for a, n in reported.items()):
                continue
            reported[path] = calls
            out.append(
                rules.reused_module(
                    path, type(module).__name__, calls, names, self.first_seen.get(id(module), 1)
                )
            )
        return out


# -- eval-mode determinism ----------------------------------------------------------------------


def _tensor_fingerprint(t: torch.Tensor) -> Any:
    if t.layout != torch.strided or t.device.type == "meta":
        return (tuple(t.shape), str(t.dtype))
    x = t.detach()
    if x.is_complex():
        x = torch.view_as_real(x)
    x = x.contiguous().reshape(-1)
    if x.device.type == "cpu":
        try:
            array = x.view(torch.uint8).numpy()
        except (RuntimeError, TypeError):
            pass  # NumPy missing, or a dtype it cannot view
        else:
            # NumPy's stubs give an array `__buffer__` from Python 3.12 on only; every array is one.
            digest = hashlib.blake2b(memoryview(cast("Buffer", array)), digest_size=16).digest()
            return (tuple(t.shape), str(t.dtype), digest)
    hash_tensor = getattr(torch, "hash_tensor", None)
    if hash_tensor is not None:
        try:
            return (tuple(t.shape), str(t.dtype), int(hash_tensor(x)))
        except (RuntimeError, TypeError):
            pass
    raw = x.view(torch.uint8).to(torch.int64)
    weights = torch.arange(raw.numel(), device=raw.device) % 251 + 1
    return (tuple(t.shape), str(t.dtype), int(raw.sum()), int((raw * weights).sum()))


def fingerprint(value: Any) -> tuple[Any, ...]:
    """Equal exactly when every tensor leaf of `value` holds the same bits (NaN included)."""
    return tuple(None if t is None else _tensor_fingerprint(t) for t in flatten_tensors(value))


class _PassRecorder:
    """Fingerprints of each module call's inputs and output, in the order forwards finish."""

    def __init__(self, modules: list[tuple[str, nn.Module]], compiled: dict[int, bool]) -> None:
        self.calls: list[tuple[int, Any, Any]] = []
        self._stack: list[Any] = []
        self._handles: list[RemovableHandle] = []
        for _, module, inside in hook_sites(modules, compiled):
            pre = eager_hook(self._pre, compiled=inside)
            self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            self._handles.append(
                module.register_forward_hook(eager_hook(self._post, compiled=inside))
            )

    def _pre(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        self._stack.append(fingerprint((args, kwargs)))

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        seen = self._stack.pop() if self._stack else None
        self.calls.append((id(module), seen, fingerprint(output)))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def eval_nondeterminism(model: nn.Module, script: Any) -> tuple[str, str] | None:
    """The module whose eval-mode forward draws random numbers, or None.

    One batch, forward passes under `torch.no_grad()` in eval mode with the torch, Python and
    NumPy random streams seeded with `SEEDS[0]`, `SEEDS[1]`, then `SEEDS[0]` again; the model is
    restored between passes, so state a forward changes (a plain running average) cannot make
    the passes differ. Reported only when the two seeds give different outputs, the same seed
    gives the same output, and some module saw equal inputs but gave different outputs (the
    innermost first): randomness in the inputs or the loss code is not the model's. The model
    is left in eval mode (the caller restores it). Raises what the user's forward raises.
    """
    source = BatchSource(script.inputs)
    if not source.defined:
        return None
    batch = source.next()
    modules = distinct_modules(model)
    names = {id(m): (path, type(m).__name__) for path, m in modules}
    compiled = compiled_region(model)
    model.eval()
    devices = sorted(
        {t.device.index or 0 for _, t, _ in subtree_tensors(model) if t.device.type == "cuda"}
    )
    snapshot = Snapshot(model, clone=CloneLevel.BUFFERS)

    def run(seed: int) -> list[tuple[int, Any, Any]]:
        recorder = _PassRecorder(modules, compiled)
        rng = RngState()
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(seed)
                _seed_others(seed)
                if script.compute_loss is not None:
                    script.compute_loss(model, batch)
                else:
                    args, kwargs = spread(batch)
                    model(*args, **kwargs)
        finally:
            recorder.remove()
            rng.restore()
            snapshot.restore()
        return recorder.calls

    first = run(SEEDS[0])
    second = run(SEEDS[1])
    root = id(model)
    root_first = next((c for c in first if c[0] == root), None)
    root_second = next((c for c in second if c[0] == root), None)
    if root_first is None or root_second is None or root_first[2] == root_second[2]:
        return None
    again = run(SEEDS[0])
    if again != first:
        return None  # not driven by the random streams
    for a, b in zip(first, second, strict=False):
        if a[0] != b[0]:
            break  # the passes took different paths: nothing further lines up
        if a[1] == b[1] and a[2] != b[2]:
            return names.get(a[0])
    return None


def _seed_others(seed: int) -> None:
    import random
    import sys

    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % (2**32))
