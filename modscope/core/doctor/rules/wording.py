"""The words every finding shares: building one, naming paths and lists, the Python that
reaches a module or parameter."""

from __future__ import annotations

from collections.abc import Sequence

from modscope.core.contract.findings import Finding, FindingKind, Severity

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
    severity: Severity | None = None,
) -> Finding:
    """A `Finding` of `kind`, with the kind's severity unless the rule says how bad this one is."""
    return Finding(
        kind=kind,
        severity=kind.severity if severity is None else severity,
        path=path,
        message=message,
        fix=fix,
        paths=tuple(paths),
        step=step,
        subject=subject,
    )


class Number:
    """The words that agree with a count of things: `Number(1).they` is "it", `Number(2).they`
    is "they", `Number(2).verb("trains", "train")` is "train"."""

    def __init__(self, n: int) -> None:
        self.one = n == 1

    @property
    def they(self) -> str:
        return "it" if self.one else "they"

    @property
    def them(self) -> str:
        return "it" if self.one else "them"

    @property
    def their(self) -> str:
        return "its" if self.one else "their"

    @property
    def are(self) -> str:
        return "is" if self.one else "are"

    def verb(self, singular: str, plural: str) -> str:
        return singular if self.one else plural


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


def parameter_accessor(path: str, root: str = "model") -> str:
    """`model.body[3].weight` for a parameter path."""
    owner, _, name = path.rpartition(".")
    return f"{accessor(owner, root)}.{name}" if name.isidentifier() else accessor(path, root)


def last_name(path: str) -> str:
    return path.rsplit(".", 1)[-1] if path else "model"
