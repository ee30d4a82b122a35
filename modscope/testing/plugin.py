"""modscope's pytest plugin: the `model_snapshot` fixture (loaded by every pytest run where
modscope is installed, so it imports only pytest until the fixture is used)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def model_snapshot(request: pytest.FixtureRequest) -> Any:
    """A syrupy snapshot of a model's structure: `assert model_snapshot == MyModel()`.

    The first run (or `pytest --snapshot-update`) stores the structure as text in
    `__snapshots__/` beside the test; later runs fail with what changed, in words.
    """
    try:
        import syrupy  # noqa: F401
    except ImportError:
        pytest.fail(
            "modscope's model_snapshot fixture needs syrupy, the snapshot library: "
            "pip install syrupy",
            pytrace=False,
        )
    from modscope.testing.snapshot import ModelSnapshotExtension

    return request.getfixturevalue("snapshot").use_extension(ModelSnapshotExtension)
