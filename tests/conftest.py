"""Fixtures every test folder shares; the plain helpers are in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.tui.tui_helpers import AppMaker


@pytest.fixture
def make_app() -> Iterator[AppMaker]:
    """Builds apps on the test scripts; each app's session thread is stopped afterwards."""
    # Imported here so that a run of the headless tests alone never imports the app.
    from tests.tui.tui_helpers import AppMaker

    maker = AppMaker()
    yield maker
    for app in maker.apps:
        app.worker.stop()
        assert app.worker.join(10), "the session thread did not end"
