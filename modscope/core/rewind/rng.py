"""The global random states and free memory, as the doctor's sandbox and rewind both need them:
`RngState` (captured without advancing any RNG, put back exactly) and `available_bytes`."""

from __future__ import annotations

import contextlib
import inspect
import random
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from modscope.core.contract.sizes import host_available


class RngState:
    """The global random states: torch (CPU and initialised CUDA devices), `random`, NumPy's
    (when imported), and the given `torch.Generator`s. Reading them advances none."""

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

    def same(self, other: RngState) -> bool:
        """True when no global RNG moved between `self` and `other`."""
        if self.python != other.python or not torch.equal(self.torch, other.torch):
            return False
        if (self.cuda is None) != (other.cuda is None):
            return False
        pairs = zip(self.cuda or (), other.cuda or (), strict=True)
        if not all(torch.equal(a, b) for a, b in pairs):
            return False
        if (self.numpy is None) != (other.numpy is None):
            return False
        if self.numpy is not None and other.numpy is not None:
            a, b = self.numpy, other.numpy
            return bool(a[0] == b[0] and (a[1] == b[1]).all() and a[2:] == b[2:])
        return True

    @property
    def nbytes(self) -> int:
        """About what the copy takes (the torch states, the script's generators' and the
        Python/NumPy Mersenne tables)."""
        tensors = [self.torch, *(self.cuda or ()), *(state for _, state in self.generators)]
        return sum(t.numel() * t.element_size() for t in tensors) + 8 * 625 * 2


def reachable_generators(
    namespace: Mapping[str, Any], callables: Iterable[Any] = ()
) -> tuple[torch.Generator, ...]:
    """The `torch.Generator`s an iteration may draw from beyond the global states: those named
    in a script's top level `namespace`, and those each of `callables` (the script's `inputs`,
    `loss_fn`, ...) holds in its closure or, for a bound method or a callable object, on its
    object. A function that draws its batch from one of them replays it only when its state is
    put back with the checkpoint."""
    found: dict[int, torch.Generator] = {}

    def add(values: Iterable[Any]) -> None:
        for v in values:
            if isinstance(v, torch.Generator):
                found.setdefault(id(v), v)

    add(namespace.values())
    for fn in callables:
        if not callable(fn) or isinstance(fn, torch.Tensor | torch.nn.Module):
            continue
        owner = getattr(fn, "__self__", None)
        if owner is None and not inspect.isfunction(fn) and not inspect.isbuiltin(fn):
            owner = fn  # a callable object
        if owner is not None and hasattr(owner, "__dict__"):
            add(vars(owner).values())
        function = getattr(fn, "__func__", fn)
        for cell in getattr(function, "__closure__", None) or ():
            with contextlib.suppress(ValueError):  # an empty cell has no contents
                add((cell.cell_contents,))
    return tuple(found.values())


def available_bytes(device: str) -> int | None:
    """Free memory on a device in bytes (`"cpu"`: what this process may still use,
    `sizes.host_available`), or None when it cannot be told."""
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        return host_available()
    if kind == "cuda" and torch.cuda.is_available():
        try:
            return torch.cuda.mem_get_info(torch.device(device))[0]
        except Exception:
            return None
    return None
