"""Findings about what nn.Module registers: unregistered modules, parameters and tensors,
buffers with autograd history, legacy backward hooks, and shared parameters."""

from __future__ import annotations

from collections.abc import Sequence

from modscope.core.contract.findings import Finding, FindingKind, Severity
from modscope.core.contract.fmt import plural
from modscope.core.doctor.rules.wording import (
    Number,
    accessor,
    finding,
    listing,
    owner_hint,
    parameter_accessor,
    where,
)

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
        "(persistent=False for a cache that should not be saved), or keep "
        f"{Number(len(items)).them} off the module",
        paths=items,
    )


def unregistered_stateless(
    path: str,
    attribute: str,
    container: str | None,
    items: Sequence[str],
    types: Sequence[str],
    owner_type: str | None,
    mode_dependent: Sequence[str],
) -> Finding:
    """Unregistered modules with no parameters and no buffers: they lose nothing in
    `state_dict()`, only `train()`/`eval()` and hooks. A warning when one of them (or a module
    below it) behaves differently in eval mode, listed in `mode_dependent`; info otherwise."""
    n = Number(len(items))
    shown = listing([f"{p} {t}" for p, t in zip(items, types, strict=True)])
    holder = f"a plain {container} holding" if container else "a module attribute holding"
    lost = (
        f"{n.they} {n.verb('holds', 'hold')} no parameters or buffers, so "
        "state_dict(), parameters() and .to() lose nothing; what nn.Module does not reach is "
        f"model.train()/model.eval() and hooks attached through named_modules()"
    )
    if container is None:
        registered = f'self.add_module("{_identifier(path, attribute)}", module)'
    else:
        call = _MODULE_CONTAINERS.get(container, "nn.ModuleList([...])")
        registered = f"self.{attribute} = {call}"
    if mode_dependent:
        return finding(
            FindingKind.UNREGISTERED_MODULE,
            path,
            f"{path} is {holder} {plural(len(items), 'module')} that nn.Module does not "
            f"register ({shown}): {lost}, and {listing(mode_dependent)} "
            f"{Number(len(mode_dependent)).verb('behaves', 'behave')} differently in eval mode, "
            "so model.eval() leaves it in training mode.",
            f"{registered}{owner_hint(owner_type)}, so that train()/eval() reach {n.them}",
            paths=items,
            severity=Severity.WARNING,
        )
    return finding(
        FindingKind.UNREGISTERED_MODULE,
        path,
        f"{path} is {holder} {plural(len(items), 'module')} that nn.Module does not register "
        f"({shown}): {lost}. Nothing behaves differently in eval mode there, so this changes "
        "nothing unless you hook those modules by walking the model.",
        f"nothing to fix if {n.they} {n.are} kept apart on purpose (a table of kernels or "
        "functions); "
        f"to register {n.them}: {registered}{owner_hint(owner_type)}",
        paths=items,
        severity=Severity.INFO,
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
    n = Number(len(hooks))
    hooks_text = n.verb("a hook", f"{len(hooks)} hooks")
    receive = n.verb("this legacy hook receives", "these legacy hooks receive")
    return finding(
        FindingKind.LEGACY_BACKWARD_HOOK,
        path,
        f"{where(path, type_name)} carries {hooks_text} from register_backward_hook ({shown}): "
        f"{receive} the gradients of the last operation inside forward, not of the module's "
        f"inputs and outputs, and PyTorch deprecates {n.them}.",
        f"{target}.register_full_backward_hook({first}) (the same signature: "
        "hook(module, grad_input, grad_output))",
    )


def global_legacy_backward_hook(hooks: Sequence[str]) -> Finding:
    n = Number(len(hooks))
    which = n.verb("a global module backward hook", f"{len(hooks)} global module backward hooks")
    return finding(
        FindingKind.LEGACY_BACKWARD_HOOK,
        "",
        f"{which} from register_module_backward_hook ({listing(hooks)}) {n.are} the legacy, "
        f"non-full kind: on every module {n.they} {n.verb('receives', 'receive')} the gradients "
        "of the last operation inside forward, not of the module's inputs and outputs.",
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
        f"{parameter_accessor(second, 'self')} = "
        f"nn.Parameter({parameter_accessor(first, 'self')}.detach().clone())",
        paths=paths,
    )


def shared_module(prefixes: Sequence[str], type_name: str, names: Sequence[str]) -> Finding:
    first = prefixes[0]
    return finding(
        FindingKind.SHARED_PARAMETER,
        first,
        f"{listing([p or '(the model)' for p in prefixes])} are one {type_name} instance "
        f"registered under {plural(len(prefixes), 'name')}: its "
        f"{plural(len(names), 'parameter')} ({listing(names)}) {Number(len(names)).are} shared, "
        f"and {Number(len(names)).their} gradient is the sum from every use.",
        "nothing to fix if sharing is intended; separate layers need separate instances: "
        f"{accessor(prefixes[1], 'self')} = copy.deepcopy({accessor(first, 'self')})",
        paths=prefixes,
    )
