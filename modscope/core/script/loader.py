"""Loading a model script as module `__modscope__` and reading its contract names."""

from __future__ import annotations

import contextlib
import difflib
import importlib.machinery
import importlib.util
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modscope.core.contract.script_names import MISSING, SCRIPT_NAMES
from modscope.core.contract.steps import Phase, UserError
from modscope.core.model.state import WRAPPERS, inspected_module
from modscope.core.rewind.rng import reachable_generators
from modscope.core.script.errors import ScriptError, is_user_file, user_error
from modscope.core.script.interrupts import ExitIntercepted, is_real_interrupt
from modscope.core.script.outputs import file_kind
from modscope.core.script.print_capture import PrintSink, captured_prints

MODULE_NAME = "__modscope__"


@dataclass
class LoadedScript:
    """A model script after it ran: the model and the contract names it defined.

    Every name of `SCRIPT_NAMES` is a field; the defaults say what an absent name means:
    MISSING where that differs from None (`inputs`, `loss_fn`), None elsewhere.
    """

    path: str
    module: Any
    model: nn.Module
    model_name: str
    inputs: Any = MISSING
    loss_fn: Any = MISSING
    compute_loss: Callable[..., Any] | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    train_step: Callable[..., Any] | None = None
    notes: list[str] = field(default_factory=list)

    def generators(self) -> tuple[torch.Generator, ...]:
        """The script's own `torch.Generator`s (top-level names, and those its callables hold),
        whose states decide the iterations as much as the global RNGs do."""
        namespace = vars(self.module) if self.module is not None else {}
        callables = (self.inputs, self.loss_fn, self.compute_loss, self.train_step)
        return reachable_generators(namespace, callables)


def _fail(path: str, message: str, hint: str, line: int | None = None) -> ScriptError:
    return ScriptError(
        UserError(
            message=message,
            exc_type="ScriptError",
            file=path,
            line=line,
            phase=Phase.LOAD,
            hint=hint,
        )
    )


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def find_model(
    namespace: dict[str, Any], path: str, model_name: str | None = None
) -> tuple[str, nn.Module]:
    """The model a script names or, failing that, the one top-level module holding state."""
    if model_name is not None:
        value = namespace.get(model_name, MISSING)
        if isinstance(value, nn.Module):
            return model_name, value
        if value is MISSING:
            what = f"the script defines no top-level name {model_name!r}"
        else:
            what = f"{model_name!r} is a {type(value).__name__}, not an nn.Module"
        message = f"--model {model_name}: {what}"
        raise _fail(path, message, _model_candidates_hint(namespace, model_name))
    if "model" in namespace:
        value = namespace["model"]
        if not isinstance(value, nn.Module):
            raise _fail(
                path,
                f"`model` is a {type(value).__name__}, not an nn.Module",
                "Set `model = YourModule(...)` at the top level of the script.",
            )
        return "model", value
    seen: dict[int, str] = {}
    for name, value in namespace.items():
        if name.startswith("__") or not isinstance(value, nn.Module) or id(value) in seen:
            continue
        if _has_state(value):
            seen[id(value)] = name
    candidates = {name: namespace[name] for name in seen.values()}
    contained = set()
    for name, value in candidates.items():
        for other_name, other in candidates.items():
            if other_name != name and any(m is value for m in other.modules()):
                contained.add(name)
    top = [name for name in candidates if name not in contained]
    if len(top) == 1:
        return top[0], candidates[top[0]]
    if not top:
        raise _fail(
            path,
            "the script defines no model (no top-level nn.Module with parameters or buffers)",
            "Add `model = YourModule(...)` at the top level of the script.",
        )
    listed = ", ".join(top)
    raise _fail(
        path,
        f"several top-level modules could be the model: {listed}",
        f"Name one with --model NAME (one of: {listed}), or set `model = ...`.",
    )


def _wrapper_of(namespace: dict[str, Any], model: nn.Module) -> nn.Module | None:
    """A top-level DistributedDataParallel (or DataParallel) around `model`, as in `model =
    Net(); ddp = DistributedDataParallel(model)`: the iterations must call it, or the ranks'
    gradients would not be averaged (the session still shows `model`)."""
    for value in namespace.values():
        if isinstance(value, WRAPPERS) and value is not model and inspected_module(value) is model:
            return value
    return None


def _model_candidates_hint(namespace: dict[str, Any], wrong: str) -> str:
    """`--model` names these: the script's top-level `nn.Module`s, close matches first."""
    names = [
        name
        for name, value in namespace.items()
        if not name.startswith("__") and isinstance(value, nn.Module)
    ]
    if not names:
        return "The script defines no top-level nn.Module: build one, e.g. `model = Net()`."
    close = difflib.get_close_matches(wrong, names, n=3)
    ordered = close + [n for n in names if n not in close]
    hint = f"Top-level modules in the script: {', '.join(ordered)}."
    if close:
        hint = f"Did you mean --model {close[0]}? " + hint
    return hint


