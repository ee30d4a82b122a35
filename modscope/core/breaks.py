"""Break conditions at work: the hooks and checks that stop an iteration where a problem starts.

A `BreakWatch` exists only while some condition is armed (`Session.arm`); until then nothing is
attached to the model. Armed, it keeps the observer rule (docs/design.md section 5): its hooks
return None, every check runs under `torch.no_grad()` on detached tensors and draws no random
numbers.

`nan` locates the origin of the first non-finite value:
- forward: the first module call (in execution order, so the leaf-most) whose output holds
  NaN/Inf while its inputs, read by a forward-pre hook before it ran, were finite; the batch
  when the first module call of the phase got non-finite inputs;
- backward: tensor hooks registered from the forward hooks (never module-level full backward
  hooks, which break a following in-place op: PyTorch #61519) on each call's outputs, inputs
  and its module's own parameters: the first module whose gradient w.r.t. an input (or one of
  its parameters) holds NaN/Inf while the gradients w.r.t. its outputs were finite;
- else the loss (non-finite from a finite output), the optimizer step (a finite parameter
  turned non-finite).

On the CPU each check is decided where it runs. Elsewhere reading a flag back is a device sync,
so a module's check leaves a 0-d flag on its device, with the summaries captured then, and the
phase's flags come back together after the phase: one transfer per device.
"""

from __future__ import annotations

import cmath
import difflib
import inspect
import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from modscope.core.break_spec import BreakCondition, BreakMetric, BreakSpecError
from modscope.core.callables import describe_callable
from modscope.core.loader import LoadedScript
from modscope.core.losses import loss_value
from modscope.core.script_names import MISSING
from modscope.core.summary import PendingSummary, capture, flatten_tensors, resolve
from modscope.core.types import BreakEvent, Phase, TensorSummary
from modscope.core.walk import all_parameter_paths, distinct_modules, refuses_hooks

# Device types whose flags are on the host already: reading one back is no sync, so a check
# there is decided at once. Tests empty this to run the deferred path on the CPU.
_HOST_DEVICE_TYPES = frozenset({"cpu"})

Flag = bool | torch.Tensor
"""True/False when known; a 0-d bool tensor on its device while still to be read back."""
Seen = torch.Tensor | PendingSummary
"""A tensor as seen: itself (summarized only if it is reported) or its summary, captured."""
Trip = Callable[[BreakEvent], None]


def forward_location(module: nn.Module) -> str | None:
    """`file:line` where the module's class defines `forward` (None without Python source)."""
    fn = getattr(type(module), "forward", None)
    if fn is None:
        return None
    try:
        fn = inspect.unwrap(fn)
        file = inspect.getsourcefile(fn)
        _, line = inspect.getsourcelines(fn)
    except (TypeError, OSError, ValueError):
        return None
    return f"{file}:{line}" if file else None


def loss_source(script: LoadedScript) -> Callable[..., Any] | None:
    """The function of the script that computes the loss, to name where a loss broke."""
    for fn in (script.compute_loss, script.train_step, script.loss_fn):
        if fn is not None and fn is not MISSING and callable(fn):
            return fn
    return None


def _floats(*values: Any) -> list[torch.Tensor]:
    """The floating (and complex) strided tensors among `values`' leaves: what can hold NaN."""
    return [
        t
        for v in values
        for t in flatten_tensors(v)
        if t is not None
        and (t.is_floating_point() or t.is_complex())
        and t.layout is torch.strided
        and t.device.type != "meta"
        and t.numel() > 0
    ]


def _any_bad(tensors: Iterable[torch.Tensor]) -> Flag:
    """Whether some tensor holds NaN/Inf (call under `torch.no_grad()`)."""
    found: Flag = False
    for t in tensors:
        try:
            bad = _bad(t.detach())
        except (RuntimeError, NotImplementedError, TypeError):
            continue  # a tensor subclass that refuses the op: nothing to say about it
        if bad is True:
            return True
        found = _or(found, bad)
    return found


