"""Rewind: a copy of the training state kept before each iteration, thinned to a memory budget.

A `Checkpoint` holds what decides the next iterations bit for bit: the `state_dict` tensors and
`requires_grad`, every `.grad`, the training flags, the optimizer's and the scheduler's state,
every RNG (python, numpy when imported, torch CPU, CUDA when initialised, and the script's own
`torch.Generator`s: `rng.reachable_generators`), the position of the
input source (`BatchSource.position`) and the step. Copies are made under `no_grad` and read no
RNG (the observer rule, docs/design.md section 5). Not kept: attributes of the model that are
no state (a plain `self.calls += 1`), state held by `loss_fn` or an `inputs` function other than the
RNGs, and a module's `get_extra_state()`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from modscope.core.contract.sizes import host_available
from modscope.core.model.walk import distinct_modules, own_tensors
from modscope.core.rewind.rng import RngState, available_bytes
from modscope.core.script.batches import BatchSource, clone_tree, tensor_bytes

DEFAULT_BUDGET = 1 << 30
"""The budget's ceiling: 1 GiB (or 25% of available memory, whichever is smaller)."""
RECENT = 4
"""Thinning keeps the checkpoints of the newest `RECENT` steps whole."""


class RewindError(Exception):
    """A rewind that cannot be done: rewind is off, or the step is before the oldest copy."""


def rewind_budget(budget: int | float | None, model: nn.Module | None = None) -> int:
    """The rewind budget in bytes: `budget` bytes as given, a share (a float) of the memory
    available to this process, or (None, or a share that cannot be told) `default_budget`."""
    if isinstance(budget, int):
        return budget
    if budget is None:
        return default_budget(model)
    available = host_available()
    return int(available * budget) if available is not None else default_budget(model)


