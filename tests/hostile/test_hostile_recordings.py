"""A malformed recording is a located error, never a traceback or a hang: `replay` of a folder
whose files are FIFOs, devices or folders, whose lines are not updates, nest without end or
leave out fields, exits 2 with "not a recording: FOLDER: what is wrong, where"; a missing
rank is named; a writer's lock file in the folder changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from modscope.cli import main
from modscope.control import commands as cmd
from modscope.control import recording
from modscope.control.controller import SessionController, script_factory
from modscope.control.recording import META_FILE, UPDATES_FILE, RecordingWriter, script_meta
from tests.helpers import POWLOG, json_lines


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A good recording of powlog: the load and three steps."""
    folder = tmp_path_factory.mktemp("good") / "R"
    c = SessionController(script_factory(POWLOG), script=POWLOG)
    with RecordingWriter(str(folder), script_meta(POWLOG)) as writer:
        writer.write(c.load())
        for _ in range(3):
            writer.write(c.handle(cmd.Step()))
    c.close()
    return folder


@pytest.fixture
def copy(recorded, tmp_path) -> Path:
    folder = tmp_path / "R"
    shutil.copytree(recorded, folder)
    return folder


def lines_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / UPDATES_FILE).read_text().splitlines()]


def write_lines(folder: Path, lines: list[object]) -> None:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    (folder / UPDATES_FILE).write_text(text)


def first_step_record(line: dict) -> dict:
    (done,) = [u for u in line["updates"] if u["$t"] == "PhaseDone"]
    return done["record"]


def drop_state_and_grads(folder: Path) -> None:
    lines = lines_of(folder)
    record = first_step_record(lines[1])
    del record["state"], record["grads"]
    write_lines(folder, lines)


def bad_float(folder: Path) -> None:
    lines = lines_of(folder)
    first_step_record(lines[1])["loss"] = {"$f": "a lot"}
    write_lines(folder, lines)


def bad_enum(folder: Path) -> None:
    lines = lines_of(folder)
    (done,) = [u for u in lines[2]["updates"] if u["$t"] == "PhaseDone"]
    done["phase"]["v"] = "sideways"
    write_lines(folder, lines)


def wrong_type(folder: Path) -> None:
    lines = lines_of(folder)
    first_step_record(lines[1])["step"] = "one"
    write_lines(folder, lines)


