"""`assert_healthy`'s engine: the doctor on live objects, its failures as one message."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from torch import nn

from modscope.core.contract.findings import Finding, FindingKind, Severity
from modscope.core.contract.steps import UserError
from modscope.core.doctor import run_checks
from modscope.core.session import Session

HEADER = "modscope.testing.assert_healthy"


def allowed_kinds(allow: Iterable[str]) -> frozenset[FindingKind]:
    """The finding kinds of `allow`; a name that is no kind is refused with the list of kinds."""
    if isinstance(allow, str):
        allow = (allow,)
    kinds = set()
    for name in allow:
        try:
            kinds.add(FindingKind(name))
        except ValueError:
            known = ", ".join(k.value for k in FindingKind)
            raise ValueError(
                f"{HEADER}: allow={name!r} is no finding kind; kinds: {known}"
            ) from None
    return frozenset(kinds)


def check_health(
    model: nn.Module,
    *,
    origin: str,
    objects: dict[str, Any],
    steps: int,
    allow: Iterable[str],
    strict: bool,
) -> None:
    """What `modscope.testing.assert_healthy` documents; `origin` is the caller's file."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{HEADER}: model is a {type(model).__name__}, not an nn.Module")
    allowed = allowed_kinds(allow)
    session = Session.from_objects(model, origin=origin, **objects)
    try:
        result = run_checks(session, steps=steps)
    finally:
        session.close()
    worst = Severity.WARNING.rank if strict else Severity.ERROR.rank
    failing = [f for f in result.findings if f.severity.rank <= worst and f.kind not in allowed]
    if not failing and result.error is None:
        return
    parts = [f"{HEADER}: {_count(failing, result.error)} in {_class_name(model)}"]
    parts += [_finding_text(model, f) for f in failing]
    if result.error is not None:
        parts.append(_error_text(result.error))
    if failing:
        kinds = sorted({f.kind.value for f in failing})
        parts.append(f"(allow={kinds!r} lets these kinds pass)")
    raise AssertionError("\n\n".join(parts))


def _count(failing: list[Finding], error: UserError | None) -> str:
    n = len(failing)
    text = f"{n} finding{'s' if n != 1 else ''}"
    return text + (" and an iteration that raised" if error is not None else "")


def _class_name(model: nn.Module) -> str:
    return type(model).__qualname__


def _finding_text(model: nn.Module, f: Finding) -> str:
    lines = [f"{f.severity.value} {f.kind.value}  {f.path or '(model)'}", f"    {f.message}"]
    lines.append(f"    fix: {f.fix}")
    where = _class_location(model, f.path)
    if where:
        lines.append(f"    in {where}")
    return "\n".join(lines)


def _error_text(error: UserError) -> str:
    where = error.file or "?"
    if error.line:
        where += f":{error.line}"
    step = f"step {error.step}, " if error.step else ""
    head = f"an iteration raised ({step}{error.phase.value}): {error.exc_type}: {error.message}"
    return f"{head}\n    at {where}"


def _owner(model: nn.Module, path: str) -> nn.Module:
    """The deepest registered module on a finding's path (`blocks.3.cache[0]` -> blocks.3)."""
    module = model
    for part in path.split("[", 1)[0].split("."):
        child = module._modules.get(part) if part else None
        if child is None:
            break
        module = child
    return module


def _class_location(model: nn.Module, path: str) -> str | None:
    """`file:line (class Name)` of the class that holds what a finding names (the model's own
    class where that is one of torch's)."""
    cls = type(_owner(model, path))
    if cls.__module__.startswith("torch."):
        cls = type(model)
    try:
        file = inspect.getsourcefile(cls)
        _, line = inspect.getsourcelines(cls)
    except (OSError, TypeError):  # built-in, or defined where no source is kept
        return None
    if file is None:
        return None
    return f"{file}:{line} (class {cls.__qualname__})"
