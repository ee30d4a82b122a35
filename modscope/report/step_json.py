"""A step record's JSON line, the same text as `dumps(record.to_json())`, written without a
dict per tensor summary.

`run --json` prints every key's summary every step: for a model of thousands of modules that
is tens of thousands of summaries a step, and building a dict for each, then encoding it, would
cost a large share of what the record itself costs. Here each summary is written straight into text,
field by field in `TensorSummary.to_json`'s order, with `json`'s own encoders for strings
and its number formats (`float.__repr__`, `int.__repr__`). A summary with fields of any other
kind (values, a count that is not an int) takes `to_json` and `json.dumps`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from json.encoder import encode_basestring  # the string encoder of ensure_ascii=False

from modscope.core.contract.steps import StepRecord
from modscope.core.contract.tensors import TensorSummary, finite_or_none
from modscope.core.gc_pause import collector_paused
from modscope.report.common import terminal_safe, write_json_pieces

_dumps = functools.partial(json.dumps, allow_nan=False, ensure_ascii=False)


def write_step(record: StepRecord) -> None:
    """Write a step record's JSON line on stdout (`run --json`, `replay --json`). A record of a
    large model is tens of thousands of summaries and floats: the collector is held (`gc_pause`),
    and the line is written in pieces, so that it is never whole in memory (several MB, and as
    many again for each copy a join, the newline and the encoding would make)."""
    with collector_paused():
        write_json_pieces(step_pieces(record))


def step_line(record: StepRecord) -> str:
    """`report.common.dumps(record.to_json())`, character for character."""
    return "".join(step_pieces(record))


PIECE_SUMMARIES = 512
"""Summaries joined into one piece of `step_pieces` (about 140 KB of text)."""


def step_pieces(record: StepRecord) -> Iterator[str]:
    """`step_line(record)` in pieces, each safe for a terminal (`terminal_safe`)."""
    head = _dumps(
        {
            "event": "step",
            "step": record.step,
            "mode": record.mode,
            "loss": finite_or_none(record.loss),
            "output": record.output.to_json() if record.output is not None else None,
        }
    )
    yield terminal_safe(f'{head[:-1]}, "state": {{')
    yield from _entries(list(record.state.items()))
    yield '}, "grads": {'
    yield from _entries(list(record.grads.items()))
    diff = _dumps(record.diff.to_json())
    skipped = ', "skipped": true' if record.skipped else ""
    yield terminal_safe(f'}}, "diff": {diff}{skipped}}}')


def _entries(items: list[tuple[str, TensorSummary | None]]) -> Iterator[str]:
    """`"key": summary` for each item, joined by ", ", `PIECE_SUMMARIES` a piece."""
    for start in range(0, len(items), PIECE_SUMMARIES):
        text = ", ".join(
            [
                f"{encode_basestring(k)}: {_summary(s) if s is not None else 'null'}"
                for k, s in items[start : start + PIECE_SUMMARIES]
            ]
        )
        yield terminal_safe(f", {text}" if start else text)


_finite = math.isfinite

_heads: dict[tuple[object, ...], str] = {}
"""Each shape, dtype, device and numel's text up to the statistics, written once."""


def _summary(s: TensorSummary) -> str:
    """`_dumps(s.to_json())`."""
    values = _values(s.values) if s.values is not None else ""
    if values is None or not (type(s.numel) is type(s.nan) is type(s.inf) is int):
        return _dumps(s.to_json())
    key = (s.shape, s.dtype, s.device, s.numel)
    head = _heads.get(key)
    if head is None:
        shape = ", ".join([_int(n) for n in s.shape])
        head = _heads[key] = (
            f'{{"shape": [{shape}], "dtype": {encode_basestring(s.dtype)}, '
            f'"device": {encode_basestring(s.device)}, "numel": {s.numel}, '
        )
    norm, lo, hi, mean, std = s.norm, s.min, s.max, s.mean, s.std
    if type(norm) is type(lo) is type(hi) is type(mean) is type(std) is float and _finite(
        norm + lo + hi + mean + std
    ):
        # Nearly every summary: five finite floats, written as `json` writes them.
        text = (
            f'{head}"norm": {norm!r}, "min": {lo!r}, "max": {hi!r}, "mean": {mean!r}, '
            f'"std": {std!r}, "nan": {s.nan}, "inf": {s.inf}'
        )
    else:
        text = (
            f'{head}"norm": {_number(norm)}, "min": {_number(lo)}, "max": {_number(hi)}, '
            f'"mean": {_number(mean)}, "std": {_number(std)}, "nan": {s.nan}, "inf": {s.inf}'
        )
    text += values
    if s.layout != "strided":
        text += f', "layout": {encode_basestring(s.layout)}'
    if s.grad_fn is not None:
        text += f', "grad_fn": {encode_basestring(s.grad_fn)}'
    if s.note is not None:
        text += f', "note": {encode_basestring(s.note)}'
    return text + "}"


def _values(values: tuple[object, ...]) -> str | None:
    """`, "values": [...]` as `to_json` then `json.dumps` write a small tensor's values (its
    floats as `_number` writes them, ints and bools as `json` does); None for any other kind
    of value (complex, a float subclass), which `_dumps` writes."""
    parts = []
    for v in values:
        kind = type(v)
        if kind is float:
            parts.append(_number(v))  # type: ignore[arg-type]
        elif kind is bool:
            parts.append("true" if v else "false")
        elif kind is int:
            parts.append(int.__repr__(v))
        else:
            return None
    return f', "values": [{", ".join(parts)}]'


def _int(n: int) -> str:
    return int.__repr__(n) if type(n) is int else _dumps(n)


def _number(x: float | None) -> str:
    """A statistic as `to_json` then `json.dumps` write it: non-finite values as null."""
    if x is None or not math.isfinite(x):
        return "null"
    return float.__repr__(x) if type(x) is float else _dumps(x)