def _bad(t: torch.Tensor) -> Flag:
    if t.device.type not in _HOST_DEVICE_TYPES:
        return ~torch.isfinite(t).all()
    # On the host a sum is some 20 to 60 times faster than isfinite().all(), and exact when it
    # is finite: one NaN or infinite value makes the sum NaN or infinite. A non-finite sum may
    # also be an overflow of finite values: the exact check decides then.
    total = t.sum().item()
    if cmath.isfinite(total) if isinstance(total, complex) else math.isfinite(total):
        return False
    return not bool(torch.isfinite(t).all())


def _or(a: Flag, b: Flag) -> Flag:
    if a is True or b is True:
        return True
    if a is False:
        return b
    if b is False:
        return a
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    return a | b.to(a.device)


def _and_not(a: Flag, b: Flag) -> Flag:
    """`a and not b`."""
    if a is False or b is True:
        return False
    if b is False:
        return a
    assert isinstance(b, torch.Tensor)
    if a is True:
        return ~b
    assert isinstance(a, torch.Tensor)
    return a & ~b.to(a.device)


def _host_values(values: Sequence[bool | float | torch.Tensor]) -> list[Any]:
    """Python values of `values`, the tensors among them read back with one transfer per
    device."""
    out: list[Any] = list(values)
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(i)
    for indices in by_device.values():
        read = torch.stack([values[i] for i in indices]).cpu().tolist()  # type: ignore[misc]
        for i, value in zip(indices, read, strict=True):
            out[i] = value
    return out


def _norm(t: torch.Tensor) -> torch.Tensor:
    """The 2-norm of a gradient as a float32 0-d tensor on its device."""
    g = t.detach()
    if g.is_sparse:
        g = g.coalesce().values()
    if g.dtype in (torch.float16, torch.bfloat16):
        g = g.float()
    return torch.linalg.vector_norm(g).float()


def _summaries(seen: Sequence[Seen]) -> tuple[TensorSummary | None, ...]:
    return tuple(resolve([capture(s) if isinstance(s, torch.Tensor) else s for s in seen]))


def _as_seen(tensors: Sequence[torch.Tensor], flag: Flag) -> list[Seen]:
    """What to keep of `tensors` for a report: the tensors while their check is decided at once
    (summarized only when it trips), their summaries, captured now, while it is deferred."""
    if isinstance(flag, torch.Tensor):
        return [capture(t) for t in tensors]
    return list(tensors)


def _nonfinite(s: TensorSummary | None) -> bool:
    return s is not None and bool(s.nan or s.inf)


@dataclass
class _GradCall:
    """One forward call of a module while `nan` is armed: what its gradients showed so far.

    `grad_out` keeps what arrived w.r.t. its outputs until every input and parameter
    gradient it waits for has come (then it is dropped: no gradient outlives its use longer).
    """

    path: str
    module: nn.Module
    waiting: int
    out_bad: Flag = False
    grad_out: list[Seen] = field(default_factory=list)