def line_two(text: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        write_lines(folder, [lines_of(folder)[0], text, *lines_of(folder)[2:]])

    return change


def updates_folder(folder: Path) -> None:
    (folder / UPDATES_FILE).unlink()
    (folder / UPDATES_FILE).mkdir()


def updates_device(folder: Path) -> None:
    (folder / UPDATES_FILE).unlink()
    (folder / UPDATES_FILE).symlink_to("/dev/zero")


MALFORMED = {
    "a list line": (line_two("[1, 2]"), 'updates.jsonl, line 2: not an {"updates": [...]} line'),
    "an empty object": (line_two("{}"), 'updates.jsonl, line 2: not an {"updates": [...]} line'),
    "100,000-deep nesting": (
        line_two("[" * 100_000 + "]" * 100_000),
        "updates.jsonl, line 2 is nested too deeply",
    ),
    "deep nesting inside an update": (
        line_two('{"updates": [' + "[" * 500 + "]" * 500 + "]}"),
        "updates.jsonl, line 2: values nested deeper than 64 levels",
    ),
    "a StepRecord with missing fields": (
        drop_state_and_grads,
        "updates.jsonl, line 2: a StepRecord without its fields 'state', 'grads'",
    ),
    "a bad float": (
        bad_float,
        "updates.jsonl, line 2: 'a lot' is not a non-finite float (nan, inf, -inf)",
    ),
    "a bad enum value": (bad_enum, "updates.jsonl, line 3: 'sideways' is not a Phase"),
    "a field of the wrong type": (
        wrong_type,
        "updates.jsonl, line 2: a StepRecord whose 'step' is 'one'",
    ),
    "an unknown record": (
        line_two('{"updates": [{"$t": "Nope"}]}'),
        "updates.jsonl, line 2: unknown record type 'Nope'",
    ),
    "a null update": (
        line_two('{"updates": [null]}'),
        "updates.jsonl, line 2: a null where an update belongs",
    ),
    "a line that is not JSON": (line_two("{]"), "updates.jsonl, line 2 is not JSON"),
    "updates.jsonl a folder": (updates_folder, "updates.jsonl is a folder, not a file"),
    "updates.jsonl a device": (updates_device, "updates.jsonl is a device, not a file"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_recording_is_exit_2_saying_what_and_where(case, copy, capsys):
    change, what = MALFORMED[case]
    change(copy)
    assert main(["replay", str(copy), "--json"]) == 2
    out, err = capsys.readouterr()
    message = f"not a recording: {copy}: {what}"
    (line,) = json_lines(out)
    assert line["event"] == "error" and line["message"] == message
    assert message in err and "Traceback" not in err


def test_a_line_longer_than_the_bound_is_refused_not_read_whole(copy, capsys, monkeypatch):
    longest = max(len(line) for line in (copy / UPDATES_FILE).read_bytes().splitlines())
    monkeypatch.setattr(recording, "MAX_LINE_BYTES", 2 * longest)
    with (copy / UPDATES_FILE).open("a") as f:
        f.write("x" * 3 * longest)  # no newline: a torn line would be dropped, a long one is not
    assert main(["replay", str(copy), "--json"]) == 2
    out, err = capsys.readouterr()
    message = f"not a recording: {copy}: updates.jsonl, line 5 is longer than "
    assert message in err
    (line,) = json_lines(out)
    assert line["file"] == str(copy / UPDATES_FILE) and line["line"] == 5


@pytest.mark.parametrize("name", [UPDATES_FILE, META_FILE])
def test_a_fifo_in_a_recording_is_refused_without_waiting(name, copy):
    (copy / name).unlink()
    os.mkfifo(copy / name)
    # A subprocess, so that a reader that waits for a writer fails the test instead of hanging.
    done = subprocess.run(
        [sys.executable, "-m", "modscope", "replay", str(copy), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"not a recording: {copy}: {name} is a FIFO (named pipe), not a file" in done.stderr


def test_a_torn_last_line_after_the_checks_still_replays_to_the_last_step(copy, capsys):
    data = (copy / UPDATES_FILE).read_bytes()
    (copy / UPDATES_FILE).write_bytes(data[: len(data) - 30])  # killed while writing step 3
    assert main(["replay", str(copy), "--json"]) == 0
    out, err = capsys.readouterr()
    assert [line["step"] for line in json_lines(out) if line["event"] == "step"] == [1, 2]
    assert "cut short" in err


@pytest.fixture
def ranks_0_and_2(recorded, tmp_path) -> Path:
    root = tmp_path / "R"
    shutil.copytree(recorded, root / "rank0")
    shutil.copytree(recorded, root / "rank2")
    # rank 2's recording ends a step earlier, so that its lines tell it apart
    lines = (root / "rank2" / UPDATES_FILE).read_text().splitlines(keepends=True)
    (root / "rank2" / UPDATES_FILE).write_text("".join(lines[:-1]))
    return root


def test_a_missing_rank_is_named_as_missing(ranks_0_and_2, capsys):
    assert main(["replay", str(ranks_0_and_2), "--json", "--rank", "1"]) == 2
    out, err = capsys.readouterr()
    message = f"{ranks_0_and_2} has no rank 1 (no rank1 folder): it holds ranks 0 and 2"
    assert json_lines(out)[0]["message"] == message and message in err
    assert main(["replay", str(ranks_0_and_2), "--json", "--rank", "2"]) == 0
    steps = [line["step"] for line in json_lines(capsys.readouterr().out) if "step" in line]
    assert max(steps) == 2  # rank 2's own recording, not another's


def test_a_lock_file_in_the_folder_is_ignored(recorded, copy, ranks_0_and_2, capsys):
    assert main(["replay", str(recorded), "--json"]) == 0
    expected = capsys.readouterr().out
    for folder in (copy, ranks_0_and_2, ranks_0_and_2 / "rank0"):
        (folder / ".modscope.lock").write_text(f"{os.getpid()}\n")
    assert main(["replay", str(copy), "--json"]) == 0
    assert capsys.readouterr().out == expected
    assert main(["replay", str(ranks_0_and_2), "--json"]) == 0
    assert capsys.readouterr().out == expected
