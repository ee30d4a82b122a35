"""One walk over a model: its distinct modules, what they hold, and cheap checks of its shape."""

from __future__ import annotations

import difflib
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from modscope.core.contract.fmt import plural, printable

__all__ = [
    "CONTAINERS",
    "MAX_CONTAINER_DEPTH",
    "MODULE_INTERNALS",
    "SCALAR_TYPES",
    "all_parameter_paths",
    "compiled_inner",
    "compiled_region",
    "distinct_modules",
    "eager_hook",
    "find_cycle",
    "held_objects",
    "hook_sites",
    "iter_container",
    "own_tensors",
    "refuses_hooks",
    "refusing_hooks",
    "refusing_phrase",
    "sealed",
    "sealed_note",
    "sealed_paths",
    "structure_fingerprint",
    "subscript",
    "subtree_tensors",
    "tensor_at",
    "user_attributes",
]

# Container nesting followed below a module attribute; deeper data is someone's dataset, not a
# place where modules hide, and the bound keeps the scan cheap on huge nested structures.
MAX_CONTAINER_DEPTH = 6

SCALAR_TYPES = frozenset({int, float, complex, str, bytes, bool, type(None)})
"""Values that can hold nothing: skipped without a look inside (exact types, not subclasses)."""

SEQUENCES = (list, tuple, deque)
SETS = (set, frozenset)
CONTAINERS = (*SEQUENCES, *SETS, dict)
"""The plain containers a walk looks inside (subclasses too: OrderedDict, namedtuples)."""

# What `nn.Module.__init__` itself puts in `__dict__`: hook tables, registries, `training`.
# Attributes a user (or a torch subclass) adds are examined, underscored or not.
MODULE_INTERNALS = frozenset(nn.Module().__dict__)

HookFn = TypeVar("HookFn", bound=Callable[..., Any])


def distinct_modules(
    model: nn.Module, *, seen: set[int] | None = None
) -> list[tuple[str, nn.Module]]:
    """Every registered module once, at its first path, in `named_modules()` (preorder) order.

    Iterative and cycle-safe (a module registered as its own descendant is listed once).
    `seen` holds the ids of modules listed already (by an earlier call): they are left out with
    their subtrees, and the ones listed now are added to it.
    """
    seen = set() if seen is None else seen
    out: list[tuple[str, nn.Module]] = []
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        path, module = stack.pop()
        key = id(module)
        if key in seen:
            continue
        seen.add(key)
        out.append((path, module))
        prefix = path + "." if path else ""
        # Pushed last to first, so that they pop in registration order. `is not None`, not
        # truth: an empty ModuleList or Sequential has a length of 0.
        for name, child in reversed(module._modules.items()):
            if child is not None:
                stack.append((prefix + name, child))
    return out


def subtree_tensors(
    model: nn.Module, *, buffers: bool = True
) -> list[tuple[str, torch.Tensor, bool]]:
    """`(path, tensor, is_parameter)` for every registered parameter (and buffer) below `model`,
    each object once at its first path: `named_parameters()` without calling a method the
    model may override, and safe on cycles."""
    out: list[tuple[str, torch.Tensor, bool]] = []
    seen: set[int] = set()
    for path, module in distinct_modules(model):
        prefix = path + "." if path else ""
        for name, t, is_parameter in own_tensors(module):
            if (is_parameter or buffers) and id(t) not in seen:
                seen.add(id(t))
                out.append((prefix + name, t, is_parameter))
    return out


def refuses_hooks(module: nn.Module) -> bool:
    """True for a module PyTorch refuses module hooks on: a ScriptModule (`torch.jit.script`)
    raises "register_forward_pre_hook is not supported on ScriptModules"."""
    return isinstance(module, torch.jit.ScriptModule)


