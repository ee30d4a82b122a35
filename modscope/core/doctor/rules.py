"""The doctor's finding kinds, severities and thresholds, and the words of each message and fix.

Detection lives in `static.py`, `watch.py` and `dynamic.py`; everything a person reads is written
here, so that the wording stays consistent and each fix names the exact call.
"""

from __future__ import annotations

from collections.abc import Sequence

from modscope.core.fmt import plural
from modscope.core.types import Finding, FindingKind

EXPLODING_GRAD_NORM = 1e3
"""`exploding-gradient`: the global gradient norm (all trainable parameters) is above this."""

VANISHING_GRAD_NORM = 1e-10
"""`vanishing-gradient`: the global gradient norm is below this ..."""

VANISHING_MIN_LOSS = 1e-6
"""... while the loss is finite and its magnitude is above this (a converged model has tiny
gradients by right; a per-parameter rule would flag the bias before every BatchNorm)."""

LISTED = 4
"""Names listed in one message before "and N more"."""


def finding(
    kind: FindingKind,
    path: str,
    message: str,
    fix: str,
    *,
    paths: Sequence[str] = (),
    step: int | None = None,
    subject: str | None = None,
) -> Finding:
    """A `Finding` of `kind`, with the kind's severity."""
    return Finding(
        kind=kind,
        severity=kind.severity,
        path=path,
        message=message,
        fix=fix,
        paths=tuple(paths),
        step=step,
        subject=subject,
    )


def dedup_key(f: Finding) -> tuple[FindingKind, str]:
    """What makes a finding the same one again, whatever the step: its kind and subject (for
    `nonfinite`, what went non-finite), or its kind and path when it has no subject."""
    return f.kind, f.subject if f.subject is not None else f.path


def accessor(path: str, root: str = "model") -> str:
    """Python that reaches a module path: `model.body[3]`, `model.get_submodule("a-b")`."""
    out = root
    for part in path.split(".") if path else ():
        if part.isidentifier():
            out += f".{part}"
        elif part.isdecimal():
            out += f"[{part}]"
        else:
            return f"{root}.get_submodule({path!r})"
    return out


def where(path: str, type_name: str | None = None) -> str:
    """`logModel (LogModel)`, or `the model (PowLogModel)` for the root."""
    name = path or "the model"
    return f"{name} ({type_name})" if type_name else name


def listing(names: Sequence[str], limit: int = LISTED) -> str:
    """`a, b, c and 2 more`."""
    names = list(names)
    if len(names) <= limit:
        if len(names) <= 1:
            return "".join(names)
        return ", ".join(names[:-1]) + " and " + names[-1]
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def owner_hint(owner_type: str | None) -> str:
    return f" (in {owner_type}.__init__)" if owner_type else ""


# -- unregistered state ---------------------------------------------------------------------------

_MODULE_CONTAINERS = {
    "list": "nn.ModuleList([...])",
    "tuple": "nn.ModuleList([...])",
    "deque": "nn.ModuleList([...])",
    "dict": "nn.ModuleDict({...})",
    "set": "nn.ModuleList([...])",
    "frozenset": "nn.ModuleList([...])",
}
_PARAMETER_CONTAINERS = {
    "list": "nn.ParameterList([...])",
    "tuple": "nn.ParameterList([...])",
    "deque": "nn.ParameterList([...])",
    "dict": "nn.ParameterDict({...})",
    "set": "nn.ParameterList([...])",
    "frozenset": "nn.ParameterList([...])",
}
_UNSEEN_PARAMETERS = (
    "not in parameters(), state_dict() or .to(): the optimizer never sees them (they still get "
    "a .grad, but nothing updates them) and checkpoints do not save them"
)
_UNSEEN_MODULE = "not in named_children(), parameters(), state_dict() or .to()"
_UNSEEN_PARAMETER = (
    "not in parameters(), state_dict() or .to(): the optimizer never sees it (it still gets a "
    ".grad, but nothing updates it) and checkpoints do not save it"
)


