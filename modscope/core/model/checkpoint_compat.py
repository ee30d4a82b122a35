"""Whether a saved state_dict loads into a model: missing, unexpected and mismatched keys, and
likely renames, read without running any code the checkpoint holds."""

from __future__ import annotations

import collections
import difflib
import itertools
import json
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from modscope.core.contract.fmt import printable

# A missing and an unexpected key of the same shape and dtype are paired as a rename when their
# names are at least this alike (difflib's ratio): `h.0.attn.c_proj.weight` and
# `h.0.attn.o_proj.weight` score 0.95, `encoder.weight` and `decoder.bias` 0.6.
RENAME_RATIO = 0.7

# Keys under which training loops commonly save the model's state_dict beside other things.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")

_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "C64": "complex64",
}


class CheckpointError(Exception):
    """A checkpoint that cannot be read safely or is no state_dict; the message says why."""


@dataclass(frozen=True)
class TensorSpec:
    """What load_state_dict compares of one entry: its shape (None: unknown, e.g. a lazy
    parameter or a value that is no tensor) and dtype."""

    shape: tuple[int, ...] | None
    dtype: str

    def __str__(self) -> str:
        shape = "?" if self.shape is None else "[" + ", ".join(map(str, self.shape)) + "]"
        return f"{shape} {self.dtype}"

    def to_json(self) -> dict[str, Any]:
        return {"shape": None if self.shape is None else list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class Mismatch:
    """A key in both whose shape or dtype differs."""

    key: str
    checkpoint: TensorSpec
    model: TensorSpec

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "checkpoint": self.checkpoint.to_json(),
            "model": self.model.to_json(),
        }