def compiled_inner(module: nn.Module) -> tuple[nn.Module, bool] | None:
    """`(the module whose call TorchDynamo traces when `module` is called, whether that call
    is compiled with `fullgraph=True`)`: the user's module inside a `torch.compile(module)`
    wrapper (`OptimizedModule._orig_mod`), or `module` itself when `module.compile()` compiled
    it in place or its `forward` was replaced by a compiled one; None for any other module."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    if eval_frame is not None and isinstance(module, eval_frame.OptimizedModule):
        inner = module._orig_mod
        fullgraph = _is_fullgraph(module.dynamo_ctx)
        return (inner, fullgraph) if isinstance(inner, nn.Module) else None
    # `module.compile()`, or `module.forward = torch.compile(module.forward)` (a wrapper's own
    # `forward` is one too, hence after it): either way the submodules run in compiled code.
    in_place = module.__dict__.get("_compiled_call_impl")
    forward = module.__dict__.get("forward")
    if in_place is None and hasattr(forward, "_torchdynamo_orig_callable"):
        in_place = forward
    if in_place is not None:
        cells = getattr(in_place, "__closure__", None) or ()
        contexts = [c.cell_contents for c in cells if hasattr(c.cell_contents, "callback")]
        return module, any(_is_fullgraph(c) for c in contexts)
    return None


def _is_fullgraph(context: Any) -> bool:
    # A deep copy of a wrapper (the doctor's sandbox) resets its context's `fullgraph` to
    # False; the frame callback it keeps still refuses graph breaks (`_one_graph`).
    callback = getattr(context, "callback", None)
    return bool(getattr(context, "fullgraph", False) or getattr(callback, "_one_graph", False))


def compiled_region(model: nn.Module) -> dict[int, bool]:
    """The modules that run inside a `torch.compile`d call, by id: each `compiled_inner` and
    every module below it, mapped to True where the call is compiled with `fullgraph=True`
    (a graph break there is an error, so no hook can run eagerly inside: `sealed`). A compiled
    wrapper's own hooks run eagerly around the compiled call, so the wrapper is outside
    (unless a compiled module holds it). Empty at once when TorchDynamo was never imported:
    then nothing can have been compiled."""
    region: dict[int, bool] = {}
    if "torch._dynamo" not in sys.modules:
        return region
    for _, module in distinct_modules(model):
        if id(module) in region:
            continue
        found = compiled_inner(module)
        if found is not None:
            inner, fullgraph = found
            for _, below in distinct_modules(inner, seen=set(region)):
                region[id(below)] = fullgraph
    return region


def sealed(module: nn.Module, compiled: dict[int, bool]) -> bool:
    """True for a module inside a `fullgraph=True` compiled call (`compiled_region`): a hook
    of modscope's there would break the graph, which fullgraph forbids, so none is added; the
    compiled wrapper's own hooks see the call's inputs and outputs."""
    return compiled.get(id(module), False)


def hook_sites(
    modules: Iterable[tuple[str, nn.Module]], compiled: dict[int, bool]
) -> list[tuple[str, nn.Module, bool]]:
    """`(path, module, inside)` for each of `modules` modscope may hook: ScriptModules
    (`refuses_hooks`) and modules sealed in a `fullgraph=True` call (`sealed`) left out;
    `inside` says whether the module runs inside a compiled call, so that its hooks are
    registered through `eager_hook(hook, compiled=inside)`."""
    return [
        (path, module, id(module) in compiled)
        for path, module in modules
        if not refuses_hooks(module) and not sealed(module, compiled)
    ]


FULLGRAPH_WHY = (
    "a hook there would break the graph, which fullgraph forbids; hooks outside the compiled "
    "call (on its torch.compile wrapper, the module holding `_orig_mod`) see its inputs and "
    "outputs"
)
"""Why modules inside a `fullgraph=True` compiled call get no hook of modscope's."""


def sealed_paths(model: nn.Module, compiled: dict[int, bool] | None = None) -> list[str]:
    """The paths of the outermost modules inside `fullgraph=True` compiled calls (`sealed`)."""
    compiled = compiled_region(model) if compiled is None else compiled
    if not any(compiled.values()):
        return []
    out: list[str] = []
    for path, module in distinct_modules(model):
        if sealed(module, compiled) and not any(p == "" or path.startswith(p + ".") for p in out):
            out.append(path)
    return out


def sealed_note(model: nn.Module) -> str | None:
    """What `--hooks all` leaves out on a model with `fullgraph=True` compiled calls, or None."""
    paths = sealed_paths(model)
    if not paths:
        return None
    shown = ", ".join(printable(p) or "the model" for p in paths[:4])
    more = f" and {len(paths) - 4} more" if len(paths) > 4 else ""
    return (
        f"the modules inside {plural(len(paths), 'torch.compile(fullgraph=True) call')} "
        f"({shown}{more}, and below) get no hooks of modscope's (--hooks all, `*`, --layers, "
        "--break, the doctor's probes): " + FULLGRAPH_WHY
    )


def in_backward() -> bool:
    """True while autograd runs a backward node: activation checkpointing re-runs module
    forwards during backward, which are not another call of the forward."""
    current = getattr(torch._C, "_current_autograd_node", None)
    return current is not None and current() is not None