def unregistered_container(
    what: str,
    path: str,
    attribute: str,
    container: str,
    items: Sequence[str],
    types: Sequence[str],
    owner_type: str | None,
    n_parameters: int,
    nested: bool,
) -> Finding:
    """A plain container attribute whose entries are all unregistered modules/parameters/tensors."""
    shown = listing(
        [f"{p} {t}" for p, t in zip(items, types, strict=True)] if what == "module" else items
    )
    if what == "module":
        cost = (
            f"they are {_UNSEEN_MODULE}, and the optimizer never sees their "
            f"{plural(n_parameters, 'parameter')}"
        )
        if len(items) == 1:
            cost = cost.replace("they are", "it is").replace("their", "its")
        if nested and container == "dict":
            call = "nn.ModuleDict({name: nn.ModuleList(group) for name, group in ...})"
        else:
            call = _MODULE_CONTAINERS.get(container, "nn.ModuleList([...])")
        fix = f"self.{attribute} = {call}{owner_hint(owner_type)}"
        if container in ("set", "frozenset"):
            fix += "; a set has no order, keep the modules in a list"
        return finding(
            FindingKind.UNREGISTERED_MODULE,
            path,
            f"{path} is a plain {container} holding {plural(len(items), 'module')} that "
            f"nn.Module does not register ({shown}): {cost}.",
            fix,
            paths=items,
        )
    if what == "parameter":
        call = _PARAMETER_CONTAINERS.get(container, "nn.ParameterList([...])")
        if nested and container == "dict":
            call = "nn.ParameterDict({...}) (one per group, or flatten the names)"
        return finding(
            FindingKind.UNREGISTERED_PARAMETER,
            path,
            f"{path} is a plain {container} holding {plural(len(items), 'Parameter')} that "
            f"nn.Module does not register ({shown}): "
            + (
                f"it is {_UNSEEN_PARAMETER}."
                if len(items) == 1
                else f"they are {_UNSEEN_PARAMETERS}."
            ),
            f"self.{attribute} = {call}{owner_hint(owner_type)}",
            paths=items,
        )
    return finding(
        FindingKind.UNREGISTERED_TENSOR,
        path,
        f"{path} is a plain {container} holding {plural(len(items), 'tensor')} ({shown}): "
        + (
            "it is not in state_dict() (never saved or loaded) and .to()/.cuda() does not move it."
            if len(items) == 1
            else "they are not in state_dict() (never saved or loaded) and .to()/.cuda() does "
            "not move them."
        ),
        f'register each one: self.register_buffer("{attribute}_0", ...){owner_hint(owner_type)} '
        "(persistent=False for a cache that should not be saved), or keep them off the module",
        paths=items,
    )


def unregistered_item(
    what: str,
    path: str,
    attribute: str,
    container: str | None,
    type_name: str,
    shape: Sequence[int] | None,
    owner_type: str | None,
    n_parameters: int,
) -> Finding:
    """One unregistered object, directly on a module or among other values in a container."""
    name = _identifier(path, attribute)
    inside = f" in the plain {container} {attribute}" if container else ""
    if what == "module":
        return finding(
            FindingKind.UNREGISTERED_MODULE,
            path,
            f"{path} is a {type_name}{inside} that nn.Module does not register: it is "
            f"{_UNSEEN_MODULE}, and the optimizer never sees its "
            f"{plural(n_parameters, 'parameter')}.",
            f'self.add_module("{name}", module){owner_hint(owner_type)}, or keep the modules of '
            f"{attribute} in an nn.ModuleList / nn.ModuleDict and its other values apart",
        )
    if what == "parameter":
        return finding(
            FindingKind.UNREGISTERED_PARAMETER,
            path,
            f"{path} is a Parameter{inside} that nn.Module does not register: it is "
            f"{_UNSEEN_PARAMETER}.",
            f'self.register_parameter("{name}", parameter){owner_hint(owner_type)}, or keep '
            f"the Parameters of {attribute} in an nn.ParameterList / nn.ParameterDict",
        )
    shape_text = f" of shape {list(shape)}" if shape is not None else ""
    if container:
        return finding(
            FindingKind.UNREGISTERED_TENSOR,
            path,
            f"{path} is a plain tensor{shape_text}{inside}: not in state_dict() (never saved or "
            "loaded) and .to()/.cuda() does not move it.",
            f'self.register_buffer("{name}", tensor){owner_hint(owner_type)} if it is state '
            "(persistent=False for a cache), or keep it off the module",
        )
    return finding(
        FindingKind.UNREGISTERED_TENSOR,
        path,
        f"{path} is a plain tensor attribute{shape_text}, not a parameter or buffer: it is not in "
        "state_dict() (never saved or loaded) and .to()/.cuda() does not move it.",
        f'self.register_buffer("{attribute}", ...){owner_hint(owner_type)} instead of '
        f"self.{attribute} = ... (persistent=False for a cache that should not be saved)",
    )