@dataclass(frozen=True)
class Compatibility:
    """How a checkpoint's keys meet a model's `state_dict` keys.

    `missing` and `unexpected` are what `load_state_dict(strict=True)` would report (renamed
    keys included); `renames` maps a checkpoint key to the model key it most likely became.
    Dtype differences alone do not stop a load (torch converts), so they leave `loads` True.
    """

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    shape_mismatches: tuple[Mismatch, ...]
    dtype_mismatches: tuple[Mismatch, ...]
    renames: dict[str, str] = field(default_factory=dict)
    specs: dict[str, TensorSpec] = field(default_factory=dict)
    """The spec of every key on either side (the model's where a key is in both)."""
    checkpoint_keys: int = 0
    model_keys: int = 0
    note: str | None = None
    """Where the state_dict was found in the file, when not at its top level."""

    @property
    def loads(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def lines(self) -> list[str]:
        """The comparison in plain words, one line each (what `assert_loads` fails with)."""
        renamed_new = set(self.renames.values())
        missing = [k for k in self.missing if k not in renamed_new]
        unexpected = [k for k in self.unexpected if k not in self.renames]
        out = [
            f"{self.checkpoint_keys} keys in the checkpoint, {self.model_keys} in the model's "
            "state_dict: " + ("it loads" if self.loads else "it does not load")
        ]
        if self.note:
            out.append(self.note)
        if missing:
            out.append(f"missing (in the model, not in the checkpoint): {len(missing)}")
            out += [f"  {printable(k)}  {self.specs[k]}" for k in missing]
        if unexpected:
            out.append(f"unexpected (in the checkpoint, not in the model): {len(unexpected)}")
            out += [f"  {printable(k)}  {self.specs[k]}" for k in unexpected]
        if self.shape_mismatches:
            out.append(f"shape mismatches: {len(self.shape_mismatches)}")
            out += [
                f"  {printable(m.key)}: checkpoint {m.checkpoint}, model {m.model}"
                for m in self.shape_mismatches
            ]
        if self.dtype_mismatches:
            out.append(
                f"dtype differences (load_state_dict converts them): {len(self.dtype_mismatches)}"
            )
            out += [
                f"  {printable(m.key)}: checkpoint {m.checkpoint}, model {m.model}"
                for m in self.dtype_mismatches
            ]
        if self.renames:
            rest = set(self.missing) - renamed_new or set(self.unexpected) - set(self.renames)
            after = "it does not load yet" if rest or self.shape_mismatches else "it loads"
            out.append(
                f"likely renames (same shape and dtype, close names): {len(self.renames)}; "
                f"with the checkpoint's keys renamed so, {after}:"
            )
            text = json.dumps(self.renames, indent=4, ensure_ascii=False)
            out += ["  " + line for line in f"mapping = {text}".splitlines()]
            out.append("  state_dict = {mapping.get(k, k): v for k, v in state_dict.items()}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "loads": self.loads,
            "checkpoint_keys": self.checkpoint_keys,
            "model_keys": self.model_keys,
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "shape_mismatches": [m.to_json() for m in self.shape_mismatches],
            "dtype_mismatches": [m.to_json() for m in self.dtype_mismatches],
            "renames": dict(self.renames),
            "note": self.note,
        }


def tensor_spec(value: Any) -> TensorSpec:
    """The shape and dtype of a state_dict value; a non-tensor is `?` of its type's name."""
    if not isinstance(value, torch.Tensor):
        return TensorSpec(None, type(value).__name__)
    dtype = str(value.dtype).removeprefix("torch.")
    if is_lazy(value):
        return TensorSpec(None, dtype)
    try:
        return TensorSpec(tuple(value.shape), dtype)
    except Exception:  # nested and exotic subclass tensors refuse sizes
        return TensorSpec(None, dtype)


def model_specs(model: nn.Module) -> dict[str, TensorSpec]:
    """The model's `state_dict` keys, in order, with their shape and dtype."""
    return {k: tensor_spec(v) for k, v in model.state_dict(keep_vars=True).items()}


def read_checkpoint(path: str) -> tuple[dict[str, TensorSpec], str | None]:
    """The keys, shapes and dtypes of the state_dict saved at `path`, and where in the file it
    was when not at the top level. `.safetensors` through `safetensors` (headers only); anything
    else through `torch.load(weights_only=True)`, which never runs code from the file.
    Raises `CheckpointError` saying why it cannot be read."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if path.endswith(".safetensors"):
        return _read_safetensors(path), None
    loaded = _torch_load(path)
    return _state_dict_in(loaded, path)


def _read_safetensors(path: str) -> dict[str, TensorSpec]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(
            f"{path} is a safetensors file; reading it needs safetensors: pip install safetensors"
        ) from None
    try:
        with safe_open(path, framework="pt") as f:
            specs = {}
            for key in f.keys():  # noqa: SIM118 - safe_open is not iterable
                piece = f.get_slice(key)
                raw = piece.get_dtype()
                specs[key] = TensorSpec(tuple(piece.get_shape()), _SAFETENSORS_DTYPES.get(raw, raw))
            return specs
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None


def _torch_load(path: str) -> Any:
    try:
        try:
            # mmap: a checkpoint larger than memory is compared without reading its tensors.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # the legacy format
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None:  # no object refused: the bytes are no pickle torch.load knows
            raise CheckpointError(
                f"{path} is not a checkpoint torch.load can read ({_refusal_reason(str(exc))})"
            ) from None
        raise CheckpointError(
            f"{path} cannot be read safely: torch.load(weights_only=True) refused "
            f"{found.group(1)}. It holds pickled objects other than tensors (a whole model, a "
            "class of your own, a function), which loading would run as code; modscope never "
            "does. Save model.state_dict() instead: torch.save(model.state_dict(), PATH)"
        ) from None
    except Exception as exc:
        # weights_only: nothing from the file ran, whatever the loader tripped on.
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        raise CheckpointError(
            f"{path} is not a checkpoint torch.load can read ({type(exc).__name__}: {first})"
        ) from None


def _refusal_reason(message: str) -> str:
    """The line of torch's weights-only refusal that says what it tripped on."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            if rest:
                return rest
    useful = [line for line in lines if not line.startswith(("Check the documentation", "Please"))]
    return useful[-1] if useful else "no reason given"


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(k, str) for k in value)
        and any(isinstance(v, torch.Tensor) for v in value.values())
    )


def _state_dict_in(loaded: Any, path: str) -> tuple[dict[str, TensorSpec], str | None]:
    if _is_state_dict(loaded):
        return {k: tensor_spec(v) for k, v in loaded.items()}, None
    if isinstance(loaded, Mapping):
        for key in NESTED_KEYS:
            if _is_state_dict(loaded.get(key)):
                inner = loaded[key]
                note = f"the state_dict is the checkpoint's {key!r} entry"
                return {k: tensor_spec(v) for k, v in inner.items()}, note
        keys = ", ".join(repr(k) for k in list(loaded)[:8])
        raise CheckpointError(
            f"{path} holds a dict with no tensors at its top level or under "
            f"{', '.join(map(repr, NESTED_KEYS))} (its keys: {keys or 'none'}); "
            "save model.state_dict()"
        )
    raise CheckpointError(
        f"{path} holds a {type(loaded).__name__}, not a state_dict; save model.state_dict()"
    )


