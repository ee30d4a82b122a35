"""Recordings: the update stream round-trips through the file format exactly; a torn last line
is dropped; a newer format version is a clear error; reading needs no torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Mapping

import pytest

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.control.controller import SessionController, script_factory
from modscope.control.recording import (
    FORMAT_VERSION,
    META_FILE,
    UPDATES_FILE,
    RecordingError,
    RecordingWriter,
    read_recording,
    script_meta,
)
from modscope.control.recording_codec import decode, encode
from modscope.core.contract.hook_spec import HookSpec
from tests.helpers import POWLOG


def recorded_batches(script: str = POWLOG, steps: int = 3, hooks=()) -> list[list[up.Update]]:
    c = SessionController(script_factory(script), script=script, hook_specs=hooks)
    batches = [c.load()]
    batches += [c.handle(cmd.Step()) for _ in range(steps)]
    batches.append(c.handle(cmd.ListHooks("powModel")))
    c.close()
    return batches


def assert_same(a: object, b: object) -> None:
    """Equal values of the same types all the way down (a mapping may come back as a dict)."""
    if isinstance(b, Mapping):
        assert isinstance(a, Mapping) and list(a) == list(b)
        for key in b:
            assert_same(a[key], b[key])
    elif isinstance(b, tuple | list):
        assert isinstance(a, tuple) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif dataclasses.is_dataclass(b):
        assert type(a) is type(b)
        for f in dataclasses.fields(b):
            assert_same(getattr(a, f.name), getattr(b, f.name))
    else:
        assert type(a) is type(b) and repr(a) == repr(b)


def test_every_update_round_trips_exactly():
    batches = recorded_batches(hooks=["powModel:forward", "logModel:backward"])
    kinds = {type(u) for b in batches for u in b}
    assert {up.Loaded, up.PhaseDone, up.TensorsSummarized, up.HookEventsSeen} <= kinds
    for batch in batches:
        for u in batch:
            text = json.dumps(encode(u), allow_nan=False)  # strict JSON
            back = decode(json.loads(text))
            assert type(back) is type(u) and encode(back) == encode(u)
            assert_same(back, u)


def test_special_values_survive():
    for value in (float("nan"), float("inf"), -float("inf"), 1 + 2j, complex("nan+1j"), -0.0):
        back = decode(json.loads(json.dumps(encode(value), allow_nan=False)))
        assert repr(back) == repr(value)
    spec = HookSpec.parse("a.b:backward:scale=2")
    assert decode(encode(spec)) == spec
    assert decode(encode({1: "x", (2, 3): None})) == {1: "x", (2, 3): None}


def test_a_recording_reads_back_step_by_step(tmp_path):
    folder = tmp_path / "R"
    batches = recorded_batches(steps=10)
    with RecordingWriter(str(folder), script_meta(POWLOG)) as writer:
        for batch in batches:
            writer.write(batch)
    rec = read_recording(str(folder))
    assert not rec.torn and len(rec.batches) == len(batches)
    assert rec.meta["version"] == FORMAT_VERSION and len(rec.meta["sha256"]) == 64
    records = [u.record for u in rec.updates() if isinstance(u, up.PhaseDone) and u.record]
    assert [r.step for r in records] == list(range(1, 11))
    assert records[-1].state["powModel.powParam"].values[0] == pytest.approx(1.2430, abs=5e-5)
    assert records[-1].state["logModel.logParam"].values[0] == pytest.approx(1.9815, abs=5e-5)


def test_a_torn_last_line_is_dropped(tmp_path):
    folder = tmp_path / "R"
    with RecordingWriter(str(folder), script_meta(POWLOG)) as writer:
        for batch in recorded_batches(steps=4):
            writer.write(batch)
    path = folder / UPDATES_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the run was killed while writing the last line
    rec = read_recording(str(folder))
    assert rec.torn
    steps = [u.record.step for u in rec.updates() if isinstance(u, up.PhaseDone) and u.record]
    assert steps == [1, 2, 3, 4]  # the last line was the hook listing


def test_a_newer_format_is_a_clear_error(tmp_path):
    folder = tmp_path / "R"
    RecordingWriter(str(folder), {**script_meta(POWLOG), "version": FORMAT_VERSION + 1}).close()
    with pytest.raises(RecordingError, match="upgrade modscope"):
        read_recording(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordingError, match="not a modscope recording"):
        read_recording(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / META_FILE).write_text("{]")
    with pytest.raises(RecordingError, match="cannot be read"):
        read_recording(str(tmp_path / "bad"))


def test_reading_a_recording_imports_no_torch(tmp_path):
    folder = tmp_path / "R"
    with RecordingWriter(str(folder), script_meta(POWLOG)) as writer:
        for batch in recorded_batches(steps=2):
            writer.write(batch)
    code = (
        "import sys\nfrom modscope.control.recording import read_recording\n"
        f"rec = read_recording({str(folder)!r})\n"
        "print(len(rec.batches), any(m == 'torch' or m.startswith('torch.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["4", "False"]