def _identifier(path: str, attribute: str) -> str:
    """A legal attribute name for an item: `heads['q']` -> `heads_q`."""
    tail = path[path.rfind(attribute) :] if attribute in path else attribute
    out = "".join(c if c.isalnum() else "_" for c in tail)
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_") or attribute


# -- buffers, hooks, sharing ----------------------------------------------------------------------


def buffer_grad_history(
    path: str, grad_fn: str | None, requires_grad: bool, step: int | None
) -> Finding:
    attribute = path.rsplit(".", 1)[-1]
    when = f"after step {step}" if step else "now"
    if grad_fn is not None:
        return finding(
            FindingKind.BUFFER_GRAD_HISTORY,
            path,
            f"buffer {path} {when} holds a tensor with autograd history (grad_fn={grad_fn}): it "
            "was computed from tensors that require grad, so every step keeps the previous "
            "step's graph alive (memory grows) and a backward through it twice fails.",
            f"update it without history: self.{attribute} = new_value.detach(), or compute it "
            "under `with torch.no_grad():`",
            step=step,
        )
    return finding(
        FindingKind.BUFFER_GRAD_HISTORY,
        path,
        f"buffer {path} {when} requires grad: it collects gradient like a parameter, but it "
        "is no parameter, so no optimizer ever updates it.",
        f'self.register_buffer("{attribute}", tensor.detach()), or, if it should train, '
        f"self.{attribute} = nn.Parameter(tensor)",
        step=step,
    )


def legacy_backward_hook(
    path: str, type_name: str, hooks: Sequence[str], first: str = "hook"
) -> Finding:
    """`hooks` describes each hook (name and file:line); `first` is the first one's name."""
    shown = listing(hooks)
    target = accessor(path)
    return finding(
        FindingKind.LEGACY_BACKWARD_HOOK,
        path,
        f"{where(path, type_name)} carries a hook from register_backward_hook ({shown}): this "
        "legacy hook receives the gradients of the last operation inside forward, not of the "
        "module's inputs and outputs, and PyTorch deprecates it.",
        f"{target}.register_full_backward_hook({first}) (the same signature: "
        "hook(module, grad_input, grad_output))",
    )


def global_legacy_backward_hook(hooks: Sequence[str]) -> Finding:
    return finding(
        FindingKind.LEGACY_BACKWARD_HOOK,
        "",
        f"a global module backward hook from register_module_backward_hook ({listing(hooks)}) "
        "is the legacy, non-full kind: on every module it receives the gradients of the last "
        "operation inside forward, not of the module's inputs and outputs.",
        "torch.nn.modules.module.register_module_full_backward_hook(hook)",
    )