def default_budget(model: nn.Module | None = None) -> int:
    """1 GiB or 25% of the available memory, whichever is smaller; with CUDA state, also 25% of
    the free memory of each CUDA device the model uses (copies stay on the model's device)."""
    budget = DEFAULT_BUDGET
    host = host_available()
    if host:
        budget = min(budget, host // 4)
    state = model.state_dict().values() if model is not None else ()
    for device in {t.device for t in state if isinstance(t, torch.Tensor)}:
        free = available_bytes(str(device)) if device.type == "cuda" else None
        if free is not None:
            budget = min(budget, free // 4)
    return budget


class _State(NamedTuple):
    """A model state the other timeline keeps, with its size (counted once, not per check)."""

    tensors: dict[str, torch.Tensor]
    nbytes: int

    @classmethod
    def of(cls, tensors: dict[str, torch.Tensor]) -> _State:
        return cls(tensors, _state_bytes(tensors))


@dataclass(eq=False)
class Checkpoint:
    """The training state before iteration `step + 1` (after `step` iterations)."""

    step: int
    batch_position: int
    state: dict[str, torch.Tensor]
    parameters: tuple[torch.Tensor, ...]
    requires_grad: tuple[bool, ...]
    grads: tuple[torch.Tensor | None, ...]
    training: tuple[bool, ...]
    optimizer: dict[str, Any] | None
    scheduler: dict[str, Any] | None
    rng: RngState
    nbytes: int


def keeps(step: int, newest: int) -> bool:
    """The thinning rule: step 0, the newest `RECENT` steps, and further back, at distance
    `d` in [2^k, 2^(k+1)) from the newest, the steps that are multiples of 2^(k-1).

    As `newest` grows a step's divisor only grows, so a step once dropped is never wanted
    again, and any step is at most `d / 2` iterations after a kept one.
    """
    distance = newest - step
    if step == 0 or distance < RECENT:
        return True
    return step % (1 << max(0, distance.bit_length() - 2)) == 0


class Checkpoints:
    """The checkpoints of one session, oldest first, within `budget` bytes (the batches a
    `BatchSource` keeps for replay count too)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        batches: BatchSource,
        budget: int | float | None = None,
        generators: tuple[torch.Generator, ...] = (),
    ) -> None:
        self.model = model
        self.generators = generators
        """The script's own generators (`rng.reachable_generators`), kept with the RNGs."""
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.batches = batches
        self.budget = rewind_budget(budget, model)
        self.note: str | None = None
        self.thinned = False
        self._kept: dict[int, Checkpoint] = {}
        self._other: dict[int, _State] = {}
        """The model state after each step of the other timeline (`keep_other`), by step."""
        if self.budget == 0:
            self._disable("its memory budget is 0 (--rewind-budget)")
        elif any(is_lazy(p) for p in _parameters(model)):
            self._disable("the model has lazy parameters (their first forward reshapes them)")
        else:
            batches.keep_replay(self._rng)

    @property
    def enabled(self) -> bool:
        return self.note is None

    def steps(self) -> tuple[int, ...]:
        """The steps whose checkpoint is kept, oldest first."""
        return tuple(sorted(self._kept))

    @property
    def nbytes(self) -> int:
        """The bytes held: every kept checkpoint, the other timeline's states and the batches
        kept for replay."""
        kept = sum(c.nbytes for c in self._kept.values())
        other = sum(state.nbytes for state in self._other.values())
        return kept + other + self.batches.kept_bytes

    def take(self, step: int) -> None:
        """Keep the state as it is now as the checkpoint of `step` (replacing one there)."""
        if not self.enabled:
            return
        estimate = self._estimate()
        if estimate > self.budget:
            self._disable(
                f"one copy of the training state takes {_size(estimate)}, more than the "
                f"rewind budget of {_size(self.budget)}"
            )
            return
        try:
            checkpoint = self._capture(step)
        except Exception as exc:  # a scheduler state that cannot be copied, a raising state_dict
            self._disable(f"the training state cannot be copied ({type(exc).__name__}: {exc})")
            return
        self.truncate(step - 1)
        self._kept[step] = checkpoint
        self._thin(step)

    def truncate(self, step: int) -> None:
        """Forget the checkpoints after `step` (another timeline from there on)."""
        for s in [s for s in self._kept if s > step]:
            del self._kept[s]
        self._thin()

    def keep_other(self, after: int, present: int) -> None:
        """Before a rewind to `after`: keep the model state after each step from `after + 1`
        to `present` (the one running now) as the other timeline, from the checkpoints there
        (not copied again) and one copy of the state now, for `other_state`. Only the model
        state is kept (no gradients, optimizer or RNG: nothing re-runs from it)."""
        if not self.enabled:
            return
        self._other = {s: _State.of(c.state) for s, c in self._kept.items() if s > after}
        if present not in self._other:
            self._other[present] = _State.of(_state_copy(self.model))

    def widen_other(self, after: int, fork: int) -> None:
        """Before a rewind to `after`, earlier than the other timeline's `fork`: the steps
        from `after + 1` to `fork` are still the same in both timelines, so this timeline's
        checkpoints there are the other's states too (kept before they are truncated)."""
        for s, c in self._kept.items():
            if after < s <= fork:
                self._other.setdefault(s, _State.of(c.state))

    def forget_other(self) -> None:
        """Drop the other timeline's states."""
        self._other.clear()

    def other_state(self, step: int) -> dict[str, torch.Tensor] | None:
        """The model state after `step` in the other timeline (None where none is kept)."""
        kept = self._other.get(step)
        return kept.tensors if kept is not None else None

    def other_steps(self) -> tuple[int, ...]:
        """The steps of the other timeline whose model state is kept, oldest first."""
        return tuple(sorted(self._other))

    def state(self, step: int) -> dict[str, torch.Tensor] | None:
        """The model state after `step` in this timeline, from its checkpoint (None where
        none is kept)."""
        c = self._kept.get(step)
        return c.state if c is not None else None

    def restore(self, step: int) -> int:
        """Restore the newest checkpoint at or before `step`; returns its step."""
        if not self.enabled:
            raise RewindError(self.note)
        earlier = [s for s in self._kept if s <= step]
        if not earlier:
            oldest = min(self._kept, default=None)
            raise RewindError(f"step {step} is before the oldest checkpoint ({oldest})")
        checkpoint = self._kept[max(earlier)]
        self._restore(checkpoint)
        return checkpoint.step

    # -- copying ------------------------------------------------------------------------------

    def _estimate(self) -> int:
        state = self.model.state_dict(keep_vars=True).values()
        distinct = {id(t): t for t in state if isinstance(t, torch.Tensor)}
        grads = [p.grad for p in _parameters(self.model) if p.grad is not None]
        optimizer = self.optimizer.state_dict() if self.optimizer is not None else None
        return tensor_bytes(list(distinct.values())) + tensor_bytes(grads) + tensor_bytes(optimizer)

    def _rng(self) -> RngState:
        return RngState(self.generators)

    @torch.no_grad()
    def _capture(self, step: int) -> Checkpoint:
        state = _state_copy(self.model)
        parameters = tuple(_parameters(self.model))
        grads = tuple(p.grad.detach().clone() if p.grad is not None else None for p in parameters)
        optimizer = clone_tree(self.optimizer.state_dict()) if self.optimizer else None
        scheduler = None
        if self.scheduler is not None and hasattr(self.scheduler, "state_dict"):
            scheduler = copy.deepcopy(self.scheduler.state_dict())
        rng = self._rng()
        nbytes = _state_bytes(state) + tensor_bytes(grads) + tensor_bytes(optimizer) + rng.nbytes
        return Checkpoint(
            step=step,
            batch_position=self.batches.position,
            state=state,
            parameters=parameters,
            requires_grad=tuple(p.requires_grad for p in parameters),
            grads=grads,
            training=tuple(m.training for m in self.model.modules()),
            optimizer=optimizer,
            scheduler=scheduler,
            rng=rng,
            nbytes=nbytes,
        )

    @torch.no_grad()
    def _restore(self, c: Checkpoint) -> None:
        live = self.model.state_dict(keep_vars=True)
        for key, saved in c.state.items():
            tensor = live.get(key)
            if not isinstance(tensor, torch.Tensor):
                continue
            if (tensor.shape, tensor.dtype, tensor.device) == (
                saved.shape,
                saved.dtype,
                saved.device,
            ):
                tensor.copy_(saved)
            else:  # a buffer the forward replaced with another shape
                tensor.data = saved.clone()
        for p, requires_grad, grad in zip(c.parameters, c.requires_grad, c.grads, strict=True):
            p.requires_grad_(requires_grad)
            # A fresh clone each time: the next backward accumulates into it in place.
            p.grad = grad.clone() if grad is not None else None
        for module, training in zip(self.model.modules(), c.training, strict=False):
            module.training = training
        if self.optimizer is not None and c.optimizer is not None:
            # load_state_dict keeps tensors that need no cast: hand it a copy to own.
            self.optimizer.load_state_dict(clone_tree(c.optimizer))
        if self.scheduler is not None and c.scheduler is not None:
            self.scheduler.load_state_dict(copy.deepcopy(c.scheduler))
        self.batches.seek(c.batch_position)
        c.rng.restore()

    # -- the budget ---------------------------------------------------------------------------

    def _thin(self, newest: int | None = None) -> None:
        """Within the budget again: both timelines thinned by `keeps` (from this one's
        `newest` step, from the other's last), then the oldest of each in turn, then the
        other's last step, then this timeline's step 0; its newest stays."""
        if self.nbytes <= self.budget:
            return
        self.thinned = True
        newest = max(self._kept, default=0) if newest is None else newest
        end = max(self._other, default=0)
        for s in [s for s in self._kept if not keeps(s, newest)]:
            del self._kept[s]
        for s in [s for s in self._other if not keeps(s, end)]:
            del self._other[s]
        theirs = [(self._other, s) for s in sorted(self._other) if s != end]
        ours = [(self._kept, s) for s in sorted(self._kept) if s not in (0, newest)]
        pairs = itertools.zip_longest(theirs, ours)
        order = [x for pair in pairs for x in pair if x is not None]
        order += [(self._other, end), (self._kept, 0)]
        for store, s in order:
            if self.nbytes <= self.budget:
                break
            if s in store and (store is self._other or s != newest):
                del store[s]
                # The batches before the oldest checkpoint kept go too.
                self.batches.forget_before(self._kept[min(self._kept)].batch_position)

    def _disable(self, why: str) -> None:
        self.note = f"rewind is off: {why}"
        self._kept.clear()
        self._other.clear()
        self.batches.keep_replay(None)


@torch.no_grad()
def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's `state_dict` tensors (tied ones copied once)."""
    clones: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if isinstance(value, torch.Tensor):
            if id(value) not in clones:
                clones[id(value)] = value.detach().clone()
            state[key] = clones[id(value)]
    return state


def _state_bytes(state: dict[str, torch.Tensor]) -> int:
    return tensor_bytes(list({id(t): t for t in state.values()}.values()))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _parameters(model: torch.nn.Module) -> Iterator[torch.Tensor]:
    """Every parameter once, in `model.parameters()` order, read from the registries (a
    user's model may override `parameters()`)."""
    seen: set[int] = set()
    for _, module in distinct_modules(model):
        for _, t, is_parameter in own_tensors(module):
            if is_parameter and id(t) not in seen:
                seen.add(id(t))
                yield t
