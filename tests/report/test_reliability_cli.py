"""The headless commands stand up to what a script and a command line can throw at them.

User code cannot take them down (sys.exit(), KeyboardInterrupt and GeneratorExit at import or in
an iteration are located errors; a real Ctrl-C stops a run after what completed is printed);
every failure under `--json` is one strict error line (object); outputs are written safely and
loading a script writes nothing beside it.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from modscope.cli import main
from modscope.core.script.loader import load_script
from modscope.core.script.outputs import OutputError, atomic_write, check_writable
from tests.helpers import POWLOG, ROOT, strict_lines

SLOW = Path(__file__).resolve().parents[1] / "reliability_scripts" / "slow.py"

HEADER = """\
import torch
from torch import nn
"""

BREAKS_AT_3 = """\
class Breaks(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls = 0
    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise {exc}
        return (self.w * x).sum()
model = Breaks()
inputs = torch.ones(2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""


def write(tmp_path: Path, body: str, name: str = "script.py") -> str:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return str(path)


def line_of(path: str, text: str) -> int:
    with open(path) as f:
        return next(i for i, line in enumerate(f, 1) if text in line)


def modscope(*argv: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modscope", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        **kwargs,
    )


def step_rows(out: str) -> list[int]:
    """The step numbers of the streamed human rows (`   1  train   26.7463 ...`)."""
    return [int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+(?:train|eval)\s", out, re.M)]


# -- 1. user code cannot take the headless commands down ------------------------------------

LOAD_RAISES = [
    ("import sys\nsys.exit(3)\n", "sys.exit(3)", "SystemExit"),
    (
        "raise KeyboardInterrupt\n",
        "KeyboardInterrupt was raised by the script",
        "KeyboardInterrupt",
    ),
    ("raise GeneratorExit\n", "GeneratorExit", "GeneratorExit"),
]


@pytest.mark.parametrize(("body", "words", "exc_type"), LOAD_RAISES, ids=lambda v: v[:12])
def test_a_base_exception_at_import_is_a_load_error(tmp_path, capsys, body, words, exc_type):
    path = write(tmp_path, "model = nn.Linear(2, 1)\n" + body)
    line = len((HEADER + "model = nn.Linear(2, 1)\n").splitlines()) + body.count("\n")
    assert main(["run", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "script.py" in captured.err and f"line {line}" in captured.err
    assert words in captured.err and "while loading" in captured.err
    assert "Traceback (most recent" not in captured.err

    assert main(["run", path, "--traceback"]) == 2
    assert "Traceback (most recent" in capsys.readouterr().err

    assert main(["run", path, "--json"]) == 2
    [error] = strict_lines(capsys.readouterr().out)
    assert error["event"] == "error" and error["phase"] == "load" and error["step"] is None
    assert error["file"] == path and error["line"] == line and error["type"] == exc_type


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        ("KeyboardInterrupt()", "KeyboardInterrupt was raised by the code"),
        ("SystemExit(4)", "sys.exit(4)"),
        ("GeneratorExit()", "GeneratorExit"),
    ],
)
def test_a_base_exception_in_an_iteration_exits_2_after_the_steps_before(
    tmp_path, capsys, exc, words
):
    path = write(tmp_path, BREAKS_AT_3.format(exc=exc))
    assert main(["run", path, "--steps", "5", "--json"]) == 2
    captured = capsys.readouterr()
    events = strict_lines(captured.out)
    assert [e["event"] for e in events if e["event"] != "finding"] == ["step", "step", "error"]
    error = events[-1]
    assert error["step"] == 3 and error["phase"] == "forward"
    assert error["line"] == line_of(path, "raise ") and words in error["message"]

    assert main(["run", path, "--steps", "5"]) == 2
    captured = capsys.readouterr()
    assert step_rows(captured.out) == [1, 2]  # the completed steps, as rows
    assert "step 3, forward" in captured.err and words in captured.err
    assert "Traceback (most recent" not in captured.err


def test_sys_exit_in_the_checks_eval_probe_is_a_note_and_the_findings_stay(tmp_path, capsys):
    path = write(
        tmp_path,
        """
        import sys
        class ExitsInEval(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(2, 1)
            def forward(self, x):
                if not self.training:
                    sys.exit(5)
                return self.lin(x).sum()
        model = ExitsInEval()
        inputs = torch.ones(2)
        """,
    )
    assert main(["check", path, "--json"]) == 0
    captured = capsys.readouterr()
    [report] = strict_lines(captured.out)
    assert report["steps_run"] == 1 and "error" not in report
    assert "the eval-mode check could not run: SystemExit" in captured.err
    assert f":{line_of(path, 'sys.exit(5)')}" in captured.err


def _run_until(
    argv: list[str], marker: str
) -> tuple[subprocess.Popen[str], threading.Thread, list[str]]:
    """Start `modscope ARGV` and return once its stderr has shown `marker`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "modscope", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    err: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            if marker in line:
                seen.set()
        seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not seen.wait(120):
        proc.kill()
        pytest.fail("the run never got going")
    return proc, reader, err


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_ctrl_c_stops_a_run_with_130_after_printing_the_completed_steps(as_json):
    argv = ["run", str(SLOW), "--steps", "1000"] + (["--json"] if as_json else [])
    proc, reader, err = _run_until(argv, "forward 4")
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    out = proc.stdout.read()  # up to the end: the process has gone
    assert proc.wait(timeout=60) == 130
    assert time.monotonic() - sent < 10  # promptly
    reader.join(10)
    assert "modscope: interrupted" in "".join(err)
    if as_json:
        steps = [e["step"] for e in strict_lines(out) if e["event"] == "step"]
    else:
        steps = step_rows(out)
        assert "state_dict after step" in out
    assert steps[:3] == [1, 2, 3] and steps == list(range(1, len(steps) + 1))


def test_rows_stream_and_a_progress_bar_shows_on_a_terminal_stderr():
    master, slave = pty.openpty()
    env = {**os.environ, "SLOW_DELAY": "0.25", "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "modscope", "run", str(SLOW), "--steps", "4"],
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=ROOT,
        env=env,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=120)
    reader.join(10)
    os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "step" in terminal and "/4" in terminal and "loss" in terminal
    assert "steps/s" in terminal or "s/step" in terminal
    assert "\x1b[2K" in terminal  # the bar is erased at the end (transient)
    assert "forward 4" in terminal  # the script's prints still reach stderr
    text = out.decode()
    assert step_rows(text) == [1, 2, 3, 4] and "\x1b[" not in text  # stdout is no terminal


def test_no_progress_bar_when_stderr_is_not_a_terminal():
    result = modscope("run", POWLOG, "--steps", "3")
    assert result.returncode == 0
    assert "steps/s" not in result.stderr and "\x1b[" not in result.stderr
    assert step_rows(result.stdout) == [1, 2, 3]


# -- 2. every error path is an error event -------------------------------------------------


def test_every_failure_under_json_is_one_strict_error_line(tmp_path, capsys):
    powlog = POWLOG
    broken = write(tmp_path, "model = nn.Linear(2, 1)\nraise RuntimeError('boom')\n")
    cases = [
        (["run", broken], "load"),
        (["run", powlog, "--hook", "logModel:sideways"], "arguments"),
        (["run", powlog, "--hook", "logModle:forward"], "arguments"),
        (["run", powlog, "--hook", "logModel:forward:pause"], "arguments"),
        (["run", powlog, "--save-state", str(tmp_path / "nowhere" / "x.pt")], "arguments"),
        (["run", powlog, "--save-state", str(tmp_path)], "arguments"),
        (["run", powlog, "--model", "nothing"], "load"),
    ]
    for argv, phase in cases:
        assert main([*argv, "--json"]) == 2, argv
        captured = capsys.readouterr()
        [event] = strict_lines(captured.out)
        assert event["event"] == "error" and event["phase"] == phase, (argv, event)
        assert set(event) >= {"step", "file", "line", "message", "type"}
        assert event["message"] and "modscope: error:" in captured.err


@pytest.mark.parametrize("command", ["tree", "check"])
def test_tree_and_check_json_failures_are_one_object_with_an_error(tmp_path, capsys, command):
    broken = write(tmp_path, "model = nn.Linear(2, 1)\nraise RuntimeError('boom')\n")
    assert main([command, broken, "--json"]) == 2
    [report] = strict_lines(capsys.readouterr().out)
    error = report["error"]
    assert error["event"] == "error" and error["phase"] == "load" and error["message"] == "boom"
    assert error["line"] == line_of(broken, "raise RuntimeError")
    if command == "check":
        assert report["findings"] == [] and report["steps_run"] == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "x.py", "--steps", "-1"],
        ["run", "x.py", "--steps", "abc"],
        ["check", "x.py", "--steps", "-3"],
        ["tree", "x.py", "--depth", "-2"],
        ["run", "x.py", "--save-state", ""],
        ["run", "x.py", "--hooks", "some"],
        ["run"],
    ],
)
def test_argument_errors_say_what_is_wrong_and_emit_the_error_line(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "_positive" not in err and "invalid count value" not in err
    if "--steps" in argv or "--depth" in argv:
        assert "expected an integer 0 or more" in err
    if "--save-state" in argv:
        assert "expected a file path" in err

    with pytest.raises(SystemExit) as exited:
        main([*argv, "--json"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    [line] = strict_lines(captured.out)
    event = line.get("error", line)
    assert event["event"] == "error" and event["phase"] == "arguments"
    assert event["type"] == "UsageError" and event["message"] in captured.err
    if argv[0] == "check":
        assert line["findings"] == [] and line["steps_run"] == 0


def test_a_directory_or_a_device_as_the_script_says_what_it_is(capsys):
    assert main(["run", "examples/"]) == 2
    assert "examples/ is a directory, not a Python file" in capsys.readouterr().err
    assert main(["tree", os.devnull]) == 2
    assert f"{os.devnull} is a character device, not a Python file" in capsys.readouterr().err


def test_an_exhausted_inputs_iterator_says_it_ran_out_after_n_batches(tmp_path, capsys):
    path = write(
        tmp_path,
        """
        model = nn.Linear(2, 1)
        inputs = iter([torch.ones(2), torch.ones(2)])
        """,
    )
    assert main(["run", path, "--steps", "3", "--json"]) == 2
    events = strict_lines(capsys.readouterr().out)
    error = events[-1]
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    assert error["step"] == 3 and "ran out after 2 batches" in error["message"]
    assert "empty" not in error["message"]


def test_model_naming_nothing_lists_the_candidates(tmp_path, capsys):
    path = write(
        tmp_path,
        """
        encoder = nn.Linear(2, 3)
        decoder = nn.Linear(3, 2)
        criterion = nn.MSELoss()
        size = 3
        """,
    )
    assert main(["tree", path, "--model", "encodr"]) == 2
    err = capsys.readouterr().err
    assert "--model encodr" in err and "Did you mean --model encoder?" in err
    assert "encoder, decoder, criterion" in err
    assert main(["tree", path, "--model", "size"]) == 2
    err = capsys.readouterr().err
    assert "'size' is a int, not an nn.Module" in err and "decoder" in err


# -- 3. outputs are safe to write ----------------------------------------------------------


def test_save_state_is_checked_before_the_script_even_loads(tmp_path, capsys):
    path = write(tmp_path, "print('loading the script')\nmodel = nn.Linear(2, 1)\n")
    for target in (str(tmp_path / "missing" / "x.pt"), str(tmp_path)):
        assert main(["run", path, "--steps", "2", "--save-state", target]) == 2
        captured = capsys.readouterr()
        assert "loading the script" not in captured.err  # refused before the run
        assert captured.out == "" and "--save-state" in captured.err
    assert "is a directory" in captured.err
    assert list(tmp_path.iterdir()) == [tmp_path / "script.py"]


def test_save_state_keeps_the_mode_of_an_existing_file_and_uses_the_umask_for_a_new_one(
    tmp_path, capsys
):
    powlog = POWLOG
    old = tmp_path / "old.pt"
    old.write_bytes(b"previous")
    old.chmod(0o640)
    assert main(["run", powlog, "--save-state", str(old)]) == 0
    assert stat.S_IMODE(old.stat().st_mode) == 0o640
    assert list(torch.load(old, weights_only=True)) == ["powModel.powParam", "logModel.logParam"]

    previous = os.umask(0o027)
    try:
        assert main(["run", powlog, "--save-state", str(tmp_path / "new.pt")]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "new.pt").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.pt", "old.pt"]  # no temp left


def test_save_state_through_a_symlink_replaces_its_target(tmp_path, capsys):
    real = tmp_path / "real.pt"
    real.write_bytes(b"previous")
    link = tmp_path / "link.pt"
    link.symlink_to(real)
    assert main(["run", POWLOG, "--save-state", str(link)]) == 0
    assert link.is_symlink() and torch.load(real, weights_only=True)


def test_atomic_write_leaves_the_old_file_and_no_temporary_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def fails(f):
        f.write(b"half")
        raise RuntimeError("disk trouble")

    with pytest.raises(RuntimeError, match="disk trouble"):
        atomic_write(str(target), fails)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    atomic_write(str(target), lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("", "empty"),
        (os.devnull, "character device"),
        ("/proc/modscope-test/x.pt", "does not exist"),
    ],
)
def test_check_writable_refuses_with_words(path, words):
    with pytest.raises(OutputError, match=words):
        check_writable(path)


def test_loading_writes_no_bytecode_beside_the_script(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as without PYTHONDONTWRITEBYTECODE
    (tmp_path / "helper_mod_rel9.py").write_text("SIZE = 3\n")
    path = write(
        tmp_path,
        "from helper_mod_rel9 import SIZE\nmodel = nn.Linear(SIZE, 1)\n",
    )
    try:
        load_script(path)
        load_script(path)
    finally:
        sys.modules.pop("helper_mod_rel9", None)
    assert not (tmp_path / "__pycache__").exists()
    assert sys.dont_write_bytecode is False  # restored


def test_an_edit_in_the_same_second_with_the_same_size_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path = Path(write(tmp_path, "model = nn.Linear(2, 1)\nVERSION = 1\n"))
    before = path.stat()
    assert load_script(str(path)).module.VERSION == 1
    path.write_text(path.read_text().replace("VERSION = 1", "VERSION = 2"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime
    assert path.stat().st_size == before.st_size
    assert load_script(str(path)).module.VERSION == 2
