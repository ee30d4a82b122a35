"""Hooks and break conditions from the keyboard: attach, detach, arm, list, each turned into the
updates that say what happened (a refusal is a notice, never a crash)."""

from __future__ import annotations

from collections.abc import Sequence

from modscope.control import updates as up
from modscope.core.contract.break_spec import BreakSpecError
from modscope.core.contract.hook_spec import HookInfo, HookKind, HookSpec, HookSpecError
from modscope.core.hooks.listing import detach_foreign, list_hooks
from modscope.core.session import Session


def attach(s: Session, spec: HookSpec, *, source: str) -> list[up.Update]:
    """Attach `spec`, saying what happened in the log; errors (a bad module, PyTorch refusing a
    legacy hook beside a full one) become notices. A legacy backward hook comes with an
    observing backward hook on the same module, so that both gradients show side by side."""
    out: list[up.Update] = []
    specs = [spec]
    if spec.kind is HookKind.LEGACY_BACKWARD and not any(
        h.path == spec.module and h.kind is HookKind.BACKWARD for h in s.hooks.attached.values()
    ):
        specs.append(HookSpec(spec.module, HookKind.BACKWARD))
    for i, one in enumerate(specs):
        try:
            added = s.attach(one)
        except (HookSpecError, RuntimeError, ValueError) as exc:
            out.append(up.Notice(f"{source}: {one}: {exc}", "error"))
            break
        where = f"{len(added):,} modules" if len(added) != 1 else (one.module or "the root")
        why = " (beside the legacy hook, to compare)" if i else ""
        skipped = s.hooks.skipped_note()
        why += f"; {skipped}" if skipped else ""
        out.append(up.Notice(f"attached {one} on {where}{why}"))
    return out


def detach(s: Session, hook: HookInfo) -> list[up.Update]:
    """Detach a hook the hooks pane lists: modscope's, or (the user confirmed) another's."""
    what = hook.action or f"{hook.kind} {hook.qualname}"
    try:
        if hook.hook_id.is_modscope:
            s.detach(hook.hook_id)
        else:
            detach_foreign(s.model, hook)
    except (KeyError, AttributeError, ValueError) as exc:
        return [up.Notice(f"detaching {what}: already gone ({exc})", "warning")]
    owner = "" if hook.hook_id.is_modscope else f" ({hook.owner}'s)"
    return [up.Notice(f"detached {what}{owner} from {hook.module or 'the root'}")]


def arm(s: Session, conditions: Sequence[str]) -> list[up.Update]:
    """Arm exactly `conditions` (the `b` dialog's list, or `--break`); a bad one is a notice
    and the armed set stays as it was."""
    try:
        armed = s.arm(conditions)
    except BreakSpecError as exc:
        return [up.Notice(f"break: {exc}", "error")]
    said = ", ".join(str(c) for c in armed) if armed else "none"
    return [up.Notice(f"break conditions armed: {said}")]


def hooks_of(s: Session, path: str) -> up.HooksListed:
    """Every hook that can fire on the module at `path` (none when it is gone)."""
    try:
        hooks = list_hooks(s.model, path, manager=s.hooks, script=s.script.path)
    except AttributeError:  # the module is gone (the structure changed)
        hooks = []
    return up.HooksListed(path, tuple(hooks))
