"""A syrupy extension that stores a model's structure as text and diffs it in words."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode
from torch import nn

from modscope.core.model.structure import model_structure, structure_changes, structure_text

UPDATE_HINT = "the model's structure changed (`pytest --snapshot-update` accepts it):"


class ModelSnapshotExtension(SingleFileSnapshotExtension):
    """One `.txt` file per snapshot, `modscope.structure`'s text: one fact per line."""

    _write_mode = WriteMode.TEXT
    _file_extension = "txt"

    def serialize(self, data: Any, **_: Any) -> str:
        if isinstance(data, nn.Module):
            return structure_text(model_structure(data))
        if isinstance(data, dict) and "modules" in data:  # `modscope.structure(model)`
            return structure_text(data)
        raise TypeError(
            f"model_snapshot compares nn.Modules (or modscope.structure(...)), "
            f"not a {type(data).__name__}"
        )

    def diff_lines(self, serialized_data: Any, snapshot_data: Any) -> Iterator[str]:
        changes = structure_changes(str(snapshot_data or ""), str(serialized_data))
        if not changes or not snapshot_data:
            yield from super().diff_lines(serialized_data, snapshot_data)
            return
        yield UPDATE_HINT
        for change in changes:
            yield "  " + change
