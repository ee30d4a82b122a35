"""This process's place in a torchrun job, read from the environment.

Apart from `core.doctor.ranks` (the rank digests, which import the doctor's wording) so that every
headless command can ask where it runs without importing more than the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessRank:
    """This process's place in a job that a launcher (torchrun) started."""

    rank: int
    world_size: int


def launched_rank(environ: Mapping[str, str] | None = None) -> ProcessRank | None:
    """This process's rank when torchrun (or another launcher setting `RANK` and `WORLD_SIZE`)
    started it, else None. Read from the environment, so it is known before the script runs
    (the script calls `init_process_group` itself)."""
    env = os.environ if environ is None else environ
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    if world < 1 or not 0 <= rank < world:
        return None
    return ProcessRank(rank, world)


def rank_folder(folder: str, rank: int) -> str:
    """Where rank `rank` of a torchrun job records a run asked to record to `folder`."""
    return os.path.join(folder, f"rank{rank}")
