"""Findings about the ranks of a distributed job (torchrun): a tensor that differs across ranks,
and ranks that hold different models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from modscope.core.contract.findings import Finding, FindingKind, Severity
from modscope.core.contract.fmt import format_number
from modscope.core.doctor.rules.wording import LISTED, finding, listing


@dataclass(frozen=True)
class RankValue:
    """One tensor's digest on some ranks (those that hold the same bits): what a person reads."""

    ranks: tuple[int, ...]
    mean: float
    norm: float
    checksum: int
    """A 64-bit checksum of the tensor's bits, positions included: equal on ranks that agree."""

    def describe(self) -> str:
        """`ranks 0, 2: mean 0.0123, norm 0.4567, checksum 3f2a91c0`."""
        who = "rank" if len(self.ranks) == 1 else "ranks"
        return (
            f"{who} {_ranks(self.ranks)}: mean {format_number(self.mean)}, "
            f"norm {format_number(self.norm)}, checksum {self.checksum & 0xFFFFFFFF:08x}"
        )


@dataclass(frozen=True)
class RankGroup:
    """Ranks that hold the same parameters and buffers (names, shapes and dtypes), and how many."""

    ranks: tuple[int, ...]
    tensors: int


def _ranks(ranks: Sequence[int]) -> str:
    """`0, 2, 3`; past 8 ranks, `0, 1, 2, 3, 4, 5, 6, 7 (+56)`."""
    more = f" (+{len(ranks) - 8})" if len(ranks) > 8 else ""
    return ", ".join(str(r) for r in ranks[:8]) + more


_BUFFER_FIX = (
    "each rank updates this buffer from its own batch (BatchNorm's running statistics) and "
    "nothing makes the copies equal again: let DistributedDataParallel broadcast rank 0's "
    "buffers at every forward (`broadcast_buffers=True`, the default; `forward_sync_buffers=True` "
    "since torch 2.13) rather than `broadcast_buffers=False`, or compute the statistics over all "
    "ranks with `model = nn.SyncBatchNorm.convert_sync_batchnorm(model)` (GPU); a buffer updated "
    "outside the forward must change the same way on every rank (no rank-dependent branch)"
)
_PARAMETER_FIX = (
    "backward and the optimizer change a parameter the same way on every rank, since "
    "DistributedDataParallel averages the gradients; look for a parameter updated outside "
    "backward (an in-place change under torch.no_grad(), a manual update, an optimizer step on "
    "some ranks only), a rank-dependent branch (`if rank == 0:` around an update or a forward, "
    "a different number of steps), or a model not wrapped in DistributedDataParallel (its "
    "gradients are not averaged: `model = DistributedDataParallel(model)`)"
)
_FROZEN_FIX = (
    "DistributedDataParallel synchronises a frozen parameter (`requires_grad=False`) only when it "
    "is built; change it the same way on every rank (no rank-dependent branch), or send rank 0's "
    "copy to all after changing it: `torch.distributed.broadcast(p.data, src=0)`"
)
_UNWRAPPED = (
    "; the model is not wrapped in DistributedDataParallel, so its gradients are not averaged "
    "and its buffers not broadcast: `model = DistributedDataParallel(model)`"
)


def rank_divergence(
    path: str,
    *,
    kind: str,
    step: int,
    values: Sequence[RankValue],
    world_size: int,
    others: Sequence[str] = (),
    wrapped: bool = True,
    compared: Sequence[int] | None = None,
) -> Finding:
    """`path` (a parameter or buffer; `kind` is "buffer", "parameter" or "frozen parameter")
    holds different bits on some ranks after `step` (0: at load). `values` groups the ranks by
    what they hold; `others` are the further tensors that began to differ at the same step;
    `compared` are the ranks compared, when not all hold this model."""
    when = f"after step {step}" if step else "at load"
    across, first = f"the {world_size} ranks", 0
    if compared is not None and len(compared) < world_size:
        across = f"ranks {_ranks(compared)} (those of the {world_size} that hold this model)"
        first = compared[0]
    shown = "; ".join(v.describe() for v in values[:LISTED])
    if len(values) > LISTED:
        shown += f"; and {len(values) - LISTED} more groups of ranks"
    more = ""
    if others:
        more = f" Also differing {when}: {listing(others)}."
    message = (
        f"{kind} {path} differs across {across} {when} ({shown}): the ranks no "
        f"longer run the same model, and what rank {first} saves or reports is not what the others "
        f"compute.{more}"
    )
    if kind == "buffer":
        fix = _BUFFER_FIX
    elif kind == "frozen parameter":
        fix = _FROZEN_FIX
    else:
        fix = _PARAMETER_FIX
    if not wrapped:
        fix += _UNWRAPPED
    return finding(
        FindingKind.RANK_DIVERGENCE, path, message, fix, paths=(path, *others), step=step
    )


def rank_layout_divergence(
    step: int, world_size: int, groups: Sequence[RankGroup], *, wrapped: bool = False
) -> Finding:
    """The ranks hold different parameters and buffers (names, shapes or dtypes): `groups`
    holds each set of ranks that hold the same ones, rank 0's first. Pipeline stages do by
    design (information); a model wrapped in DistributedDataParallel must not (the kind's
    severity)."""
    when = f"after step {step}" if step else "at load"
    held = []
    counts_seen: set[int] = set()
    for group in groups:
        one = len(group.ranks) == 1
        who = f"{'rank' if one else 'ranks'} {_ranks(group.ranks)}"
        other = " other" if group.tensors in counts_seen else ""
        counts_seen.add(group.tensors)
        noun = "parameter or buffer" if group.tensors == 1 else "parameters and buffers"
        held.append(f"{who} {'holds' if one else 'hold'} {group.tensors}{other} {noun}")
    matched = [g for g in groups if len(g.ranks) > 1]
    if matched:
        where = "; ".join(f"ranks {_ranks(g.ranks)} with each other" for g in matched)
        compared = f"checksums are compared only where the structures match ({where})"
    else:
        compared = "no two ranks hold the same structure, so no checksums are compared"
    shown = "; ".join(held[:LISTED])
    if len(held) > LISTED:
        shown += f"; and {len(held) - LISTED} more groups of ranks"
    found = finding(
        FindingKind.RANK_DIVERGENCE,
        "",
        f"the {world_size} ranks hold different models {when}: {shown} (names, shapes or "
        f"dtypes differ); {compared}.",
        "nothing to fix where each rank holds its own part of the model by design (pipeline "
        "stages); otherwise build the same model on every rank: no rank-dependent branch in "
        "__init__ or in a forward that creates parameters or buffers; lazy modules must see "
        "the same shapes",
        step=step,
    )
    return found if wrapped else replace(found, severity=Severity.INFO)