def compare(
    checkpoint: Mapping[str, TensorSpec],
    model: Mapping[str, TensorSpec],
    *,
    note: str | None = None,
) -> Compatibility:
    """How the checkpoint's keys meet the model's, with likely renames; `note` says where in
    the file the state_dict was."""
    missing = [k for k in model if k not in checkpoint]
    unexpected = [k for k in checkpoint if k not in model]
    shapes: list[Mismatch] = []
    dtypes: list[Mismatch] = []
    for key, want in model.items():
        have = checkpoint.get(key)
        if have is None:
            continue
        if have.shape is not None and want.shape is not None and have.shape != want.shape:
            shapes.append(Mismatch(key, have, want))
        elif have.dtype != want.dtype:
            dtypes.append(Mismatch(key, have, want))
    specs = {**checkpoint, **model}
    return Compatibility(
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        shape_mismatches=tuple(shapes),
        dtype_mismatches=tuple(dtypes),
        renames=likely_renames(missing, unexpected, checkpoint, model),
        specs=specs,
        checkpoint_keys=len(checkpoint),
        model_keys=len(model),
        note=note,
    )


def likely_renames(
    missing: list[str],
    unexpected: list[str],
    checkpoint: Mapping[str, TensorSpec],
    model: Mapping[str, TensorSpec],
) -> dict[str, str]:
    """Checkpoint key -> model key for pairs of the same shape and dtype whose names are close,
    the closest pairs first, each key used once, never a guess between equally close ones; in
    the checkpoint's key order.

    A key that is the other with leading components added or dropped (`module.` of
    DataParallel, `model.` of a wrapper) pairs first, without comparing every pair.
    """
    chosen = _prefix_renames(missing, unexpected, checkpoint, model)
    taken_new = set(chosen.values())
    left_missing = [k for k in missing if k not in taken_new]
    left_unexpected = [k for k in unexpected if k not in chosen]
    pairs = []
    for new in left_missing:
        want = model[new]
        if want.shape is None:
            continue
        for old in left_unexpected:
            if checkpoint[old] != want:
                continue
            matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
            # The quick upper bounds first: most pairs of a large model are far apart.
            if matcher.real_quick_ratio() < RENAME_RATIO or matcher.quick_ratio() < RENAME_RATIO:
                continue
            ratio = matcher.ratio()
            if ratio >= RENAME_RATIO:
                pairs.append((-ratio, old, new))
    pairs.sort()
    # Closest first; pairs equally close that share a key are a guess between them: none.
    for _, group in itertools.groupby(pairs, key=lambda pair: pair[0]):
        open_pairs = [
            (old, new) for _, old, new in group if old not in chosen and new not in taken_new
        ]
        olds = collections.Counter(old for old, _ in open_pairs)
        news = collections.Counter(new for _, new in open_pairs)
        for old, new in open_pairs:
            if olds[old] == 1 and news[new] == 1:
                chosen[old] = new
                taken_new.add(new)
    return {old: chosen[old] for old in unexpected if old in chosen}


def _prefix_renames(
    missing: list[str],
    unexpected: list[str],
    checkpoint: Mapping[str, TensorSpec],
    model: Mapping[str, TensorSpec],
) -> dict[str, str]:
    """Pairs whose names differ only by leading dotted components: the checkpoint's key with
    some dropped is the model's (`module.fc.weight` -> `fc.weight`), or the only model key
    that ends with the whole checkpoint key (`fc.weight` -> `model.fc.weight`)."""
    wanted = set(missing)
    ends: dict[str, list[str]] = {}
    for key in missing:
        parts = key.split(".")
        for n in range(1, len(parts)):
            ends.setdefault(".".join(parts[n:]), []).append(key)
    chosen: dict[str, str] = {}
    taken: set[str] = set()

    def fits(old: str, new: str) -> bool:
        return new not in taken and model[new] == checkpoint[old] and model[new].shape is not None

    for old in unexpected:
        parts = old.split(".")
        shorter = (".".join(parts[n:]) for n in range(1, len(parts)))
        new = next((k for k in shorter if k in wanted and fits(old, k)), None)
        if new is None:
            longer = [k for k in ends.get(old, ()) if fits(old, k)]
            new = longer[0] if len(longer) == 1 else None
        if new is not None:
            chosen[old] = new
            taken.add(new)
    return chosen


def check_checkpoint(
    model: nn.Module, checkpoint: str | os.PathLike[str] | Mapping[str, Any]
) -> Compatibility:
    """`compare` for a model and a checkpoint path (read safely) or an in-memory state_dict."""
    if isinstance(checkpoint, Mapping):
        specs, note = {str(k): tensor_spec(v) for k, v in checkpoint.items()}, None
    else:
        specs, note = read_checkpoint(os.fspath(checkpoint))
    return compare(specs, model_specs(model), note=note)