def eager_hook(hook: HookFn, *, compiled: bool) -> HookFn:
    """`hook` as it must be registered on a module: on one inside a compiled call
    (`compiled_region`), wrapped by `torch.compiler.disable`, so that TorchDynamo calls it
    eagerly between compiled graphs (a graph break) instead of tracing it. Traced, modscope's
    captures (dicts keyed by `id()`, weak references) fail inside Dynamo, and a hook that reads
    real values must see real tensors. Elsewhere `hook` itself, at no cost."""
    if not compiled:
        return hook
    return torch.compiler.disable(hook)


def refusing_hooks(model: nn.Module) -> list[str]:
    """The paths of the outermost modules that refuse hooks (`refuses_hooks`); their
    submodules, ScriptModules too, are left out."""
    out: list[str] = []
    for path, module in distinct_modules(model):
        if refuses_hooks(module) and not any(path.startswith(p + ".") for p in out if p):
            out.append(path)
    return out


def refusing_phrase(paths: list[str]) -> str:
    """`1 ScriptModule (encoder.scripted)`: what `refusing_hooks` found, in words."""
    shown = ", ".join(p or "the model" for p in paths[:4])
    more = f" and {len(paths) - 4} more" if len(paths) > 4 else ""
    return f"{plural(len(paths), 'ScriptModule')} ({shown}{more})"


def find_cycle(model: nn.Module) -> tuple[str, str] | None:
    """The first module registered as its own descendant (`m.add_module("loop", m)`, or
    deeper), as `(the path where it repeats, the path of the ancestor it is)`, or None.

    torch's `state_dict()`, `named_modules(remove_duplicate=False)` and `.to()` recurse forever
    on such a model. Each module is explored once (depth first, iteratively).
    """
    if not _reaches_a_module_twice(model):
        return None
    on_path: dict[int, bool] = {id(model): True}
    first = {id(model): ""}
    stack = [(model, "", iter(list(model._modules.items())))]
    while stack:
        module, path, children = stack[-1]
        for name, child in children:
            if child is None:
                continue
            key = id(child)
            child_path = f"{path}.{name}" if path else name
            if on_path.get(key):
                return child_path, first[key]
            if key not in on_path:
                on_path[key] = True
                first[key] = child_path
                stack.append((child, child_path, iter(list(child._modules.items()))))
                break
        else:
            on_path[id(module)] = False
            stack.pop()
    return None


def _reaches_a_module_twice(model: nn.Module) -> bool:
    """Whether some module is registered under two paths (shared, or a cycle).

    A cycle reaches its first module again, so without any repeat there is none: this one pass,
    with no paths and no iterators, clears most models, large ones included, before
    `find_cycle`'s depth-first search would run.
    """
    seen = {id(model)}
    stack = [model]
    while stack:
        for child in stack.pop()._modules.values():
            if child is None:
                continue
            key = id(child)
            if key in seen:
                return True
            seen.add(key)
            stack.append(child)
    return False


