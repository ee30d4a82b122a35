"""The memory budget: past it, the diff keeps digests and samples, and a model whose parameters
and gradients fill three quarters of the memory a process may use runs under `modscope run`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from modscope.core.contract.sizes import SizeError, parse_size
from modscope.core.contract.steps import StateDiff, StepRecord
from modscope.core.contract.tensors import TensorSummary
from modscope.core.memory_budget import history_limit
from modscope.core.session import Session, SessionOptions
from modscope.core.stats.sampled import SAMPLE_SIZE, digest
from modscope.core.stats.statediff import StateTracker


def test_budget_sizes_and_shares_parse() -> None:
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("2G") == 2 * 2**30
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("1073741824") == 2**30
    assert parse_size("25%") == 0.25
    for bad in ("3X", "", "0%", "150%", "-1G"):
        with pytest.raises(SizeError):
            parse_size(bad)


def _state(value: float, n: int = 10_000) -> dict[str, torch.Tensor]:
    return {"big": torch.full((100, n // 100), value), "small": torch.full((4,), value)}


def test_over_budget_a_key_is_diffed_by_digest_and_sample() -> None:
    tracker = StateTracker(budget=1024)  # room for `small` (16 bytes), not `big` (40 kB)
    tracker.reset(_state(1.0))
    assert tracker.sampled_keys == ("big",)
    diff = tracker.diff(_state(1.5))
    assert diff.changed == ("big", "small")
    assert diff.sampled == ("big",)
    # A uniform change: every sampled element moved by 0.5 from 1.0, so the estimates are exact.
    assert diff.max_abs_delta["big"] == 0.5
    assert diff.rel_change["big"] == pytest.approx(0.5, rel=1e-7)
    assert diff.rel_change["small"] == pytest.approx(0.5, rel=1e-7)


def test_the_digest_sees_a_change_the_sample_misses() -> None:
    tracker = StateTracker(budget=0)
    before = {"w": torch.zeros(SAMPLE_SIZE * 50)}
    tracker.reset(before)
    after = before["w"].clone()
    # One element, by the smallest step a float32 can take: no sample is sure to see it.
    position = int(torch.arange(after.numel())[~_sampled_mask(after.numel())][0])
    after[position] = torch.nextafter(torch.tensor(0.0), torch.tensor(1.0))
    diff = tracker.diff({"w": after})
    assert diff.changed == ("w",) and diff.sampled == ("w",)
    assert diff.max_abs_delta["w"] == 0.0  # the sample saw nothing: an estimate, flagged so
    assert tracker.diff({"w": after}).changed == ()


def _sampled_mask(numel: int) -> torch.Tensor:
    from modscope.core.stats.sampled import sample_positions

    mask = torch.zeros(numel, dtype=torch.bool)
    mask[sample_positions(numel, torch.device("cpu"))] = True
    return mask


def test_without_a_budget_every_key_is_copied_and_exact() -> None:
    tracker = StateTracker()
    tracker.reset(_state(1.0))
    diff = tracker.diff(_state(2.0))
    assert diff.sampled == () and tracker.sampled_keys == ()
    assert diff.max_abs_delta == {"big": 1.0, "small": 1.0}
    assert diff.to_json().get("sampled") is None


def test_sampling_takes_no_random_numbers_and_a_digest_is_of_the_bytes() -> None:
    rng = torch.get_rng_state()
    tracker = StateTracker(budget=0)
    tracker.reset(_state(1.0))
    tracker.diff(_state(3.0))
    assert torch.equal(torch.get_rng_state(), rng)
    zero = torch.zeros(SAMPLE_SIZE + 1)
    assert digest(zero) == digest(zero.clone())
    assert digest(zero) != digest(-zero)  # -0.0: other bits, so a change
    transposed = torch.arange(12.0).reshape(3, 4).t()
    assert digest(transposed) == digest(transposed.contiguous())


def test_the_history_keeps_fewer_steps_when_records_are_large() -> None:
    summary = TensorSummary(shape=(1,), dtype="float32", device="cpu", numel=1)
    record = StepRecord(
        step=1,
        mode="train",
        loss=None,
        output=None,
        state={str(i): summary for i in range(999)},
        grads={},
        diff=StateDiff(),
    )
    assert history_limit(None, record, 1000) == 1000
    # 1,000 summaries of about 600 bytes: a quarter of a 40 MB budget holds 16 such records.
    assert history_limit(40_000_000, record, 1000) == 16
    assert history_limit(1, record, 1000) == 1
    # `run` without `--record` keeps no history (SessionOptions.history=0), whatever the budget.
    assert history_limit(None, record, 0) == history_limit(40_000_000, record, 0) == 0


def test_a_session_diffs_past_its_budget_and_says_which_keys(tmp_path: Path) -> None:
    script = tmp_path / "wide.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(200, 200), nn.Linear(200, 2))
            inputs = torch.randn(4, 200)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            loss_fn = lambda out: out.pow(2).mean()
            """
        )
    )
    session = Session.load(str(script), options=SessionOptions(memory_budget=20_000))
    record = session.run_iteration().record
    assert record is not None
    assert record.diff.sampled == ("0.weight",)  # 160 kB; the rest fits in 15 kB
    assert "0.weight" in record.diff.changed
    assert record.diff.to_json()["sampled"] == ["0.weight"]


