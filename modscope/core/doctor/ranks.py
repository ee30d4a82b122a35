"""Many ranks (torchrun): whether the ranks still hold the same parameters and buffers after each
iteration (two small collectives per iteration); where this process is in the job is
`core.process_rank`.

Each rank digests every parameter and buffer of the model it inspects (the user's model, inside
any DistributedDataParallel wrapper) into three 64-bit numbers computed on the tensor's device: a
checksum of its bits, positions included, and the float64 sum and sum of squares (for people to
read). Two all-gathers, each of one shape on every rank: first each rank's layout (a CRC of its
tensors' names, shapes and dtypes, and their count), then, when some ranks hold the same layout,
every rank's `[1 + n, 3]` int64 digests padded to the largest count. Each rank compares its
tensors with the ranks that hold its layout; tensors whose checksums differ are
`rank-divergence` findings, and ranks that hold different layouts (pipeline stages) one finding
that says so. No tensor is sent.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.parameter import is_lazy

from modscope.core.contract.findings import Finding
from modscope.core.doctor.rules.distributed import (
    RankGroup,
    RankValue,
    rank_divergence,
    rank_layout_divergence,
)
from modscope.core.model.walk import subtree_tensors

DIGEST_WIDTH = 3
"""Per tensor: the checksum, then the float64 sum and sum of squares as their int64 bits."""

CHUNK = 1 << 20
"""Tensors up to this many elements are digested together (one pass per device and dtype);
larger ones alone, this many elements at a time (bounded temporary memory)."""

# 0x9E3779B97F4A7C15 (2**64 / golden ratio) as a signed int64: position i weighs (i * K) | 1, an
# odd number, so every bit of every element counts and moving an element changes the checksum.
# int64 products and sums wrap around: the same bits give the same checksum in any order.
_K = -7046029254386353131

_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

# torch 2.13 renamed `all_gather_into_tensor` (the old name warns); older versions lack the new.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


# -- the digest -----------------------------------------------------------------------------


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """`t`'s elements as one real 1-D tensor, or None when its bits cannot be read (sparse,
    meta, quantized: those digest to zeros on every rank, so they are never reported)."""
    if t.layout != torch.strided or t.device.type == "meta" or t.is_quantized:
        return None
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t.resolve_conj())
    flat = t.resolve_neg().reshape(-1)
    return flat if flat.element_size() in _INT_OF_SIZE else None


def _bits(flat: torch.Tensor) -> torch.Tensor:
    """The elements' bit patterns as int64 (a float32 1.0 is 0x3F800000)."""
    return flat.contiguous().view(_INT_OF_SIZE[flat.element_size()]).to(torch.int64)


def _digest_together(flats: Sequence[torch.Tensor]) -> torch.Tensor:
    """`[len(flats), 3]` digests of tensors of one device and dtype, each of at most `CHUNK`
    elements, in one pass (segment sums rather than a few small ops per tensor)."""
    device = flats[0].device
    counts = torch.tensor([f.numel() for f in flats], device=device)
    joined = torch.cat(list(flats))
    segment = torch.repeat_interleave(torch.arange(len(flats), device=device), counts)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(joined.numel(), device=device) - starts[segment]
    weighted = _bits(joined) * torch.bitwise_or(position * _K, 1)
    checksum = torch.zeros(len(flats), dtype=torch.int64, device=device)
    checksum.index_add_(0, segment, weighted)
    values = joined.to(torch.float64)
    sums = torch.zeros(len(flats), dtype=torch.float64, device=device)
    squares = torch.zeros_like(sums)
    sums.index_add_(0, segment, values)
    squares.index_add_(0, segment, values * values)
    return torch.stack([checksum, sums.view(torch.int64), squares.view(torch.int64)], dim=1)


