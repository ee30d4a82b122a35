"""No output path may destroy the user's files: `--save-state` and `--record` never replace the
script, a module it imported, each other or a folder of the user's; relative paths mean the
command line's working directory; a full disk is said in plain words and loses nothing already
written; one run records into a folder at a time."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modscope.cli import main
from modscope.control import recording
from modscope.control import updates as up
from modscope.control.recording import UPDATES_FILE, read_recording
from modscope.core.script import outputs
from modscope.core.script.outputs import LOCK_FILE, FolderLock
from tests.helpers import POWLOG, ROOT

SLOW = ROOT / "tests" / "reliability_scripts" / "slow.py"

SCRIPT = """\
import torch
from torch import nn
print("the script ran")
model = nn.Linear(2, 1)
inputs = torch.ones(2)
loss_fn = lambda out: out.square().sum()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""


def write(folder: Path, body: str = SCRIPT, name: str = "script.py") -> Path:
    path = folder / name
    path.write_text(body)
    return path


def steps_in(folder: Path) -> list[int]:
    """The steps a recording holds, as `replay` reads them."""
    found = read_recording(str(folder)).updates()
    return [u.record.step for u in found if isinstance(u, up.PhaseDone) and u.record is not None]


def refused(capsys, argv: list[str]) -> str:
    """Run `argv`, which must be refused before the script runs; its stderr."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "the script ran" not in captured.err
    return captured.err


# -- 1. an output never names an input, nor the other output -----------------------------------


def test_save_state_onto_the_script_or_a_link_to_it_is_refused_before_it_runs(tmp_path, capsys):
    script = write(tmp_path)
    before = script.read_bytes()
    err = refused(capsys, ["run", str(script), "--save-state", str(script)])
    assert "is the model script" in err and "--save-state" in err and "script.py" in err
    link = tmp_path / "link.py"
    link.symlink_to(script)
    err = refused(capsys, ["run", str(script), "--save-state", str(link)])
    assert "link.py" in err and str(script) in err and "is the model script" in err
    assert script.read_bytes() == before

    assert main(["run", str(script), "--json", "--save-state", str(link)]) == 2
    (line,) = capsys.readouterr().out.splitlines()
    event = json.loads(line)
    assert (event["event"], event["phase"], event["type"]) == ("error", "arguments", "UsageError")
    assert "is the model script" in event["message"]
    assert script.read_bytes() == before and link.is_symlink()


def test_save_state_onto_a_module_the_script_imported_is_refused_before_any_step(tmp_path, capsys):
    helper = tmp_path / "paths_helper_q7.py"
    helper.write_text("WIDTH = 2\n")
    script = write(tmp_path, "import paths_helper_q7\n" + SCRIPT)
    assert main(["run", str(script), "--json", "--save-state", str(helper)]) == 2
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert [e["event"] for e in events] == ["error"]  # no step ran
    assert "paths_helper_q7" in events[0]["message"] and "imported" in events[0]["message"]
    assert helper.read_text() == "WIDTH = 2\n"


def test_save_state_and_record_on_one_path_are_refused_before_the_run(tmp_path, capsys):
    script = write(tmp_path)
    target = tmp_path / "out"
    err = refused(
        capsys, ["run", str(script), "--save-state", str(target), "--record", str(target)]
    )
    assert "--save-state" in err and "--record" in err and "same" in err
    inside = target / "meta.json"
    err = refused(
        capsys, ["run", str(script), "--save-state", str(inside), "--record", str(target)]
    )
    assert "meta.json" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["script.py"]  # nothing created


def test_save_state_may_go_inside_a_new_record_folder(tmp_path, capsys):
    script = write(tmp_path)
    folder = tmp_path / "R"
    assert (
        main(["run", str(script), "--record", str(folder), "--save-state", f"{folder}/s.pt"]) == 0
    )
    assert list(torch.load(folder / "s.pt", weights_only=True)) == ["weight", "bias"]
    assert steps_in(folder) == [1]


def test_record_onto_the_script_names_both(tmp_path, capsys):
    script = write(tmp_path)
    err = refused(capsys, ["run", str(script), "--record", str(script)])
    assert "--record" in err and "is the model script" in err
    assert script.read_text() == SCRIPT


# -- 2. a folder that is not this script's recording is never replaced --------------------------


def test_record_into_a_folder_of_the_users_files_is_refused(tmp_path, capsys):
    script = write(tmp_path)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "meta.json").write_text('{"my": "own"}')
    err = refused(capsys, ["run", str(script), "--record", str(folder)])
    assert "not a modscope recording" in err and "mine" in err
    assert (folder / "meta.json").read_text() == '{"my": "own"}'
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json"]

    (folder / "meta.json").unlink()
    (folder / "notes.txt").write_text("keep me")
    err = refused(capsys, ["run", str(script), "--record", str(folder), "--overwrite"])
    assert "notes.txt" in err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_recording_again_into_the_same_folder_needs_overwrite(tmp_path, capsys):
    script = write(tmp_path)
    folder = tmp_path / "R"
    argv = ["run", str(script), "--record", str(folder), "--record-tensors", "8"]
    assert main([*argv, "--steps", "3"]) == 0
    kept = (folder / UPDATES_FILE).read_bytes()
    capsys.readouterr()
    err = refused(capsys, [*argv, "--steps", "1"])
    assert "already holds a recording" in err and "--overwrite" in err
    assert (folder / UPDATES_FILE).read_bytes() == kept and steps_in(folder) == [1, 2, 3]

    assert main([*argv, "--steps", "1", "--overwrite"]) == 0
    assert steps_in(folder) == [1]
    assert sorted(os.listdir(folder / "tensors")) == ["step-1.pt"]  # no step 2 or 3 left over


def test_overwrite_without_record_is_refused(tmp_path, capsys):
    script = write(tmp_path)
    err = refused(capsys, ["run", str(script), "--overwrite"])
    assert "--overwrite" in err and "--record DIR" in err


def test_a_recording_of_another_script_is_refused_even_with_overwrite(tmp_path, capsys):
    script = write(tmp_path)
    folder = tmp_path / "R"
    assert main(["run", POWLOG, "--record", str(folder)]) == 0
    capsys.readouterr()
    err = refused(capsys, ["run", str(script), "--record", str(folder), "--overwrite"])
    assert "powlog.py" in err and "another script" in err
    assert read_recording(str(folder)).meta["script"] == POWLOG


# -- 3. relative paths are the command line's ---------------------------------------------------

CHDIR = """\
import os
os.makedirs({elsewhere!r}, exist_ok=True)
os.chdir({elsewhere!r})
"""


def test_relative_outputs_land_where_the_command_ran_though_the_script_changes_directory(
    tmp_path, monkeypatch, capsys
):
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    script = write(tmp_path, CHDIR.format(elsewhere=str(elsewhere)) + SCRIPT)
    monkeypatch.chdir(here)
    argv = ["run", str(script), "--steps", "2", "--save-state", "s.pt", "--record", "R"]
    assert main(argv) == 0
    assert sorted(os.listdir(elsewhere)) == []
    assert list(torch.load(here / "s.pt", weights_only=True)) == ["weight", "bias"]
    assert steps_in(here / "R") == [1, 2]


def test_a_run_that_fails_to_load_leaves_no_recording_folder(tmp_path, capsys):
    script = write(tmp_path, "model = (\n")
    assert main(["run", str(script), "--record", str(tmp_path / "new" / "R")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["script.py"]


# -- 4. a full disk -----------------------------------------------------------------------------


class FillsUp:
    """A file that takes `room` more bytes, then fails as a full disk does (a partial write)."""

    def __init__(self, file, room: int) -> None:
        self._file = file
        self.room = room

    def write(self, data) -> int:
        data = bytes(data) if not isinstance(data, str) else data
        if len(data) > self.room:
            if self.room:
                self._file.write(data[: self.room])
                self._file.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def test_save_state_on_a_full_disk_says_so_and_leaves_the_old_file(tmp_path, monkeypatch, capsys):
    script = write(tmp_path)
    target = tmp_path / "state.pt"
    target.write_bytes(b"previous")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: FillsUp(real_fdopen(*a, **k), 100))
    assert main(["run", str(script), "--json", "--save-state", str(target)]) == 2
    captured = capsys.readouterr()
    error = json.loads(captured.out.splitlines()[-1])
    assert error["phase"] == "save" and "disk is full" in error["message"]
    assert str(target) in error["message"] and "needs about" in error["message"]
    assert "enforce fail" not in captured.err and "disk is full" in captured.err
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["script.py", "state.pt"]


def test_record_on_a_full_disk_stops_with_words_and_replays_to_the_last_whole_step(
    tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "R"
    real_open = open

    # Measure the size of the first three lines on a run that fits, then give the disk that much
    # and a few bytes more.
    assert main(["run", POWLOG, "--steps", "3", "--record", str(tmp_path / "sized")]) == 0
    sizes = [len(line) + 1 for line in (tmp_path / "sized" / UPDATES_FILE).read_text().split("\n")]
    room = sum(sizes[:3]) + 40
    capsys.readouterr()

    def limited(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return FillsUp(file, room) if str(path).endswith(UPDATES_FILE) else file

    monkeypatch.setattr(recording, "open", limited, raising=False)
    assert main(["run", POWLOG, "--steps", "5", "--json", "--record", str(folder)]) == 2
    captured = capsys.readouterr()
    lines_out = [json.loads(line) for line in captured.out.splitlines()]
    assert [e["step"] for e in lines_out if e["event"] == "step"] == [1, 2]
    assert lines_out[-1]["event"] == "error" and "disk is full" in lines_out[-1]["message"]
    assert "Traceback" not in captured.err and "disk is full" in captured.err
    monkeypatch.undo()
    replayed = read_recording(str(folder))
    assert not replayed.torn and steps_in(folder) == [1, 2]
    assert main(["replay", str(folder), "--json"]) == 0
    steps = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["step"] for e in steps if e["event"] == "step"] == [1, 2]


# -- 5. one writer per recording ----------------------------------------------------------------


def test_a_folder_another_run_records_into_is_refused_naming_its_pid(tmp_path, capsys):
    script = write(tmp_path)
    folder = tmp_path / "R"
    folder.mkdir()
    held = FolderLock.acquire(str(folder))
    try:
        err = refused(capsys, ["run", str(script), "--record", str(folder), "--overwrite"])
    finally:
        held.release()
    assert "another modscope run" in err and f"pid {os.getpid()}" in err
    assert main(["run", str(script), "--record", str(folder)]) == 0  # free again


def test_a_second_run_into_a_folder_being_recorded_is_refused_at_once(tmp_path, capsys):
    folder = tmp_path / "R"
    env = {**os.environ, "SLOW_DELAY": "0.3", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "modscope", "run", str(SLOW), "--steps", "60", "--json",
         "--record", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (folder / UPDATES_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        err = refused(capsys, ["run", str(SLOW), "--record", str(folder), "--overwrite"])
        # Refused while the first still records: it did not wait for the lock to come free.
        assert first.poll() is None
        assert f"another modscope run (pid {first.pid})" in err
    finally:
        first.kill()
        first.wait()


def test_the_lock_file_leaves_replay_alone(tmp_path, capsys):
    folder = tmp_path / "R"
    assert main(["run", POWLOG, "--steps", "2", "--record", str(folder)]) == 0
    assert (folder / LOCK_FILE).exists()
    capsys.readouterr()
    assert main(["replay", str(folder), "--json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["step"] for e in out if e["event"] == "step"] == [1, 2]
    assert outputs.lock_holder(str(folder)) is None


# -- the user's keys in --save-state ------------------------------------------------------------

DATA_PARALLEL = """\
import torch
from torch import nn
net = nn.Sequential(nn.Linear(2, 1))
model = nn.DataParallel(net)
inputs = torch.ones(3, 2)
loss_fn = lambda out: out.square().sum()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""

