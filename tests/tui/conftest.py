"""Fixtures for the app's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tui_helpers import AppMaker


@pytest.fixture
def make_app() -> Iterator[AppMaker]:
    maker = AppMaker()
    yield maker
    for app in maker.apps:
        app.worker.stop()
        assert app.worker.join(10), "the session thread did not end"
