"""A tensor's previous value kept small: an exact digest of its bytes and a fixed sample.

When a copy of the whole `state_dict` does not fit the memory budget, the largest keys keep
this instead (`statediff`). The digest says exactly whether the key changed (any bit: a
`-0.0` that became `0.0` counts, as does a NaN's payload); the sample, the same positions every
step, gives the change's largest |delta| and relative change as estimates. The digest reads the
tensor in pieces of at most `PIECE_BYTES` (copied to the host piece by piece when it lives on
a device), so it needs no memory that grows with the tensor.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch

if TYPE_CHECKING:
    from typing_extensions import Buffer

SAMPLE_SIZE = 4096
"""Elements in a key's sample: its estimates' relative error is about 1/sqrt(SAMPLE_SIZE)
(1.6%) for a change spread over the tensor."""

PIECE_BYTES = 16 * 2**20
"""The digest reads a tensor in pieces of at most this many bytes."""

_SEED = 0x5EED
"""The sample's positions come from a private generator with this seed: the same positions
every step, and no random number is taken from the script's generators."""


@dataclass(frozen=True, eq=False)
class SampledState:
    """A digest of a tensor's bytes, and its values at `SAMPLE_SIZE` fixed positions."""

    shape: torch.Size
    dtype: torch.dtype
    digest: bytes
    positions: torch.Tensor
    values: torch.Tensor

    @staticmethod
    def handles(t: torch.Tensor) -> bool:
        """True for a tensor worth keeping this way: dense, with data, larger than a sample."""
        return t.layout == torch.strided and not t.is_meta and t.numel() > SAMPLE_SIZE

    @classmethod
    def of(cls, t: torch.Tensor) -> SampledState:
        """The digest and sample of `t`."""
        with torch.no_grad():
            positions = sample_positions(t.numel(), t.device)
            return cls(t.shape, t.dtype, digest(t), positions, sample(t, positions))


@functools.lru_cache(maxsize=64)
def sample_positions(numel: int, device: torch.device) -> torch.Tensor:
    """At most `SAMPLE_SIZE` distinct row-major positions in a tensor of `numel` elements,
    sorted; the same for every tensor of that size (cached: models repeat their shapes)."""
    generator = torch.Generator().manual_seed(_SEED)
    positions = torch.randint(numel, (SAMPLE_SIZE,), generator=generator).unique(sorted=True)
    return positions.to(device)


def sample(t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """A private copy of `t`'s values at row-major `positions`, whatever its strides."""
    index = torch.unravel_index(positions, t.shape)
    return t[index].clone()


def digest(t: torch.Tensor) -> bytes:
    """A BLAKE2b digest of `t`'s shape, dtype and bytes in row-major order, read piecewise."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(t.shape), str(t.dtype))).encode())
    t = t.resolve_conj().resolve_neg()
    row = max(t[0].numel() * t.element_size(), 1) if t.dim() else 1
    rows = max(PIECE_BYTES // row, 1)
    for piece in t.split(rows) if t.dim() else (t,):
        piece = piece.contiguous().reshape(-1)
        if piece.device.type != "cpu":
            piece = piece.cpu()
        # NumPy's stubs give an array `__buffer__` from Python 3.12 on only; every array is one.
        h.update(cast("Buffer", piece.view(torch.uint8).numpy()))
    return h.digest()