def shared_parameter(paths: Sequence[str]) -> Finding:
    first, second = paths[0], paths[1]
    return finding(
        FindingKind.SHARED_PARAMETER,
        first,
        f"{listing(paths)} are one Parameter (weight tying): it counts once in parameters() and "
        "the optimizer, is saved under each name in state_dict(), and its gradient is the sum "
        "from every use.",
        "nothing to fix if the tie is intended; to untie: "
        f"{_parameter(second, 'self')} = "
        f"nn.Parameter({_parameter(first, 'self')}.detach().clone())",
        paths=paths,
    )


def shared_module(prefixes: Sequence[str], type_name: str, names: Sequence[str]) -> Finding:
    first = prefixes[0]
    return finding(
        FindingKind.SHARED_PARAMETER,
        first,
        f"{listing([p or '(the model)' for p in prefixes])} are one {type_name} instance "
        f"registered under {plural(len(prefixes), 'name')}: its "
        f"{plural(len(names), 'parameter')} ({listing(names)}) are shared, and their gradient "
        "is the sum from every use.",
        "nothing to fix if sharing is intended; separate layers need separate instances: "
        f"{accessor(prefixes[1], 'self')} = copy.deepcopy({accessor(first, 'self')})",
        paths=prefixes,
    )


def _parameter(path: str, root: str = "model") -> str:
    """`model.body[3].weight` for a parameter path."""
    owner, _, name = path.rpartition(".")
    return f"{accessor(owner, root)}.{name}" if name.isidentifier() else accessor(path, root)


def _last(path: str) -> str:
    return path.rsplit(".", 1)[-1] if path else "model"


# -- module state ---------------------------------------------------------------------------------


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


def nonfinite(
    what: str,
    names: Sequence[str],
    step: int | None,
    module: str | None = None,
    module_type: str | None = None,
    value: float | None = None,
) -> Finding:
    """NaN/Inf in the loss, the output, parameters, gradients or buffers."""
    when = f"at step {step}" if step else "at load"
    source = ""
    if module is not None:
        source = (
            f" The first module whose output was non-finite, in forward order: "
            f"{where(module, module_type)}."
        )
    fix = (
        "find the op that makes it (log/sqrt/division of values <= 0, an overflow in float16); "
        "lower the learning rate or clip: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); "
        "torch.autograd.set_detect_anomaly(True) names the backward op"
    )
    if what in ("loss", "output"):
        shown = "nan" if value is None or value != value else ("inf" if value > 0 else "-inf")
        return finding(
            FindingKind.NONFINITE,
            module if module is not None else "",
            f"the {what} is {shown} {when}: backward spreads NaN/Inf into every gradient and one "
            f"optimizer step into the parameters.{source}",
            fix,
            step=step,
            subject=what,
        )
    noun = {"parameters": "parameter", "gradients": "gradient of", "buffers": "buffer"}[what]
    if what == "gradients":
        head = f"the gradient of {plural(len(names), 'parameter')} holds NaN/Inf {when}"
    else:
        head = f"{plural(len(names), noun)} {'holds' if len(names) == 1 else 'hold'} NaN/Inf {when}"
    return finding(
        FindingKind.NONFINITE,
        module if module is not None else names[0],
        f"{head} ({listing(names)}): once non-finite, training cannot recover.{source}",
        fix,
        paths=names,
        step=step,
        subject=what,
    )


# -- optimizer ------------------------------------------------------------------------------------

_BUILD_AFTER = (
    "build the optimizer after the model is complete: "
    "torch.optim.SGD(model.parameters(), ...) (with your optimizer and settings)"
)


def _parameters_of(
    path: str, type_name: str | None, names: Sequence[str], noun: str, alone: str = ""
) -> str:
    """Whose parameters a finding is about: `body (Linear): its 2 trainable parameters (body.weight
    and body.bias)`, or `trainable parameter body.weight` for one reported alone (`type_name`
    None, as `static.grouped` gives it), followed by `alone`."""
    if type_name is None:
        return f"{noun} {path}{alone}"
    return f"{where(path, type_name)}: its {plural(len(names), noun)} ({listing(names)})"


