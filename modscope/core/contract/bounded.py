"""A history that keeps at most so many items, the limit moving with what they cost."""

from __future__ import annotations

from collections import deque
from typing import TypeVar

_T = TypeVar("_T")

HISTORY_LIMIT = 1000
"""The most step records a history keeps, the session's and the app's alike; a memory budget
may keep fewer (`memory_budget.history_limit`)."""


def append_bounded(history: deque[_T], item: _T, limit: int) -> deque[_T]:
    """`history` with `item` appended, holding at most `limit` (the oldest go first): the same
    deque, or a new one when the limit changed (`memory_budget.history_limit` moves it with
    the records' size). Torch-free: the app's history uses it too."""
    if limit != history.maxlen:
        history = deque(history, maxlen=limit)
    history.append(item)
    return history
