"""A model's structure as stable plain data and text, and a readable diff of two of them."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from typing import Any

from torch import nn

from modscope.core.contract.tensors import TensorInfo
from modscope.core.model.inventory import build_inventory

FORMAT = 1
HEADER = f"# modscope structure, format {FORMAT}"
ROOT = "(root)"

# A token written bare in the text; anything else (spaces, ": ", escapes, non-ASCII) is written
# as a JSON string, so that every line parses back whatever the module names hold.
_BARE = re.compile(r"[A-Za-z0-9_.\[\]'{}<>-]+")

# Line kinds, longest first: "unregistered module" must win over "module".
_KINDS = (
    "unregistered parameter",
    "unregistered module",
    "unregistered tensor",
    "state_dict",
    "parameter",
    "buffer",
    "module",
    "tied",
    "totals",
)


def model_structure(model: nn.Module) -> dict[str, Any]:
    """`model`'s structure as JSON-serialisable plain data, equal for two models built alike.

    Modules (every path, `named_modules(remove_duplicate=False)` order, with the class's
    `module.qualname`), parameters and buffers (shape, None where unknown, as for a lazy
    parameter before its first forward; dtype; `requires_grad` or persistence; `tied_to`: the
    first path of the same tensor object when it is reachable under several),
    the `state_dict` keys in order, what is held but unregistered (`find_unregistered`), and the
    root's totals. No values, ids, addresses or devices: a snapshot holds on CPU and GPU alike.
    """
    inv = build_inventory(model, extra_reprs=False)
    first_path: dict[str, str] = {}
    # `Inventory.shared` has every path of a tied parameter (`shared_with` stops at a limit).
    for group in (*inv.shared, *_tensor_groups(inv.modules)):
        for path in group[1:]:
            first_path.setdefault(path, group[0])
    modules = []
    parameters = []
    buffers = []
    for info in inv.modules:
        modules.append({"path": info.path, "class": _qualname(model, info.path)})
        for p in info.parameters:
            entry = _tensor_entry(p, first_path)
            entry["requires_grad"] = p.requires_grad
            parameters.append(entry)
        for b in info.buffers:
            entry = _tensor_entry(b, first_path)
            entry["persistent"] = b.persistent
            buffers.append(entry)
    totals = inv.modules[0].totals
    return {
        "format": FORMAT,
        "modules": modules,
        "parameters": parameters,
        "buffers": buffers,
        "state_dict": _state_dict_keys(model, inv.modules),
        "unregistered": [
            {"path": u.path, "what": u.what, "class": u.type_name, "container": u.container}
            for u in inv.unregistered
        ],
        "totals": {
            "parameters": totals.parameters,
            "trainable": totals.trainable,
            "buffers": totals.buffers,
            "bytes": totals.bytes,
        },
    }


def _state_dict_keys(model: nn.Module, modules: Any) -> list[str]:
    try:
        return list(model.state_dict(keep_vars=True).keys())
    except RecursionError:
        # A module that is its own descendant: torch's recursive walk never ends. Its keys in
        # the order torch writes them, from the walk that stops at the back-edge.
        return [
            t.path
            for info in modules
            for t in (*info.parameters, *info.buffers)
            if t.is_parameter or t.persistent
        ]


def _tensor_groups(modules: Any) -> Iterator[list[str]]:
    """Paths of one tensor object, first path first, for tensors under several paths."""
    seen: set[str] = set()
    for info in modules:
        for t in (*info.parameters, *info.buffers):
            if t.shared_with and t.path not in seen:
                group = [t.path, *t.shared_with]
                seen.update(group)
                yield group


def _tensor_entry(t: TensorInfo, first_path: dict[str, str]) -> dict[str, Any]:
    return {
        "path": t.path,
        # A lazy parameter before its first forward, or a tensor that refuses its size.
        "shape": None if t.note else list(t.shape),
        "dtype": t.dtype,
        "tied_to": first_path.get(t.path),
    }


def _qualname(model: nn.Module, path: str) -> str:
    try:
        cls = type(model.get_submodule(path)) if path else type(model)
    except AttributeError:  # a name torch's own lookup cannot follow
        return "?"
    return f"{cls.__module__}.{cls.__qualname__}"


# -- text ------------------------------------------------------------------------------------


def _token(text: str) -> str:
    return text if _BARE.fullmatch(text) else json.dumps(text)


def _path(path: str) -> str:
    return ROOT if path == "" else _token(path)


def _shape(shape: list[int] | None) -> str:
    return "[?]" if shape is None else "[" + ", ".join(map(str, shape)) + "]"


def structure_lines(spec: dict[str, Any]) -> list[str]:
    """The text of a structure: one fact per line, `KIND PATH: WHAT`, in a stable order."""
    lines = [HEADER]
    for m in spec["modules"]:
        lines.append(f"module {_path(m['path'])}: {_token(m['class'])}")
    for p in spec["parameters"]:
        flags = "" if p["requires_grad"] else " frozen"
        lines.append(f"parameter {_path(p['path'])}: {_shape(p['shape'])} {p['dtype']}{flags}")
    for b in spec["buffers"]:
        flags = "" if b["persistent"] else " non-persistent"
        lines.append(f"buffer {_path(b['path'])}: {_shape(b['shape'])} {b['dtype']}{flags}")
    for t in (*spec["parameters"], *spec["buffers"]):
        if t["tied_to"] is not None:
            lines.append(f"tied {_path(t['path'])}: {_path(t['tied_to'])}")
    for u in spec["unregistered"]:
        where = f" in {u['container']}" if u["container"] else ""
        lines.append(f"unregistered {u['what']} {_path(u['path'])}: {_token(u['class'])}{where}")
    for key in spec["state_dict"]:
        lines.append(f"state_dict {_path(key)}")
    t = spec["totals"]
    lines.append(
        f"totals: {t['parameters']:,} parameters ({t['trainable']:,} trainable), "
        f"{t['buffers']:,} buffer elements, {t['bytes']:,} bytes"
    )
    return lines


def structure_text(spec: dict[str, Any]) -> str:
    """`structure_lines` joined, ending in a newline."""
    return "\n".join(structure_lines(spec)) + "\n"


def _parse_line(line: str) -> tuple[str, str, str] | None:
    """(kind, path, what) of one line of `structure_lines`, or None for a line it never writes."""
    for kind in _KINDS:
        if line.startswith(kind + " ") or line.startswith(kind + ":"):
            rest = line[len(kind) :].lstrip(" ")
            break
    else:
        return None
    if kind == "totals":
        return kind, "", rest.removeprefix(": ")
    if rest.startswith('"'):
        try:
            path, end = json.JSONDecoder().raw_decode(rest)
        except ValueError:
            return None
        rest = rest[end:]
    else:
        match = re.match(r"\(root\)|[^:\s]+", rest)
        if match is None:
            return None
        path = "" if match.group(0) == ROOT else match.group(0)
        rest = rest[match.end() :]
    return kind, path, rest.removeprefix(": ")


def _facts(text: str) -> tuple[dict[tuple[str, str], str], list[str]]:
    facts: dict[tuple[str, str], str] = {}
    keys: list[str] = []
    for line in text.splitlines():
        parsed = _parse_line(line)
        if parsed is None:
            continue
        kind, path, what = parsed
        if kind == "state_dict":
            keys.append(path)
        facts[(kind, path)] = what
    return facts, keys


def structure_changes(old: str, new: str) -> list[str]:
    """What changed from the structure text `old` to `new`, one readable line each:
    `blocks.3.attn.proj.weight: [64, 64] float32 -> [64, 128] float32`,
    `new unregistered module blocks.3.cache[0]: Linear in list`,
    `head.weight no longer tied to embed.weight`.

    What a removed or new module holds is said once, with the module; a removed and a new
    module of the same class with close names is a rename; changes that differ only in the
    index of numbered siblings are one line (`blocks.0-2.norm renamed to blocks.0-2.final`).
    """
    before, old_keys = _facts(old)
    after, new_keys = _facts(new)
    removed = _outermost([p for k, p in before if k == "module" and (k, p) not in after])
    added = _outermost([p for k, p in after if k == "module" and (k, p) not in before])
    renamed = _renamed(removed, added, before, after)
    tensors_changed = {
        p
        for k, p in {*before, *after}
        if k in ("parameter", "buffer") and before.get((k, p)) != after.get((k, p))
    }
    changes: list[str] = []
    totals = None
    for key in [*before, *(k for k in after if k not in before)]:
        kind, path = key
        shown = _path(path)
        was, now = before.get(key), after.get(key)
        if was == now:
            continue
        outer = kind == "module" and (path in removed or path in added)
        if not outer and (
            (now is None and _inside(path, removed)) or (was is None and _inside(path, added))
        ):
            continue  # said with its module
        if kind == "module" and path in renamed:
            changes.append(f"module {shown} renamed to {_path(renamed[path])}: {was}")
        elif kind == "module" and path in renamed.values():
            continue
        elif kind == "state_dict":
            if path in tensors_changed:
                continue  # said with the parameter or buffer
            state = "added to" if was is None else "removed from"
            changes.append(f"{shown} {state} the state_dict")
        elif kind == "totals":
            totals = f"totals: {was} -> {now}"
        elif kind == "tied":
            if was is None:
                changes.append(f"{shown} now tied to {now}")
            elif now is None:
                changes.append(f"{shown} no longer tied to {was}")
            else:
                changes.append(f"{shown} tied to {was} -> tied to {now}")
        elif was is None:
            changes.append(f"new {kind} {shown}: {now}")
        elif now is None:
            changes.append(f"{kind} {shown} removed (was {was})")
        else:
            changes.append(f"{shown}: {was} -> {now}")
    common = set(old_keys) & set(new_keys)
    if [k for k in old_keys if k in common] != [k for k in new_keys if k in common]:
        changes.append("the state_dict keys are in another order")
    if totals is not None:
        changes.append(totals)
    return _folded(changes)


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root + ".") for root in roots)


def _outermost(paths: list[str]) -> list[str]:
    return [p for p in paths if not any(p.startswith(q + ".") for q in paths if q != p)]


# A removed and a new module of the same class are a rename when their paths are this alike
# (difflib's ratio): `blocks.0.norm` and `blocks.0.final` score 0.67, `embed` and `head` 0.22.
RENAME_RATIO = 0.6


def _renamed(
    removed: list[str],
    added: list[str],
    before: dict[tuple[str, str], str],
    after: dict[tuple[str, str], str],
) -> dict[str, str]:
    pairs = []
    for old in removed:
        for new in added:
            if before[("module", old)] != after[("module", new)]:
                continue
            ratio = difflib.SequenceMatcher(None, old, new, autojunk=False).ratio()
            if ratio >= RENAME_RATIO:
                pairs.append((-ratio, old, new))
    chosen: dict[str, str] = {}
    for _, old, new in sorted(pairs):
        if old not in chosen and new not in chosen.values():
            chosen[old] = new
    return chosen


# A sibling index inside a path: `blocks.3.attn`, `0.weight`, `blocks.3:` -> 3 (never a
# shape's `[64, 64]`, a subscript's `[0]` or a count's `1,712`).
_INDEX = re.compile(r"(?<=\.)\d+(?=[.:\s]|$)|(?<![\w\[,.])\d+(?=[.:])")


def _folded(lines: list[str]) -> list[str]:
    """Lines equal but for the sibling index in one place (or in places that always hold the
    same index, as in `blocks.0.norm renamed to blocks.0.final`) as one line with those indices
    as ranges: `blocks.0-2.norm`, `0-3299.0.weight`."""
    numbers: dict[int, list[str]] = {}
    groups: dict[str, list[int]] = {}
    for n, line in enumerate(lines):
        found = _INDEX.findall(line)
        if found:
            numbers[n] = found
            groups.setdefault(_INDEX.sub("\0", line), []).append(n)
    replaced: dict[int, str | None] = {}
    for template, members in groups.items():
        if len(members) < 2:
            continue
        slots = range(len(numbers[members[0]]))
        # Slots that hold the same index on every line move together.
        tied = [
            next(t for t in slots if all(numbers[m][t] == numbers[m][s] for m in members))
            for s in slots
        ]
        best: tuple[int, dict[tuple[str, ...], list[int]]] | None = None
        for varying in sorted(set(tied)):
            buckets: dict[tuple[str, ...], list[int]] = {}
            for m in members:
                rest = tuple(numbers[m][s] for s in slots if tied[s] != varying)
                buckets.setdefault(rest, []).append(m)
            if best is None or len(buckets) < len(best[1]):
                best = (varying, buckets)
        assert best is not None
        varying, buckets = best
        if len(buckets) == len(members):
            continue
        pieces = template.split("\0")
        for bucket in buckets.values():
            values = _ranges(sorted({int(numbers[m][varying]) for m in bucket}))
            fill = [values if tied[s] == varying else numbers[bucket[0]][s] for s in slots]
            replaced[bucket[0]] = pieces[0] + "".join(
                f + p for f, p in zip(fill, pieces[1:], strict=True)
            )
            replaced.update(dict.fromkeys(bucket[1:]))
    out = []
    for n, line in enumerate(lines):
        folded = replaced.get(n, line)
        if folded is not None:
            out.append(folded)
    return out


def _ranges(numbers: list[int]) -> str:
    """`0-2`, `0,2,5`, `0-3,7`: sorted indices, runs joined."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
