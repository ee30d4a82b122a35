"""The options a trainer callback passes on to `modscope.watch()`, checked when it is made."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modscope.core.contract.break_spec import parse_conditions
from modscope.core.contract.hook_spec import HookSpec
from modscope.watching.handle import OnBreak, Watch


@dataclass(frozen=True)
class WatchOptions:
    """`modscope.watch()`'s keyword options (its docstring says what each does). The break
    and hook specs are parsed here, so that a bad one fails where the callback is made, with
    `--break`'s own message, rather than once the trainer has set everything up."""

    breaks: Sequence[str] = ()
    record: str | os.PathLike[str] | None = None
    layers: bool = False
    hooks: Sequence[str] = ()
    on_break: OnBreak = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "breaks", tuple(self.breaks))
        object.__setattr__(self, "hooks", tuple(self.hooks))
        parse_conditions(tuple(self.breaks))
        for text in self.hooks:
            HookSpec.parse(text)

    def open(
        self,
        model: Any,
        optimizer: Any,
        origin: tuple[str, int],
        *,
        close_on_break: bool = False,
    ) -> Watch:
        """A watch of `model` and `optimizer` with these options; `origin` is the `file:line`
        the recording and the messages name; `close_on_break` as `Watch` takes it."""
        return Watch(
            model,
            optimizer,
            breaks=self.breaks,
            record=self.record,
            layers=self.layers,
            hooks=self.hooks,
            on_break=self.on_break,
            overwrite=self.overwrite,
            origin=origin,
            close_on_break=close_on_break,
        )


def class_origin(obj: object) -> tuple[str, int] | None:
    """Where the class of `obj` is defined (its source file and first line), None when it has
    no Python source."""
    cls = type(obj)
    try:
        path = inspect.getsourcefile(cls)
        if path is None:
            return None
        return os.path.abspath(path), inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        return None