WRAPPED_APART = """\
import torch
from torch import nn
model = nn.Sequential(nn.Linear(2, 1))
runner = nn.DataParallel(model)
inputs = torch.ones(3, 2)
loss_fn = lambda out: out.square().sum()
"""

DDP_ONE_RANK = """\
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
model = DistributedDataParallel(nn.Sequential(nn.Linear(2, 1)))
inputs = torch.ones(3, 2)
loss_fn = lambda out: out.square().sum()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""


@pytest.mark.parametrize(
    ("body", "keys"),
    [
        (DATA_PARALLEL, ["module.0.weight", "module.0.bias"]),
        (WRAPPED_APART, ["0.weight", "0.bias"]),
    ],
)
def test_save_state_keeps_the_keys_of_the_scripts_own_model(tmp_path, capsys, body, keys):
    script = write(tmp_path, body)
    assert main(["run", str(script), "--save-state", str(tmp_path / "s.pt")]) == 0
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert list(state) == keys
    namespace: dict = {}
    exec(body, namespace)
    namespace["model"].load_state_dict(state)  # loads where the plain loop's file loads


def test_save_state_under_torchrun_keeps_ddps_keys(tmp_path, monkeypatch, capsys):
    import torch.distributed as dist

    if dist.is_initialized():  # pragma: no cover - another test module left one
        pytest.skip("a process group is already initialised in this process")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    script = write(tmp_path, DDP_ONE_RANK)
    assert main(["run", str(script), "--save-state", str(tmp_path / "s.pt")]) == 0
    assert not dist.is_initialized()
    assert list(torch.load(tmp_path / "s.pt", weights_only=True)) == [
        "module.0.weight",
        "module.0.bias",
    ]