class BreakWatch:
    """The armed break conditions on one model: their hooks and the checks around each phase.

    `trip(event)` is called where a condition trips, at a point where going on is valid
    (inside the module's hook, or right before or after a phase); it returns to let the
    iteration go on, or raises to unwind it. `context()` says the step and phase running.
    Each condition trips at most once per iteration. Raises `BreakSpecError` for a module
    condition naming no module (or one PyTorch refuses hooks on, or `grad-norm` on a module
    without trainable parameters).
    """

    def __init__(
        self,
        model: nn.Module,
        conditions: Iterable[BreakCondition],
        *,
        trip: Trip,
        context: Callable[[], tuple[int, Phase]],
        loss_fn: Callable[..., Any] | None = None,
    ) -> None:
        self.model = model
        self.conditions = tuple(dict.fromkeys(conditions))
        self._trip_to = trip
        self.context = context
        self._loss_where = describe_callable(loss_fn)[1] if loss_fn is not None else None
        self._nan = next((c for c in self.conditions if c.metric is BreakMetric.NAN), None)
        self._targets = {c: _find_module(model, c) for c in self.conditions if c.watches_module}
        self._handles: list[RemovableHandle] = []
        self._transient: list[RemovableHandle] = []
        self._tripped: set[BreakCondition] = set()
        self._pending: list[tuple[torch.Tensor, Callable[[], BreakEvent]]] = []
        self._entered: dict[int, list[tuple[Flag, list[Seen]]]] = {}
        self._out_bad: dict[int, Flag] = {}
        self._hooked_params: set[int] = set()
        self._params_before: list[tuple[str, nn.Parameter, Flag]] | None = None
        self._checked: dict[int, tuple[weakref.ref[torch.Tensor], int, Flag]] = {}
        # Set by `before_phase`: a watch armed halfway through a forward (at a pause) must not
        # take the next module for the first one.
        self._first_call = False
        self._grads = False
        try:
            self._attach()
        except BaseException:
            self.close()
            raise

    @property
    def handle_ids(self) -> frozenset[int]:
        """The ids of the module hooks the watch holds (a hook listing can tell them apart)."""
        return frozenset(h.id for h in self._handles)

    def close(self) -> None:
        """Remove every hook the watch added."""
        self.end_iteration()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def end_iteration(self) -> None:
        """The iteration ended (or was dropped): tensor hooks off, per-iteration state reset."""
        self._drop_transient()
        self._tripped.clear()
        self._pending.clear()
        self._entered.clear()
        self._params_before = None
        self._checked.clear()
        self._first_call = False

    # -- around each phase -------------------------------------------------------------------

    def before_phase(self, phase: Phase, *, grads: bool) -> None:
        """Before `phase` runs; `grads`: a backward pass follows, so watch gradients too."""
        step, _ = self.context()
        self._checked.clear()
        # Only a forward runs the model from its batch (a checkpointed backward reruns modules).
        self._first_call = phase in (Phase.FORWARD, Phase.TRAIN_STEP)
        self._grads = grads
        for c in self.conditions:
            if c.metric is BreakMetric.STEP and c.threshold == step:
                message = f"step {step} is about to run ({phase.value} next)"
                self._trip(c, self._event(c, message=message))
        if self._nan is not None and phase in (Phase.OPTIMIZER, Phase.TRAIN_STEP):
            with torch.no_grad():
                self._params_before = [
                    (name, p, _any_bad([p])) for name, p in _distinct_parameters(self.model)
                ]

    def after_phase(
        self,
        phase: Phase,
        *,
        output: PendingSummary | None = None,
        loss: PendingSummary | None = None,
    ) -> None:
        """After `phase` ran: deferred module checks read back, then the phase's own checks
        (`output` and `loss`: the forward's summaries, as the session captured them)."""
        self._read_pending()
        if phase in (Phase.FORWARD, Phase.TRAIN_STEP):
            self._check_loss(output, loss)
        if phase in (Phase.BACKWARD, Phase.TRAIN_STEP):
            self._drop_transient()
            self._check_grad_norms()
        if phase in (Phase.OPTIMIZER, Phase.TRAIN_STEP):
            self._check_parameters()

    # -- tripping ----------------------------------------------------------------------------

    def _active(self, c: BreakCondition | None) -> bool:
        return c is not None and c not in self._tripped

    def _trip(self, c: BreakCondition, event: BreakEvent) -> None:
        if c in self._tripped:
            return
        self._tripped.add(c)
        self._trip_to(event)

    def _found(self, flag: Flag, build: Callable[[], BreakEvent]) -> None:
        """A `nan` origin where `flag` holds: tripped now, or once the flag is read back."""
        if flag is False or self._nan is None:
            return
        if flag is True:
            self._trip(self._nan, build())
        else:
            assert isinstance(flag, torch.Tensor)
            self._pending.append((flag, build))

    def _read_pending(self) -> None:
        pending, self._pending = self._pending, []
        if not pending or not self._active(self._nan):
            return
        hits = _host_values([flag for flag, _ in pending])
        for hit, (_, build) in zip(hits, pending, strict=True):
            if hit:
                assert self._nan is not None
                self._trip(self._nan, build())
                return

    def _event(
        self,
        c: BreakCondition,
        *,
        message: str,
        path: str | None = None,
        module: nn.Module | None = None,
        inputs: Sequence[Seen] = (),
        outputs: Sequence[Seen] = (),
        where: str | None = None,
        labels: tuple[str, str] = ("inputs", "outputs"),
    ) -> BreakEvent:
        step, phase = self.context()
        seen = _summaries([*inputs, *outputs])
        return BreakEvent(
            step=step,
            phase=phase,
            condition=str(c),
            module=path,
            class_name=type(module).__name__ if module is not None else None,
            where=forward_location(module) if module is not None else where,
            inputs=seen[: len(inputs)],
            outputs=seen[len(inputs) :],
            message=message,
            labels=labels,
        )

    def _check(self, tensors: Iterable[torch.Tensor]) -> Flag:
        """`_any_bad`, each tensor's answer remembered until the tensor changes: the output one
        module gives is the input the next one gets, and one gradient reaches the tensor hooks
        of both."""
        found: Flag = False
        for t in tensors:
            try:
                version = t._version
            except RuntimeError:  # an inference tensor keeps no version counter
                version = -1
            known = self._checked.get(id(t))
            if known is not None and known[0]() is t and known[1] == version >= 0:
                bad = known[2]
            else:
                bad = _any_bad([t])
                if version >= 0:
                    self._checked[id(t)] = (weakref.ref(t), version, bad)
            if bad is True:
                return True
            found = _or(found, bad)
        return found

    # -- hooks -------------------------------------------------------------------------------

    def _attach(self) -> None:
        if self._nan is not None:
            for path, module in distinct_modules(self.model):
                if refuses_hooks(module):
                    continue
                self._handles.append(
                    module.register_forward_pre_hook(self._nan_pre(path), with_kwargs=True)
                )
                self._handles.append(
                    module.register_forward_hook(self._nan_post(path), with_kwargs=True)
                )
        for c, (path, module) in self._targets.items():
            if c.metric is BreakMetric.OUTPUT_ABSMAX:
                self._handles.append(
                    module.register_forward_hook(self._absmax(c, path), with_kwargs=True)
                )

    def _nan_pre(self, path: str) -> Callable[..., None]:
        def nan_pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            entered = self._entered.setdefault(id(module), [])
            if not self._active(self._nan):
                entered.append((False, []))
                return
            inputs = _floats(args, kwargs)
            with torch.no_grad():
                bad = self._check(inputs)
                seen = _as_seen(inputs, bad)
            entered.append((bad, seen))
            if self._first_call:
                self._first_call = False
                assert self._nan is not None
                nan = self._nan

                def batch() -> BreakEvent:
                    return self._event(
                        nan,
                        path=None,
                        inputs=seen,
                        labels=("batch", ""),
                        message=f"the batch holds NaN/Inf: the inputs of "
                        f"{_name(path)}, the first module to run, were non-finite before any "
                        "module ran",
                    )

                self._found(bad, batch)

        return nan_pre

    def _nan_post(self, path: str) -> Callable[..., None]:
        def nan_post(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> None:
            entered = self._entered.get(id(module))
            bad_in, seen_in = entered.pop() if entered else (False, [])
            if not self._active(self._nan):
                return
            outputs = _floats(output)
            with torch.no_grad():
                bad_out = self._check(outputs)
                seen_out = _as_seen(outputs, bad_out)
            nan = self._nan
            assert nan is not None

            def origin() -> BreakEvent:
                return self._event(
                    nan,
                    path=path,
                    module=module,
                    inputs=seen_in,
                    outputs=seen_out,
                    message=f"the output of {_name(path)} holds NaN/Inf while its inputs were "
                    "finite: the NaN starts in its forward",
                )

            self._found(_and_not(bad_out, bad_in), origin)
            if self._grads and torch.is_grad_enabled():
                self._watch_grads(path, module, _floats(args, kwargs), outputs)

        return nan_post

    def _watch_grads(
        self,
        path: str,
        module: nn.Module,
        inputs: list[torch.Tensor],
        outputs: list[torch.Tensor],
    ) -> None:
        """Tensor hooks for one call: on its outputs, its inputs and (once an iteration) its
        module's own parameters; removed after the backward phase or with the iteration."""
        outs = [t for t in outputs if t.requires_grad]
        ins = [t for t in inputs if t.requires_grad]
        params = [
            (name, p)
            for name, p in module._parameters.items()
            if p is not None and p.requires_grad and id(p) not in self._hooked_params
        ]
        if not outs or not (ins or params):
            return  # no gradient to compare with, or none to compare
        call = _GradCall(path, module, waiting=len(ins) + len(params))
        for t in outs:
            self._transient.append(t.register_hook(self._grad_out(call)))
        for t in ins:
            self._transient.append(t.register_hook(self._grad_in(call, None)))
        for name, p in params:
            self._hooked_params.add(id(p))
            self._transient.append(p.register_hook(self._grad_in(call, name)))

    def _grad_out(self, call: _GradCall) -> Callable[[torch.Tensor], None]:
        def grad_out(grad: torch.Tensor) -> None:
            if not self._active(self._nan):
                return
            with torch.no_grad():
                bad = self._check([grad])
                call.grad_out += _as_seen([grad], bad)
            call.out_bad = _or(call.out_bad, bad)
            key = id(call.module)
            self._out_bad[key] = _or(self._out_bad.get(key, False), bad)

        return grad_out

    def _grad_in(self, call: _GradCall, param: str | None) -> Callable[[torch.Tensor], None]:
        def grad_in(grad: torch.Tensor) -> None:
            call.waiting -= 1
            try:
                if not self._active(self._nan):
                    return
                # A parameter's gradient sums every call of its module: compare it with what
                # arrived for all of them.
                out_bad = call.out_bad if param is None else self._out_bad.get(id(call.module))
                with torch.no_grad():
                    bad = self._check([grad])
                    seen = _as_seen([grad], bad)
                grad_out = list(call.grad_out)
                what = "an input" if param is None else f"its parameter {param}"
                nan = self._nan
                assert nan is not None

                def origin() -> BreakEvent:
                    return self._event(
                        nan,
                        path=call.path,
                        module=call.module,
                        inputs=seen,
                        outputs=grad_out,
                        labels=("grad_input" if param is None else "gradient", "grad_output"),
                        message=f"the gradient w.r.t. {what} of {_name(call.path)} holds "
                        "NaN/Inf while the gradient w.r.t. its output was finite: the NaN "
                        "starts in its backward",
                    )

                self._found(_and_not(bad, out_bad if out_bad is not None else False), origin)
            finally:
                if call.waiting <= 0:
                    call.grad_out = []

        return grad_in

    def _absmax(self, c: BreakCondition, path: str) -> Callable[..., None]:
        def absmax(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> None:
            if not self._active(c):
                return
            outputs = _floats(output)
            if not outputs:
                return
            # One module, one read-back per call: the condition needs the number now, to stop
            # inside the module's hook.
            # NaN is no magnitude (`nan` watches for it); an infinity is the largest one.
            with torch.no_grad():
                peaks = [
                    t.detach().abs().nan_to_num(nan=0.0, posinf=math.inf).amax().float()
                    for t in outputs
                ]
            peak = max(_host_values(peaks))
            if c.holds(peak):
                self._trip(
                    c,
                    self._event(
                        c,
                        path=path,
                        module=module,
                        inputs=_floats(args, kwargs),
                        outputs=outputs,
                        message=f"the output of {_name(path)} reached |x| = {peak:.6g}, "
                        f"above {c.threshold:g}",
                    ),
                )

        return absmax

    def _drop_transient(self) -> None:
        for handle in self._transient:
            handle.remove()
        self._transient.clear()
        self._hooked_params.clear()
        self._out_bad.clear()

    # -- the checks after a phase ------------------------------------------------------------

    def _check_loss(self, output_p: PendingSummary | None, loss_p: PendingSummary | None) -> None:
        losses = [c for c in self.conditions if c.metric is BreakMetric.LOSS and self._active(c)]
        if not losses and not self._active(self._nan):
            return
        output, loss = resolve([output_p, loss_p])
        nan = self._nan
        if nan is not None and self._active(nan):
            if _nonfinite(loss) and not _nonfinite(output):
                message = (
                    "the loss is NaN/Inf while the model's output is finite: the loss "
                    "computation made it"
                )
                self._trip(nan, self._loss_event(nan, output, loss, message))
            elif _nonfinite(output):
                message = (
                    "the model's output holds NaN/Inf, but no module's own output did first: "
                    "it arose outside every module's forward (in compute_loss or train_step, "
                    "or in a module PyTorch refuses hooks on)"
                )
                self._trip(nan, self._loss_event(nan, output, loss, message))
        value = loss_value(loss)
        for c in losses:
            if value is not None and c.holds(value):
                side = "above" if c.op == ">" else "below"
                message = f"the loss is {value:.6g}, {side} {c.threshold:g}"
                self._trip(c, self._loss_event(c, output, loss, message))

    def _loss_event(
        self,
        c: BreakCondition,
        output: TensorSummary | None,
        loss: TensorSummary | None,
        message: str,
    ) -> BreakEvent:
        step, phase = self.context()
        return BreakEvent(
            step=step,
            phase=phase,
            condition=str(c),
            module=None,
            class_name=None,
            where=self._loss_where,
            inputs=(output,) if output is not None else (),
            outputs=(loss,) if loss is not None else (),
            message=message,
            labels=("output", "loss"),
        )

    def _check_grad_norms(self) -> None:
        for c in self.conditions:
            if c.metric is not BreakMetric.GRAD_NORM or not self._active(c):
                continue
            path: str | None = None
            module = self.model
            if c in self._targets:
                path, module = self._targets[c]
            named = [(n, p) for n, p in _distinct_parameters(module) if p.grad is not None]
            if not named:
                continue
            with torch.no_grad():
                norms = _host_values([_norm(p.grad) for _, p in named])  # type: ignore[arg-type]
            total = float(sum(n * n for n in norms)) ** 0.5
            if not c.holds(total):
                continue
            top = max(range(len(norms)), key=lambda i: norms[i])
            prefix = f"{path}." if path else ""
            name, p = named[top]
            whose = "the gradient norm" if path is None else f"the gradient norm of {_name(path)}"
            message = (
                f"{whose} is {total:.6g}, above {c.threshold:g} (largest: {prefix}{name}, "
                f"{norms[top]:.6g})"
            )
            assert p.grad is not None
            self._trip(
                c,
                self._event(
                    c,
                    path=path,
                    module=module if path is not None else None,
                    outputs=[p.grad],
                    message=message,
                    labels=("", "largest gradient"),
                ),
            )

    def _check_parameters(self) -> None:
        before, self._params_before = self._params_before, None
        if before is None or not self._active(self._nan):
            return
        with torch.no_grad():
            turned = _host_values([_and_not(_any_bad([p]), was) for _, p, was in before])
        hit = next((i for i, t in enumerate(turned) if t), None)
        if hit is None:
            return
        name, p, _ = before[hit]
        owner_path = name.rpartition(".")[0]
        owner = self.model.get_submodule(owner_path) if owner_path else self.model
        assert self._nan is not None
        grad = [p.grad] if p.grad is not None else []
        self._trip(
            self._nan,
            self._event(
                self._nan,
                path=owner_path,
                module=owner,
                inputs=grad,
                outputs=[p],
                labels=("gradient", "parameter"),
                message=f"the optimizer step turned parameter {name} non-finite (its gradient "
                "was the input of the update)",
            ),
        )


def _name(path: str) -> str:
    return path or "the root module"


def _distinct_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Each trainable parameter once, at its first name."""
    seen: set[int] = set()
    out = []
    for name, p in all_parameter_paths(module):
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def _find_module(model: nn.Module, c: BreakCondition) -> tuple[str, nn.Module]:
    assert c.module is not None
    path = c.module
    module = model
    if path:
        for part in path.split("."):
            child = dict(module._modules.items()).get(part)
            if child is None:
                names = [name for name, _ in distinct_modules(model) if name]
                close = difflib.get_close_matches(path, names, n=5, cutoff=0.6)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise BreakSpecError(f"break condition {str(c)!r}: no module {path!r}{hint}")
            module = child
    if c.metric is BreakMetric.OUTPUT_ABSMAX and refuses_hooks(module):
        raise BreakSpecError(
            f"break condition {str(c)!r}: {_name(path)} is a ScriptModule; PyTorch refuses "
            "hooks on ScriptModules"
        )
    if c.metric is BreakMetric.GRAD_NORM and not _distinct_parameters(module):
        raise BreakSpecError(
            f"break condition {str(c)!r}: {_name(path)} has no trainable parameters, so no "
            "gradient norm"
        )
    return path, module