def all_parameter_paths(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """`named_parameters(remove_duplicate=False)`: every name each parameter is reachable
    under (a tied weight under each), in the same order, without calling a method the model
    may override and without following a cycle back up."""
    out: list[tuple[str, nn.Parameter]] = []
    stack: list[tuple[nn.Module, str, frozenset[int]]] = [(model, "", frozenset())]
    while stack:
        module, path, above = stack.pop()
        prefix = path + "." if path else ""
        out += [(prefix + n, p) for n, p in module._parameters.items() if p is not None]
        inside = above | {id(module)}
        for name, child in reversed(list(module._modules.items())):
            if child is not None and id(child) not in inside:
                stack.append((child, prefix + name, inside))
    return out


def own_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """`(name, tensor, is_parameter)` for a module's own registered parameters and buffers."""
    for name, p in module._parameters.items():
        if p is not None:
            yield name, p, True
    for name, b in module._buffers.items():
        if b is not None:
            yield name, b, False


def user_attributes(module: nn.Module) -> list[tuple[str, Any]]:
    """The attributes in a module's `__dict__` that `nn.Module.__init__` did not create and
    that can hold something (scalars left out), in definition order."""
    attrs = module.__dict__
    # A hot path (every module of a 13,000-module model): the set difference drops the ~17
    # entries torch puts in every `__dict__` without a Python loop, and most modules keep only
    # scalars (`in_features`, `eps`) or one other value, so the order rarely needs restoring.
    names = [k for k in attrs.keys() - MODULE_INTERNALS if type(attrs[k]) not in SCALAR_TYPES]
    if len(names) <= 1:
        return [(k, attrs[k]) for k in names]
    return [(k, v) for k, v in attrs.items() if k in names]


def iter_container(value: Any) -> Iterator[Any]:
    """The members of a plain container (dict values), or nothing."""
    if isinstance(value, dict):
        yield from value.values()
    elif isinstance(value, CONTAINERS):
        yield from value


def held_objects(
    value: Any, path: str, *, visited: set[int], depth: int = 0
) -> Iterator[tuple[str, Any]]:
    """`(path, object)` for the modules, tensors and plain containers in an attribute's value.

    `value` itself comes first when it is one of them; a container is followed by its members,
    down to `MAX_CONTAINER_DEPTH` levels, and each container is looked into once: `visited`
    holds the ids of those seen (share it across calls to walk a whole model). Modules and
    tensors are not looked into. Paths add Python subscripts for sequences and mappings
    (`blocks[0]`, `heads['q']`, `cache[1]['k']`) and `{i}` for the i-th member of a set in
    iteration order (sets have no subscript).
    """
    if isinstance(value, (nn.Module, torch.Tensor)):
        yield path, value
        return
    if depth >= MAX_CONTAINER_DEPTH or not isinstance(value, CONTAINERS):
        return
    key = id(value)
    if key in visited:
        return
    visited.add(key)
    yield path, value
    depth += 1
    if isinstance(value, dict):
        for k, v in value.items():
            if type(v) not in SCALAR_TYPES:
                yield from held_objects(v, f"{path}[{subscript(k)}]", visited=visited, depth=depth)
        return
    template = "{}{{{}}}" if isinstance(value, SETS) else "{}[{}]"
    for i, v in enumerate(value):
        if type(v) not in SCALAR_TYPES:
            yield from held_objects(v, template.format(path, i), visited=visited, depth=depth)


def subscript(key: Any) -> str:
    """A dict key as it would be written in Python source, or `<Type>` when it has no literal."""
    if type(key) in SCALAR_TYPES or (
        isinstance(key, tuple) and all(type(k) in SCALAR_TYPES for k in key)
    ):
        return repr(key)
    return f"<{type(key).__name__}>"


def structure_fingerprint(model: nn.Module) -> tuple[int, ...]:
    """`(modules, modules in training mode, _parameters entries, _buffers entries)` over the
    distinct registered modules, in one pass: equal before and after a step that changed no
    structure and no train/eval mode, much cheaper than an inventory."""
    seen = {id(model)}
    stack = [model]
    modules = training = parameters = buffers = 0
    while stack:
        module = stack.pop()
        modules += 1
        training += module.training
        parameters += len(module._parameters)
        buffers += len(module._buffers)
        for child in module._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    return (modules, training, parameters, buffers)


def tensor_at(model: nn.Module, path: str) -> torch.Tensor | None:
    """The parameter or buffer at a dotted `state_dict` path (`body.0.weight`), or None when
    the model has none there."""
    owner, _, name = path.rpartition(".")
    try:
        module = model.get_submodule(owner) if owner else model
    except AttributeError:
        return None
    for registry in (module._parameters, module._buffers):
        # A ScriptModule's registries are OrderedDictWrappers: `in` and `[]`, but no `.get`.
        if name in registry:
            tensor = registry[name]
            if tensor is not None:
                return tensor
    return None


def module_at(model: nn.Module, path: str) -> tuple[str, nn.Module] | None:
    """The module at the dotted `path` (`""` the root) with its real path, or None. A name
    holding control characters is shown escaped everywhere (`core.contract.fmt.printable`), so that
    escaped form, as a person copies it from the screen, finds the module too. A path written
    as in the user's model, without the `_orig_mod` of a `torch.compile` wrapper on the way
    (`mlp.fc` for `mlp._orig_mod.fc`), finds it too, at its real path."""
    module, real = model, []
    for part in path.split(".") if path else ():
        # A ScriptModule's `_modules` (an OrderedModuleDict) has no `.get`.
        child = dict(module._modules.items()).get(part)
        if child is None:
            found = compiled_inner(module)
            inner = found[0] if found is not None else None
            if inner is not None and inner is not module and part != "_orig_mod":
                child = dict(inner._modules.items()).get(part)
                if child is not None:
                    real.append("_orig_mod")
        if child is None:
            break
        real.append(part)
        module = child
    else:
        return ".".join(real), module
    for name, found_module in distinct_modules(model):
        if name and printable(name) == path:
            return name, found_module
    return None


def did_you_mean(model: nn.Module, path: str) -> str:
    """` (did you mean a, b?)`: the modules whose paths are close to `path`, or ""."""
    names = [name for name, _ in distinct_modules(model) if name]
    close = difflib.get_close_matches(path, names, n=5, cutoff=0.6)
    return f" (did you mean {', '.join(printable(n) for n in close)}?)" if close else ""