def test_check_takes_the_budget_too(tmp_path: Path, monkeypatch, capsys) -> None:
    from modscope.cli import main

    script = tmp_path / "m.py"
    script.write_text(
        "import torch\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(200, 200)\n"
        "inputs = torch.randn(4, 200)\nloss_fn = lambda out: out.pow(2).mean()\n"
        "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    )
    budgets = []
    load = Session.load.__func__

    def spy(cls, *args, **kwargs):
        budgets.append(kwargs["options"].memory_budget)
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(Session, "load", classmethod(spy))
    assert main(["check", str(script), "--json", "--steps", "2"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["check", str(script), "--json", "--steps", "2", "--memory-budget", "20K"]) == 0
    assert json.loads(capsys.readouterr().out) == plain  # the same findings, the same steps
    assert budgets == [None, 20 * 1024]


def test_the_app_keeps_no_more_step_records_than_the_session(tmp_path: Path) -> None:
    """Under a budget the session keeps fewer records of a large model; the app's history (the
    same objects, in the same process) must not hold the ones the session let go."""
    from modscope.control import commands as cmd
    from modscope.control import updates as up
    from modscope.control.controller import SessionController, script_factory
    from modscope.tui.model_view import HISTORY_LIMIT, ModelView

    script = tmp_path / "m.py"
    script.write_text(
        "import torch\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(20, 20)\n"
        "inputs = torch.randn(4, 20)\nloss_fn = lambda out: out.pow(2).mean()\n"
        "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    )
    # 5 summaries a record (2 state, 2 grads, the output) at 600 bytes: 3,000 bytes each; a
    # quarter of 40,000 bytes holds 3 of them.
    controller = SessionController(
        script_factory(str(script), options=SessionOptions(rewind=True, memory_budget=40_000)),
        script=str(script),
    )
    view = ModelView(str(script))
    controller.load()
    for _ in range(6):
        for u in controller.handle(cmd.Step()):
            if isinstance(u, up.PhaseDone) and u.record is not None:
                assert u.kept == 3
                view.add_record(u.record, kept=u.kept)
    assert [r.step for r in view.history] == [4, 5, 6]
    assert [r.step for r in controller.session.history] == [4, 5, 6]
    # A rewind re-sends the history it kept, saying how much the session keeps.
    resent = [u for u in controller.handle(cmd.GoToStep(5)) if isinstance(u, up.PhaseDone)]
    assert resent and all(u.kept == 3 for u in resent)
    view.add_record(view.history[-1])  # an update that does not say (an older recording)
    assert view.history.maxlen == HISTORY_LIMIT
    controller.close()


BIG = """
import torch
from torch import nn

torch.manual_seed(0)
# 30.7 M parameters (123 MB); with their gradients 246 MB: 75% of the 330 MB the run may use, so
# that even one whole copy of the parameters (123 MB more) does not fit.
model = nn.Sequential(nn.Linear(3200, 3200), nn.Linear(3200, 3200), nn.Linear(3200, 3200))
inputs = torch.randn(2, 3200)
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)


def loss_fn(output):
    return output.pow(2).mean()
"""

LIMITED = """
import resource
import sys

import torch
from torch import nn

import modscope.cli
import modscope.report.run_command

# torch's lazy imports and thread pools first, as a process that has run a while has them.
m = nn.Linear(4, 4)
torch.optim.SGD(m.parameters(), lr=0.1)
m(torch.randn(2, 4)).sum().backward()

with open("/proc/self/status") as f:
    data = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmData:"))
# RLIMIT_DATA counts what the process allocates (heap, anonymous maps), not the address space
# torch reserves (RLIMIT_AS would), so the limit is what the model may really use.
limit = data + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
sys.exit(modscope.cli.main(sys.argv[2:]))
"""


def _limited_run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "big.py").write_text(BIG)
    (tmp_path / "limited.py").write_text(LIMITED)
    argv = ["run", str(tmp_path / "big.py"), "--steps", "2", "--json", *extra]
    return subprocess.run(
        [sys.executable, str(tmp_path / "limited.py"), str(330 * 10**6), *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_model_filling_three_quarters_of_the_memory_runs(tmp_path: Path) -> None:
    done = _limited_run(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [json.loads(line) for line in done.stdout.splitlines()]
    steps = [e for e in steps if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    for event in steps:
        assert {"1.weight", "2.weight"} <= set(event["diff"]["sampled"])
        assert "2.weight" in event["diff"]["changed"]


def test_without_the_budget_the_same_run_runs_out_of_memory(tmp_path: Path) -> None:
    """The limit is tight enough to matter: keeping a whole copy does not fit under it."""
    done = _limited_run(tmp_path, "--memory-budget", "100G")
    assert done.returncode == 2
    error = json.loads(done.stdout.splitlines()[-1])
    assert error["event"] == "error" and "can't allocate memory" in error["message"]


def test_a_bad_budget_is_an_argument_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from modscope.cli import main

    script = tmp_path / "m.py"
    script.write_text("import torch\nmodel = torch.nn.Linear(2, 2)\n")
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(script), "--json", "--memory-budget", "lots"])
    assert exit_.value.code == 2
    error = json.loads(capsys.readouterr().out)
    assert error["phase"] == "arguments"
    assert "--memory-budget: expected a size such as 512MiB, 2G or 25%" in error["message"]
