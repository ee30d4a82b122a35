"""The module tree as frozen data (no torch here): its modules, what they hold, what never
registered."""

from __future__ import annotations

from dataclasses import dataclass

from modscope.core.contract.tensors import TensorInfo


@dataclass(frozen=True)
class Totals:
    """Counts over a module's whole subtree; a shared parameter counts once."""

    parameters: int = 0
    trainable: int = 0
    buffers: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "parameters": self.parameters,
            "trainable": self.trainable,
            "buffers": self.buffers,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class ModuleInfo:
    """One module of the tree: its own parameters and buffers, its children's paths."""

    path: str
    name: str
    type_name: str
    training: bool
    parameters: tuple[TensorInfo, ...]
    buffers: tuple[TensorInfo, ...]
    children: tuple[str, ...]
    totals: Totals
    depth: int
    extra_repr: str = ""


@dataclass(frozen=True)
class Unregistered:
    """Something held by a module that `nn.Module` did not register.

    `path` uses Python subscripts for containers (`blocks[0]`, `heads['q']`); `what` is
    "module", "parameter" or "tensor"; `attribute` is the module attribute it hangs from.
    `holds_state` is False for a module with no parameters and no buffers in its subtree: it
    loses nothing in `state_dict()`, `parameters()` or `.to()`, only `train()`/`eval()` and
    hooks attached through `named_modules()`; `mode_dependent` says whether that matters (a
    dropout or batch-norm class, or code that reads `self.training`, in its subtree).
    """

    path: str
    what: str
    type_name: str
    owner: str
    attribute: str
    container: str | None = None
    shape: tuple[int, ...] | None = None
    holds_state: bool = True
    mode_dependent: bool = False

    @property
    def loses_state(self) -> bool:
        """Whether leaving it unregistered loses parameters, buffers or tensors (not only the
        mode and hooks of a stateless module)."""
        return self.what != "module" or self.holds_state


@dataclass(frozen=True)
class Inventory:
    """The whole module tree at one moment, in `named_modules()` order (root first)."""

    modules: tuple[ModuleInfo, ...]
    unregistered: tuple[Unregistered, ...]
    shared: tuple[tuple[str, ...], ...] = ()

    def module(self, path: str) -> ModuleInfo | None:
        for m in self.modules:
            if m.path == path:
                return m
        return None

    @property
    def root(self) -> ModuleInfo:
        return self.modules[0]
