"""`modscope tree`: the module tree as a rich tree on a terminal, or one JSON object."""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from modscope.core.contract.exit_codes import ExitCode
from modscope.core.contract.fmt import format_bytes, format_count, format_shape, plural, printable
from modscope.core.contract.tensors import TensorInfo
from modscope.core.contract.tree import Inventory, ModuleInfo, Unregistered
from modscope.core.gc_pause import collector_paused
from modscope.core.model.inventory import build_inventory, fold_runs
from modscope.core.model.sibling_runs import FOLD_MIN
from modscope.report.common import load_session, write_json_line
from modscope.report.labels import (
    append_tensor_marks,
    module_label,
    shown_name,
    unregistered_label,
)
from modscope.report.ranks import on_rank_zero


def inventory_json(inv: Inventory) -> dict[str, Any]:
    """docs/design.md section 2's `tree --json` object."""

    def tensor(t: TensorInfo) -> dict[str, Any]:
        out: dict[str, Any] = {
            "shape": list(t.shape),
            "dtype": t.dtype,
            "device": t.device,
            "numel": t.numel,
            "requires_grad": t.requires_grad,
            "shared_with": list(t.shared_with),
        }
        if not t.is_parameter:
            out["persistent"] = t.persistent
        if t.has_grad_fn:
            out["has_grad_fn"] = True
        return out

    return {
        "modules": [
            {
                "path": m.path,
                "type": m.type_name,
                "training": m.training,
                "parameters": {p.name: tensor(p) for p in m.parameters},
                "buffers": {b.name: tensor(b) for b in m.buffers},
                "totals": m.totals.to_json(),
            }
            for m in inv.modules
        ],
        "unregistered": [
            {
                "path": u.path,
                "what": u.what,
                "type": u.type_name,
                "holds_state": u.holds_state,
                "mode_dependent": u.mode_dependent,
            }
            for u in inv.unregistered
        ],
    }


def tensor_label(t: TensorInfo) -> Text:
    """One line for a parameter or buffer: name, shape, dtype, count and its marks."""
    text = Text()
    text.append("◆ " if t.is_parameter else "◇ ", style="cyan" if t.is_parameter else "magenta")
    text.append(shown_name(t.name), style="bold")
    if t.note:
        text.append(f" {printable(t.note)}", style="yellow")
        return text
    text.append(f" {format_shape(t.shape)}")
    if t.dtype != "float32":
        text.append(f" {t.dtype}", style="yellow")
    if t.device != "cpu":
        text.append(f" {t.device}", style="yellow")
    text.append(f" n={format_count(t.numel)}", style="dim")
    append_tensor_marks(text, t, sep=" ")
    return text


def build_tree(
    inv: Inventory, *, depth: int | None = None, fold: bool = True, name: str = "model"
) -> Tree:
    """A rich Tree of modules, parameters, buffers and what failed to register."""
    by_path = {m.path: m for m in inv.modules}
    unregistered: dict[str, list[Unregistered]] = defaultdict(list)
    for u in inv.unregistered:
        unregistered[u.owner].append(u)

    def fill(node: Tree, m: ModuleInfo, level: int) -> None:
        for p in m.parameters:
            node.add(tensor_label(p))
        for b in m.buffers:
            node.add(tensor_label(b))
        for u in unregistered.get(m.path, ()):
            node.add(unregistered_label(u))
        if depth is not None and level >= depth:
            if m.children:
                node.add(Text(f"… {len(m.children)} children (--depth)", style="dim"))
            return
        children = [by_path[c] for c in m.children if c in by_path]
        for run in fold_runs(children, inv):
            if fold and run.count >= FOLD_MIN:
                label = Text()
                label.append(
                    f"{shown_name(run.first.name)}-{shown_name(run.last.name)}", style="bold"
                )
                label.append(f": {format_count(run.count)} × {shown_name(run.first.type_name)}")
                label.append(f"  {plural(run.first.totals.parameters, 'param')} each", style="dim")
                fill(node.add(label).add(module_label(run.first)), run.first, level + 1)
            else:
                for child in children[run.start : run.start + run.count]:
                    fill(node.add(module_label(child)), child, level + 1)

    root = inv.root
    tree = Tree(module_label(root, name=name))
    fill(tree, root, 0)
    return tree


def totals_line(inv: Inventory) -> Text:
    t = inv.root.totals
    text = Text(f"{format_count(t.parameters)} parameters ({format_count(t.trainable)} trainable)")
    text.append(f", {plural(t.buffers, 'buffer element')}, {format_bytes(t.bytes)}")
    losing = sum(1 for u in inv.unregistered if u.loses_state)
    if losing:
        text.append(f"; {losing} not registered", style="bold red")
    if len(inv.unregistered) > losing:
        text.append(
            f"; {len(inv.unregistered) - losing} stateless not registered (mode and hooks only)",
            style="yellow",
        )
    if inv.shared:
        text.append(f"; {len(inv.shared)} shared", style="green")
    return text


def tree_command(args: argparse.Namespace) -> int:
    """The tree of `args.script`; under torchrun rank 0 prints it, the others only an error."""
    return on_rank_zero(_tree_command, args)


def _tree_command(args: argparse.Namespace) -> int:
    session = load_session(args)
    if session is None:
        return ExitCode.FAILED
    # The inventory, the JSON and the rich tree are acyclic objects in the tens of thousands on
    # a large model; each few hundred start a collection, and one of the oldest generation scans
    # every object the model holds, a long pause that would fall in the rendering or the JSON
    # of many runs.
    with collector_paused():
        inv = build_inventory(session.model, extra_reprs=False)
        if args.json:
            write_json_line(inventory_json(inv))
            return ExitCode.OK
        console = Console(highlight=False)
        console.print(build_tree(inv, depth=args.depth, name=session.script.model_name))
        console.print(totals_line(inv))
    return ExitCode.OK