def _read_contract(module: Any, path: str, model_name: str | None) -> LoadedScript:
    namespace = vars(module)
    name, model = find_model(namespace, path, model_name)
    model = _wrapper_of(namespace, model) or model
    # `model` is the one `find_model` chose (`--model` may name another); the rest as defined.
    given = {n: namespace[n] for n in SCRIPT_NAMES if n != "model" and n in namespace}
    loaded = LoadedScript(path=path, module=module, model=model, model_name=name, **given)
    optimizer = loaded.optimizer
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise _fail(
            path,
            f"`optimizer` is a {type(optimizer).__name__}, not a torch.optim.Optimizer",
            "Set `optimizer = torch.optim.SGD(model.parameters(), lr=...)`, or remove the name.",
        )
    for attr in ("compute_loss", "train_step"):
        value = getattr(loaded, attr)
        if value is not None and not callable(value):
            raise _fail(
                path,
                f"`{attr}` is a {type(value).__name__}, not a function",
                f"Define `def {attr}(...)` or remove the name.",
            )
    if (
        loaded.loss_fn is not MISSING
        and loaded.loss_fn is not None
        and not callable(loaded.loss_fn)
    ):
        raise _fail(
            path,
            f"`loss_fn` is a {type(loaded.loss_fn).__name__}, not a function",
            "Define `def loss_fn(output): ...`, set it to None, or remove the name.",
        )
    return loaded


class _ScriptLoader(importlib.machinery.SourceFileLoader):
    """Compiles the script from its source on every load: no bytecode is read or written.

    The default loader would write `__pycache__/` beside the user's script and, on a reload,
    could run stale bytecode: a `.pyc` is checked against the source's size and its mtime in
    whole seconds, so an edit within the same second that keeps the size goes unseen.
    """

    def get_code(self, fullname: str) -> Any:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


def _not_a_script(given: str, path: str) -> ScriptError | None:
    """The load error for a path that is no readable regular file, saying what it is."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return _fail(path, f"{given}: no such file", "Check the path of the model script.")
    except OSError as exc:
        return _fail(path, f"{given}: {exc.strerror or exc}", "Check the path of the model script.")
    if stat.S_ISREG(mode):
        return None
    return _fail(
        path,
        f"{given} is {file_kind(mode)}, not a Python file",
        "Pass the path of a model script, e.g. `modscope run train.py`.",
    )


@contextlib.contextmanager
def _no_bytecode() -> Iterator[None]:
    # Modules the script imports from its own folder would get a `__pycache__/` there too.
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = previous


_IMPORTED: dict[str, tuple[str, ...]] = {}
"""For each script loaded (by its absolute path): the modules of the user's own files (neither
the standard library, nor an installed package, nor modscope) that its last load imported."""


def _forget_imports(path: str) -> None:
    """Drop from `sys.modules` the user's modules that the last load of `path` imported, so that
    loading it again imports them afresh: an edited helper (`from model import Net`) runs its
    new code after a reload, as the script does."""
    for name in _IMPORTED.pop(path, ()):
        sys.modules.pop(name, None)
    # The import system caches each folder's listing: a helper added since is found too.
    importlib.invalidate_caches()


def _remember_imports(path: str, before: set[str]) -> None:
    _IMPORTED[path] = tuple(
        name
        for name, module in list(sys.modules.items())
        if name not in before and name != MODULE_NAME and _is_users(module)
    )


def _is_users(module: Any) -> bool:
    file = getattr(module, "__file__", None)
    return isinstance(file, str) and is_user_file(file)


def load_script(
    path: str, *, model_name: str | None = None, sink: PrintSink | None = None
) -> LoadedScript:
    """Run the script as module `__modscope__` and read its contract names.

    Raises `ScriptError` (with the script's file and line) when the file is missing or no file,
    does not parse, raises while it runs (`sys.exit()` and a `KeyboardInterrupt` of its own
    included), or defines no model. A real Ctrl-C (`is_real_interrupt`) goes on up. Nothing is
    written beside the script (no `__pycache__/`), and every load compiles the current source;
    the user's modules that the previous load of `path` imported are imported afresh.
    """
    given = path
    path = os.path.abspath(path)
    problem = _not_a_script(given, path)
    if problem is not None:
        raise problem
    loader = _ScriptLoader(MODULE_NAME, path)
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path, loader=loader)
    if spec is None:
        raise _fail(path, "not a Python file modscope can load", "Pass a .py model script.")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, so classes defined in the script pickle (torch.save(model)).
    previous = sys.modules.get(MODULE_NAME)
    sys.modules[MODULE_NAME] = module
    script_dir = os.path.dirname(path)
    if script_dir not in sys.path:
        sys.path.insert(0, script_dir)
    argv = sys.argv
    sys.argv = [path]
    _forget_imports(path)
    before = set(sys.modules)
    try:
        with captured_prints(sink), _no_bytecode():
            loader.exec_module(module)
    except BaseException as exc:
        # sys.exit(), KeyboardInterrupt or GeneratorExit raised by the script is a load error
        # like any other; only a real Ctrl-C goes on up.
        _restore(previous)
        if is_real_interrupt(exc):
            raise
        raise ScriptError(
            user_error(exc, phase=Phase.LOAD, script=path, hint=_load_hint(exc))
        ) from exc
    finally:
        sys.argv = argv
        _remember_imports(path, before)
    try:
        return _read_contract(module, path, model_name)
    except ScriptError:
        _restore(previous)
        raise


def _load_hint(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return "The script called sys.exit() (or exit()) at the top level; remove that call."
    if isinstance(exc, KeyboardInterrupt):
        return "The script raised KeyboardInterrupt at the top level; remove that raise."
    if isinstance(exc, ExitIntercepted):
        return "The script called os._exit() at the top level; remove that call."
    return "Fix the script and load it again."


def _restore(previous: Any) -> None:
    if previous is None:
        sys.modules.pop(MODULE_NAME, None)
    else:
        sys.modules[MODULE_NAME] = previous