def _digest_alone(flat: torch.Tensor) -> torch.Tensor:
    """`[3]`: the digest of one large tensor, `CHUNK` elements at a time."""
    device = flat.device
    weights = torch.bitwise_or(torch.arange(CHUNK, device=device) * _K, 1)
    checksum = torch.zeros((), dtype=torch.int64, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    squares = torch.zeros_like(total)
    for start in range(0, flat.numel(), CHUNK):
        part = flat[start : start + CHUNK]
        checksum = checksum * _K + (_bits(part) * weights[: part.numel()]).sum()
        values = part.to(torch.float64)
        total = total + values.sum()
        squares = squares + (values * values).sum()
    return torch.stack([checksum, total.view(torch.int64), squares.view(torch.int64)])


def tensor_digests(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """`[len(tensors), 3]` int64 on `device`: per tensor its checksum (equal bits, positions
    included, give equal checksums; any other difference almost surely not), then the float64
    sum and sum of squares of its values as int64 bits. Computed on each tensor's own device,
    under no_grad, with no random numbers and no sync per tensor."""
    rows: list[torch.Tensor | None] = [None] * len(tensors)
    groups: dict[tuple[torch.device, torch.dtype], list[tuple[int, torch.Tensor]]] = {}
    with torch.no_grad():
        for i, t in enumerate(tensors):
            flat = _flat(t)
            if flat is None or flat.numel() == 0:
                rows[i] = torch.zeros(DIGEST_WIDTH, dtype=torch.int64, device=device)
            elif flat.numel() > CHUNK:
                rows[i] = _digest_alone(flat).to(device)
            else:
                groups.setdefault((flat.device, flat.dtype), []).append((i, flat))
        for members in groups.values():
            together = _digest_together([flat for _, flat in members]).to(device)
            for (i, _), row in zip(members, together, strict=True):
                rows[i] = row
    if not rows:
        return torch.zeros((0, DIGEST_WIDTH), dtype=torch.int64, device=device)
    return torch.stack(rows)  # type: ignore[arg-type]  # every row is filled by now


def _floats(bits: torch.Tensor) -> list[float]:
    return bits.contiguous().view(torch.float64).tolist()


# -- comparing the ranks --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Watched:
    path: str
    tensor: torch.Tensor
    kind: str
    """"parameter", "frozen parameter" or "buffer"."""

    def count(self) -> int:
        return self.tensor.numel() * (2 if self.tensor.is_complex() else 1)


def broadcast_buffer_paths(runner: nn.Module, model: nn.Module) -> frozenset[str]:
    """The buffers of `model` that DistributedDataParallel will overwrite with rank 0's copy at
    the start of the next forward (empty when `runner` is no DDP wrapper of `model`, or when it
    will not broadcast them)."""
    if not isinstance(runner, DistributedDataParallel) or runner.module is not model:
        return frozenset()
    # DDP's own test before a forward (`_pre_forward`): buffer sync is on and the last forward
    # ran with gradient sync (not under no_sync() or no_grad), and no post-forward buffer hook.
    will_sync = getattr(runner, "_check_sync_bufs_pre_fwd", None)
    try:
        syncs = bool(will_sync()) if callable(will_sync) else bool(runner.broadcast_buffers)
    except Exception:
        syncs = bool(getattr(runner, "broadcast_buffers", False))
    if not syncs:
        return frozenset()
    ignored = set(getattr(runner, "parameters_to_ignore", ()))
    return (
        frozenset(path for path, _, is_parameter in subtree_tensors(model) if not is_parameter)
        - ignored
    )


class RankCheck:
    """Compares every parameter and buffer across the ranks of a job after each iteration.

    Inactive (every call answers []) unless `torch.distributed` is initialised with more than
    one rank. Every rank must call `after_step` at the same points: it is a collective. Each
    tensor is reported once: a finding names the first tensor (in the model's order) that
    began to differ, with the ranks' digests, and lists the others that began at that step.
    """

    def __init__(self, model: nn.Module, runner: nn.Module) -> None:
        """`model`: what modscope inspects; `runner`: what the iterations call (the same
        module, or a DistributedDataParallel wrapper of it)."""
        self.model = model
        self.runner = runner
        self.active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.world_size = dist.get_world_size() if self.active else 1
        self.rank = dist.get_rank() if self.active else 0
        self._reported: set[str] = set()
        self._layouts_reported: set[tuple[tuple[int, ...], ...]] = set()

    def initial(self) -> list[Finding]:
        """The comparison at load (step 0): ranks that built or seeded their models apart."""
        return self.after_step(0)

    def after_step(self, step: int) -> list[Finding]:
        """The tensors that began to differ across ranks by the end of `step`."""
        if not self.active:
            return []
        watched = self._watched()
        device = self._device()
        # Every rank runs the same collectives with the same shapes, whatever model it holds:
        # first the layouts, then (only if some ranks can be compared, which every rank reads
        # from the same layouts) the digests padded to the largest count.
        layout = _layout_row(watched, device)
        layouts = self._gather(layout).cpu()
        rows = 1 + int(layouts[:, 1].max())
        if all(len(group) == 1 for group in _groups(layouts)):
            gathered = torch.zeros((self.world_size, rows, DIGEST_WIDTH), dtype=torch.int64)
            gathered[:, 0] = layouts
            return self.compare(step, gathered, watched)
        local = torch.zeros((rows, DIGEST_WIDTH), dtype=torch.int64, device=device)
        local[: 1 + len(watched)] = self.digest(device, watched)
        gathered = self._gather(local).view(self.world_size, rows, DIGEST_WIDTH).cpu()
        return self.compare(step, gathered, watched)

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        """`[world * rows, 3]`: every rank's `local` (`[rows, 3]`, the same shape on all), in
        rank order; the concatenated form, as gloo refuses a stacked `[world, rows, 3]`."""
        out = torch.empty(
            (self.world_size * local.shape[0], DIGEST_WIDTH), dtype=torch.int64, device=local.device
        )
        _all_gather(out, local)
        return out

    def digest(self, device: torch.device, watched: list[_Watched] | None = None) -> torch.Tensor:
        """This rank's `[1 + n, 3]` digest on `device`: the layout row (a CRC of the tensors'
        paths, shapes and dtypes, and their count), then each parameter and buffer's."""
        watched = self._watched() if watched is None else watched
        return torch.cat(
            [_layout_row(watched, device), tensor_digests([w.tensor for w in watched], device)]
        )

    def _watched(self) -> list[_Watched]:
        out = []
        for path, t, is_parameter in subtree_tensors(self.model):
            if is_lazy(t):
                continue
            kind = "buffer"
            if is_parameter:
                kind = "parameter" if t.requires_grad else "frozen parameter"
            out.append(_Watched(path, t, kind))
        return out

    def _device(self) -> torch.device:
        """Where the collective's tensor must be: CPU for gloo (and mpi), else the model's
        device (NCCL takes CUDA tensors only)."""
        backend = str(dist.get_backend())
        if backend in ("gloo", "mpi") or "cpu:" in backend:
            return torch.device("cpu")
        for _, t, _ in subtree_tensors(self.model):
            return t.device
        return torch.device("cpu")

    def compare(
        self, step: int, gathered: torch.Tensor, watched: list[_Watched] | None = None
    ) -> list[Finding]:
        """The findings from every rank's digests, `[world, rows, 3]` as `after_step` gathers
        them (row 0 the layout, then each rank's tensors in order, zeros past its count): ranks
        that hold different layouts (once per way of grouping the ranks), and the tensors new
        to differ among the ranks that hold this rank's layout."""
        watched = self._watched() if watched is None else watched
        layouts = gathered[:, 0, :]
        groups = _groups(layouts)
        found = []
        if len(groups) > 1 and groups not in self._layouts_reported:
            self._layouts_reported.add(groups)
            found.append(
                rank_layout_divergence(
                    step,
                    self.world_size,
                    [RankGroup(g, int(layouts[g[0], 1])) for g in groups],
                    wrapped=isinstance(self.runner, DistributedDataParallel),
                )
            )
        (mine,) = [g for g in groups if self.rank in g]
        if len(mine) > 1:
            found += self._compare_tensors(step, gathered[list(mine)], mine, watched)
        return found

    def _compare_tensors(
        self, step: int, gathered: torch.Tensor, ranks: tuple[int, ...], watched: list[_Watched]
    ) -> list[Finding]:
        """`gathered`: the digests of `ranks`, which hold this rank's layout (`watched`)."""
        gathered = gathered[:, : 1 + len(watched)]
        # Compared after the step, parameters and buffers alike, except the buffers DDP will
        # overwrite with rank 0's copy at the start of the next forward (broadcast_buffers=True):
        # BatchNorm's running statistics differ after every step by design (each rank's
        # forward updated them from its own batch, after DDP's broadcast), and no forward ever
        # reads those differing copies. Leaving them out now is comparing the buffers as the
        # next forward will see them, without waiting for it and without a collective inside the
        # user's forward; the parameters are compared as the step left them. Buffers DDP does
        # not broadcast (broadcast_buffers=False, ignored ones, an unwrapped model, or a last
        # forward under no_sync()) are compared: their difference stays.
        exempt = broadcast_buffer_paths(self.runner, self.model)
        checksums = gathered[:, 1:, 0]
        differing = (checksums != checksums[:1]).any(dim=0).nonzero().flatten().tolist()
        new = [
            i
            for i in differing
            if watched[i].path not in exempt and watched[i].path not in self._reported
        ]
        if not new:
            return []
        self._reported.update(watched[i].path for i in new)
        first = watched[new[0]]
        return [
            rank_divergence(
                first.path,
                kind=first.kind,
                step=step,
                values=_rank_values(gathered[:, 1 + new[0], :], first.count(), ranks),
                world_size=self.world_size,
                compared=ranks,
                others=[watched[i].path for i in new[1:]],
                wrapped=isinstance(self.runner, DistributedDataParallel),
            )
        ]


def _layout_row(watched: Sequence[_Watched], device: torch.device) -> torch.Tensor:
    """`[1, 3]`: a CRC of the tensors' paths, shapes and dtypes, and their count: ranks that hold
    different tensors cannot be compared index by index."""
    text = "\n".join(f"{w.path} {tuple(w.tensor.shape)} {w.tensor.dtype}" for w in watched)
    return torch.tensor(
        [[zlib.crc32(text.encode("utf-8", "surrogatepass")), len(watched), 0]],
        dtype=torch.int64,
        device=device,
    )


def _groups(layouts: torch.Tensor) -> tuple[tuple[int, ...], ...]:
    """The ranks grouped by equal layout rows (`[world, 3]`), each group in rank order, the
    groups by their first rank."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for rank, row in enumerate(layouts.tolist()):
        groups.setdefault(tuple(row), []).append(rank)
    return tuple(tuple(g) for g in groups.values())


def _rank_values(digests: torch.Tensor, count: int, ranks: Sequence[int]) -> list[RankValue]:
    """One tensor's digests on `ranks` (`[len(ranks), 3]`) as groups of ranks holding the same
    bits, the first rank's group first."""
    checksums = digests[:, 0].tolist()
    sums = _floats(digests[:, 1])
    squares = _floats(digests[:, 2])
    groups: dict[int, list[int]] = {}
    for i, checksum in enumerate(checksums):
        groups.setdefault(checksum, []).append(i)
    out = []
    for checksum, rows in groups.items():
        r = rows[0]
        mean = sums[r] / count if count else math.nan
        norm = math.sqrt(squares[r]) if squares[r] >= 0 else math.nan
        out.append(RankValue(tuple(ranks[i] for i in rows), mean, norm, checksum))
    return out
