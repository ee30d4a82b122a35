"""`modscope check` and the doctor's findings in `modscope run`, through `modscope.cli.main`."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from modscope.cli import main
from tests.helpers import example, strict

# Each article example gets exactly the finding its lesson is about (kind, severity, paths).
LESSONS: dict[str, list[tuple[str, str, str]]] = {
    "containers.py": [("unregistered-module", "error", "modelList")],
    "param_dict.py": [("unregistered-parameter", "error", "powModel.powParamDict")],
    "plain_tensor.py": [
        ("unregistered-tensor", "warning", "powModel.powBuff"),
        ("unregistered-tensor", "warning", "logModel.logBuff"),
    ],
    "buffers.py": [("buffer-grad-history", "error", "logModel.logBuff")],
    "hooks_script_registered.py": [("legacy-backward-hook", "warning", "powModel")],
    "dropout.py": [("eval-nondeterministic", "error", "")],
    "shared.py": [("reused-module", "info", "powModel"), ("reused-module", "info", "logModel")],
    "tiny_lm.py": [("shared-parameter", "info", "embed.weight")],
}
CLEAN = [
    "containers_fixed.py",
    "param_dict_fixed.py",
    "buffers_fixed.py",
    "dropout_fixed.py",
    "powlog.py",
    "separate.py",
    "hooks.py",
    "cnn.py",
]


def check_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    status = main(["check", *argv, "--json"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return status, strict(out)


@pytest.mark.parametrize("name", list(LESSONS))
def test_each_lesson_finds_its_pitfall(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = check_json(capsys, example(name))
    found = [(f["kind"], f["severity"], f["path"]) for f in report["findings"]]
    assert found == LESSONS[name]
    assert status == (1 if any(s == "error" for _, s, _ in found) else 0)
    assert report["steps_run"] == 1
    for f in report["findings"]:
        assert f["message"] and f["fix"]
    if name == "tiny_lm.py":
        assert report["findings"][0]["paths"] == ["embed.weight", "head.weight"]


@pytest.mark.parametrize("name", CLEAN)
def test_fixed_examples_are_clean(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = check_json(capsys, example(name))
    assert status == 0
    assert [f for f in report["findings"] if f["severity"] != "info"] == []


def test_steps_zero_still_probes_eval_mode(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = check_json(capsys, example("dropout.py"), "--steps", "0")
    assert status == 1 and report["steps_run"] == 0
    assert [f["kind"] for f in report["findings"]] == ["eval-nondeterministic"]


def test_readable_report(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["check", example("containers.py")])
    out = capsys.readouterr().out
    assert status == 1
    assert "unregistered-module" in out and "modelList" in out
    assert "fix: self.modelList = nn.ModuleList([...])" in out
    assert out.rstrip().splitlines()[-1] == "1 error, 0 warnings, 0 info"


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_untrusted_names_are_not_markup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script(
        tmp_path,
        "brackets.py",
        """
        import torch
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(2, 2)
                setattr(self, "cache[/bold]", {"[red]x": torch.nn.Linear(2, 2)})
        model = M()
        """,
    )
    assert main(["check", script]) == 1
    out = capsys.readouterr().out
    assert "cache[/bold]" in out


NAN_SCRIPT = """
import torch

class Log(torch.nn.Module):
    def forward(self, x):
        return torch.log(x)

class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
        self.log = Log()
        self.spare = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.log(self.lin(x) - 100.0).mean()

model = M()
inputs = torch.ones(3, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""


def test_check_nan_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, report = check_json(capsys, _script(tmp_path, "nan.py", NAN_SCRIPT), "--steps", "2")
    assert status == 1
    assert [(f["kind"], f["path"], f.get("step")) for f in report["findings"]] == [
        ("nonfinite", "log", 1),
        ("unused-parameter", "spare", 1),
    ]
    assert report["steps_run"] == 2


def test_run_json_carries_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script(tmp_path, "nan.py", NAN_SCRIPT)
    status = main(["run", script, "--steps", "3", "--json"])
    lines = [strict(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0
    events = [(d["event"], d["step"], d.get("kind")) for d in lines]
    assert events == [
        ("step", 1, None),
        ("finding", 1, "nonfinite"),
        ("finding", 1, "unused-parameter"),
        ("step", 2, None),
        ("step", 3, None),
    ]
    finding = lines[1]
    assert finding["severity"] == "error" and "the loss is nan" in finding["message"]
    assert all(d["loss"] is None for d in lines if d["event"] == "step")


def test_run_static_findings_come_first(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", example("containers.py"), "--steps", "2", "--json"])
    lines = [strict(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0
    assert [(d["event"], d["step"]) for d in lines] == [("finding", 0), ("step", 1), ("step", 2)]
    assert lines[0]["kind"] == "unregistered-module" and lines[0]["path"] == "modelList"


def test_run_table_lists_findings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", example("buffers.py"), "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "buffer-grad-history" in out and "logModel.logBuff" in out
    assert re.search(r"1 error, 0 warnings, 0 info\s*$", out)


def test_run_with_modscope_legacy_hook_reports_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", example("hooks.py"), "--hook", "powModel:legacy-backward", "--json"]
    assert main(argv) == 0
    lines = [strict(line) for line in capsys.readouterr().out.splitlines()]
    assert not [d for d in lines if d["event"] == "finding"]


def test_load_failure_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script(tmp_path, "broken.py", "import torch\nmodel = torch.nn.Linear(2,\n")
    assert main(["check", script, "--json"]) == 2
    captured = capsys.readouterr()
    report = strict(captured.out)  # issue 9: the one object, with the load error
    assert report["findings"] == [] and report["error"]["phase"] == "load"
    assert "broken.py" in captured.err


def test_iteration_failure_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script(
        tmp_path,
        "fails.py",
        """
        import torch
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(2, 2)
                self.blocks = [torch.nn.Linear(2, 2)]
            def forward(self, x):
                raise ValueError("shapes do not fit")
        model = M()
        inputs = torch.ones(2, 2)
        """,
    )
    status, report = check_json(capsys, script)
    assert status == 2
    assert report["steps_run"] == 0
    assert [f["kind"] for f in report["findings"]] == ["unregistered-module"]
    assert report["error"]["line"] == 9 and report["error"]["step"] == 1
    assert main(["check", script]) == 2
    err = capsys.readouterr().err
    assert "fails.py, line 9" in err and "shapes do not fit" in err
    assert "Traceback" not in err


def test_no_inputs_runs_static_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script(
        tmp_path, "bare.py", "import torch\nmodel = torch.nn.Sequential(torch.nn.Linear(2, 2))\n"
    )
    status, report = check_json(capsys, script)
    assert (status, report) == (0, {"findings": [], "steps_run": 0})
