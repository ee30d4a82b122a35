"""Holding Python's cyclic garbage collector off the model's objects: while a step record or an
inventory is built (`collector_paused`), and while a phase with hooks runs
(`collector_on_new_objects`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold the cyclic collector for the duration, then restore it as it was.

    A step record of a large model makes tens of thousands of small acyclic objects (floats,
    summaries); each few hundred of them start a collection, and the oldest generation's scans
    every object the model holds (hundreds of thousands on a large model), a large share of
    the record's time. Nothing the record makes is cyclic garbage, and the collector
    runs as usual afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def collector_on_new_objects() -> Iterator[None]:
    """Freeze every object that exists now (`gc.freeze`) for the duration, then unfreeze them.

    Hooks on every module leave objects (captures, drafts, tensor hooks) that live until the
    phase's events are resolved: tens of thousands of them make the cyclic collector run its
    full collections, each a scan of every object the model holds (hundreds of thousands on a
    large model), a large share of the hooks' added time. Frozen, those scans see only
    the objects made during the phase, and garbage the user's code makes is still collected
    as usual. Left alone when something else froze objects already (its freeze is not ours
    to undo).
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