def not_in_optimizer(path: str, type_name: str | None, names: Sequence[str]) -> Finding:
    subject = _parameters_of(path, type_name, names, "trainable parameter")
    subject += " is" if len(names) == 1 else " are"
    group = (
        f'optimizer.add_param_group({{"params": {accessor(path)}.parameters()}})'
        if path and type_name is not None
        else f'optimizer.add_param_group({{"params": [{_parameter(path)}]}})'
        if path
        else 'optimizer.add_param_group({"params": model.parameters()})'
    )
    return finding(
        FindingKind.NOT_IN_OPTIMIZER,
        path,
        f"{subject} in no param_group of the optimizer: optimizer.step() never changes "
        f"{'it' if len(names) <= 1 else 'them'}, though backward() fills .grad.",
        f"{_BUILD_AFTER}; or add them: {group}",
        paths=names if len(names) > 1 else (),
    )


def frozen_in_optimizer(path: str, type_name: str | None, names: Sequence[str]) -> Finding:
    subject = _parameters_of(path, type_name, names, "frozen parameter", " (requires_grad=False)")
    subject += " is" if len(names) == 1 else " are"
    return finding(
        FindingKind.FROZEN_IN_OPTIMIZER,
        path,
        f"{subject} in the optimizer: they stay frozen while .grad is None, but unfreezing them "
        "later resumes with the optimizer's old state for them.",
        "leave them out if they stay frozen: "
        "torch.optim.SGD((p for p in model.parameters() if p.requires_grad), ...)",
        paths=names if len(names) > 1 else (),
    )


def stale_optimizer(path: str, entries: Sequence[str], shapes: Sequence[str]) -> Finding:
    return finding(
        FindingKind.STALE_OPTIMIZER,
        path,
        f"the optimizer holds {plural(len(entries), 'tensor')} that the model does not "
        f"({listing(shapes)}): it was built for an older model (before a layer was replaced or "
        "the model re-created), so its steps change nothing the model uses.",
        _BUILD_AFTER,
        paths=entries,
    )


# -- from iterations ------------------------------------------------------------------------------


def unused_parameter(path: str, type_name: str | None, names: Sequence[str], step: int) -> Finding:
    subject = _parameters_of(path, type_name, names, "trainable parameter") + " received"
    target = accessor(path) if type_name is not None else _parameter(path)
    them = "it" if len(names) <= 1 else "them"
    return finding(
        FindingKind.UNUSED_PARAMETER,
        path,
        f"{subject} no gradient in step {step} (.grad is None after backward): the loss does "
        f"not depend on {them}, so {them} never {'trains' if them == 'it' else 'train'} (and "
        "DistributedDataParallel fails without find_unused_parameters=True).",
        f"use it in forward, remove it, or freeze it: {target}.requires_grad_(False)",
        paths=names if len(names) > 1 else (),
        step=step,
    )


def exploding_gradient(norm: float, step: int) -> Finding:
    return finding(
        FindingKind.EXPLODING_GRADIENT,
        "",
        f"the global gradient norm is {norm:.4g} at step {step} (above {EXPLODING_GRAD_NORM:g}): "
        "steps this large make training unstable; the loss jumps or turns NaN.",
        "lower the learning rate, or clip between backward() and optimizer.step(): "
        "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)",
        step=step,
    )


def vanishing_gradient(norm: float, loss: float, step: int) -> Finding:
    return finding(
        FindingKind.VANISHING_GRADIENT,
        "",
        f"the global gradient norm is {norm:.3g} at step {step} (below "
        f"{VANISHING_GRAD_NORM:g}) while the loss is {loss:.4g}: nothing trains.",
        "look for saturated activations (sigmoid/tanh), a detached graph or an init that zeroes "
        "everything; normalisation (nn.LayerNorm / nn.BatchNorm1d), residual connections or "
        "another init help",
        step=step,
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
        f"call: self.{_last(path)}_2 = {type_name}(...), and call each once",
        step=step,
    )
