"""`run --record DIR` and `replay DIR --json`: the recording replays the run's events exactly, a run
killed with `kill -9` replays up to its last complete step, full tensors load with
`weights_only=True`, and bad folders are refused before the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from modscope.cli import main
from modscope.control.recording import FORMAT_VERSION, META_FILE, UPDATES_FILE
from tests.helpers import POWLOG, ROOT, example, json_lines

HOOKS = example("hooks.py")
SLOW = str(ROOT / "tests" / "reliability_scripts" / "slow.py")


@pytest.mark.parametrize("script", [POWLOG, HOOKS])
def test_replay_json_is_what_run_json_printed(script, tmp_path, capsys):
    args = ["run", script, "--steps", "3", "--hooks", "all", "--json"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main([*args, "--record", str(tmp_path / "R")]) == 0
    recorded = capsys.readouterr().out
    assert recorded == plain  # recording changes nothing the run prints
    assert main(["replay", str(tmp_path / "R"), "--json"]) == 0
    assert capsys.readouterr().out == plain


def test_the_article_table_through_a_recording(tmp_path, capsys):
    assert main(["run", POWLOG, "--steps", "10", "--record", str(tmp_path / "R")]) == 0
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "R"), "--json"]) == 0
    steps = [e for e in json_lines(capsys.readouterr().out) if e["event"] == "step"]
    assert [s["step"] for s in steps] == list(range(1, 11))
    state = steps[-1]["state"]
    assert state["powModel.powParam"]["values"][0] == pytest.approx(1.2430, abs=5e-5)
    assert state["logModel.logParam"]["values"][0] == pytest.approx(1.9815, abs=5e-5)
    meta = json.loads((tmp_path / "R" / META_FILE).read_text())
    assert meta["version"] == FORMAT_VERSION and meta["script"] == POWLOG
    assert meta["versions"]["torch"] == torch.__version__ and len(meta["sha256"]) == 64


def test_a_run_killed_mid_way_replays_up_to_its_last_complete_step(tmp_path):
    folder = tmp_path / "R"
    env = {**os.environ, "SLOW_DELAY": "0.05"}
    command = [sys.executable, "-m", "modscope", "run", SLOW, "--steps", "1000"]
    proc = subprocess.Popen(
        [*command, "--record", str(folder)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        updates = folder / UPDATES_FILE
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if updates.exists() and updates.read_text().count('"record"') >= 4:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the run recorded nothing")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    done = subprocess.run(
        [sys.executable, "-m", "modscope", "replay", str(folder), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    steps = [e["step"] for e in json_lines(done.stdout) if e["event"] == "step"]
    assert len(steps) >= 3 and steps == list(range(1, len(steps) + 1))
    assert "forward 1" in done.stderr  # the script's prints were recorded too


def test_record_tensors_saves_small_parameters_whole(tmp_path, capsys):
    folder = tmp_path / "R"
    args = ["run", POWLOG, "--steps", "2", "--json", "--record", str(folder)]
    assert main([*args, "--record-tensors", "4"]) == 0
    steps = [e for e in json_lines(capsys.readouterr().out) if e["event"] == "step"]
    saved = torch.load(folder / "tensors" / "step-2.pt", weights_only=True)
    assert set(saved) == {"powModel.powParam", "logModel.logParam"}
    assert saved["powModel.powParam"].item() == pytest.approx(
        steps[-1]["state"]["powModel.powParam"]["values"][0]
    )


def test_a_bad_record_folder_is_refused_before_the_run(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", SLOW, "--steps", "50", "--json", "--record", str(blocker)]) == 2
    out, err = capsys.readouterr()
    (line,) = json_lines(out)
    assert line["event"] == "error" and line["phase"] == "arguments"
    assert "not a folder" in line["message"] and "forward 1" not in err  # nothing ran


def test_replay_of_a_newer_format_or_no_recording_says_so(tmp_path, capsys):
    folder = tmp_path / "R"
    assert main(["run", POWLOG, "--steps", "1", "--record", str(folder)]) == 0
    meta = json.loads((folder / META_FILE).read_text())
    (folder / META_FILE).write_text(json.dumps({**meta, "version": FORMAT_VERSION + 1}))
    capsys.readouterr()
    assert main(["replay", str(folder), "--json"]) == 2
    out, err = capsys.readouterr()
    assert "upgrade modscope" in json_lines(out)[0]["message"] and "upgrade modscope" in err
    assert main(["replay", str(tmp_path), "--json"]) == 2
    assert "not a modscope recording" in capsys.readouterr().err


def test_replay_json_picks_a_rank_of_a_multi_rank_recording(tmp_path, capsys):
    outputs = []
    for rank, steps in ((0, "2"), (1, "3")):
        args = ["run", POWLOG, "--steps", steps, "--json"]
        assert main([*args, "--record", str(tmp_path / "R" / f"rank{rank}")]) == 0
        outputs.append(capsys.readouterr().out)
    assert main(["replay", str(tmp_path / "R"), "--json"]) == 0
    assert capsys.readouterr().out == outputs[0]
    assert main(["replay", str(tmp_path / "R"), "--json", "--rank", "1"]) == 0
    assert capsys.readouterr().out == outputs[1]
    assert main(["replay", str(tmp_path / "R"), "--json", "--rank", "2"]) == 2
    assert "holds ranks 0 to 1, not 2" in capsys.readouterr().err


def test_a_break_is_recorded_and_replayed(tmp_path, capsys):
    nan_origin = example("nan_origin.py")
    args = ["run", nan_origin, "--steps", "5", "--break", "nan", "--json"]
    assert main([*args, "--record", str(tmp_path / "R")]) == 1
    recorded = capsys.readouterr().out
    assert json_lines(recorded)[-1]["event"] == "break"
    assert main(["replay", str(tmp_path / "R"), "--json"]) == 1
    assert capsys.readouterr().out == recorded
