"""Loading model scripts: contract names, model discovery, errors naming file and line."""

from __future__ import annotations

import pickle
import sys
import textwrap

import pytest
import torch

from modscope.cli import main
from modscope.core.contract.script_names import MISSING
from modscope.core.script.errors import ScriptError
from modscope.core.script.loader import MODULE_NAME, load_script
from modscope.core.session import Session

HEADER = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
    def forward(self, x):
        return self.lin(x)
"""


def line_of(path: str, text: str) -> int:
    """The 1-based line of the first line of `path` containing `text`."""
    with open(path) as f:
        return next(i for i, line in enumerate(f, 1) if text in line)


def script(tmp_path, body: str, name: str = "model_script.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(HEADER) + textwrap.dedent(body))
    return str(path)


def test_script_runs_as_modscope_module_and_its_classes_pickle(tmp_path):
    path = script(
        tmp_path,
        """
        model = Net()
        ran_main = False
        if __name__ == "__main__":
            ran_main = True
    """,
    )
    loaded = load_script(path)
    assert loaded.module.__name__ == MODULE_NAME
    assert loaded.module.ran_main is False
    assert sys.modules[MODULE_NAME] is loaded.module
    assert type(pickle.loads(pickle.dumps(loaded.model))).__name__ == "Net"
    assert loaded.inputs is MISSING and loaded.loss_fn is MISSING and loaded.optimizer is None


def test_the_one_stateful_top_level_module_is_found(tmp_path):
    path = script(
        tmp_path,
        """
        net = Net()
        criterion = nn.MSELoss()
        head = net.lin
    """,
    )
    loaded = load_script(path)
    assert loaded.model_name == "net"


def test_several_candidates_list_them_and_point_to_model_flag(tmp_path, capsys):
    path = script(
        tmp_path,
        """
        a = Net()
        b = Net()
    """,
    )
    with pytest.raises(ScriptError) as caught:
        load_script(path)
    assert "a, b" in caught.value.error.message
    assert "--model" in caught.value.error.hint
    assert load_script(path, model_name="b").model_name == "b"
    assert main(["tree", path]) == 2
    assert "--model" in capsys.readouterr().err


def test_prints_are_captured_not_written_to_stdout(tmp_path, capsys):
    path = script(
        tmp_path,
        """
        print("building x[/y] blocks[attn]")
        model = Net()
    """,
    )
    lines: list[str] = []
    load_script(path, sink=lines.append)
    assert lines == ["building x[/y] blocks[attn]"]
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("def broken(:\n    pass\n", 11, "SyntaxError"),
        ("model = Net()\nraise RuntimeError('boom at load')\n", 12, "boom at load"),
        ("x = torch.ones(3)\n", None, "no model"),
        ("model = 3\n", None, "not an nn.Module"),
        ("import sys\nsys.exit(3)\n", 12, "sys.exit"),
    ],
)
def test_bad_scripts_exit_2_with_file_and_line(tmp_path, capsys, body, line, words):
    path = script(tmp_path, body)
    code = main(["run", path, "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model_script.py" in err
    if line is not None:
        assert f"line {line}" in err
    assert words in err
    assert "Traceback (most recent" not in err


def test_traceback_flag_shows_the_traceback(tmp_path, capsys):
    path = script(tmp_path, "model = Net()\nraise RuntimeError('boom')\n")
    assert main(["run", path, "--traceback"]) == 2
    assert "Traceback (most recent" in capsys.readouterr().err


def test_error_mid_step_names_file_line_step_and_phase(tmp_path, capsys):
    path = script(
        tmp_path,
        """
        class Breaks(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.ones(1))
                self.calls = 0
            def forward(self, x):
                self.calls += 1
                if self.calls == 3:
                    raise ValueError("shape trouble on call 3")
                return (self.w * x).sum()
        model = Breaks()
        inputs = torch.ones(2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    """,
    )
    code = main(["run", path, "--steps", "5", "--json"])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert code == 2
    import json

    error = json.loads(lines[-1])
    assert error["event"] == "error" and error["step"] == 3 and error["phase"] == "forward"
    assert error["file"].endswith("model_script.py")
    assert error["line"] == line_of(path, "raise ValueError")
    assert len([line for line in lines if '"step"' in line and '"event": "step"' in line]) == 2
    assert "step 3, forward" in captured.err


def test_session_survives_an_error_and_goes_on(tmp_path):
    path = script(
        tmp_path,
        """
        flaky = {"fail": True}
        class Flaky(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.ones(1))
            def forward(self, x):
                if flaky["fail"]:
                    raise RuntimeError("flaky")
                return (self.w * x).sum()
        model = Flaky()
        inputs = torch.ones(1)
    """,
    )
    session = Session.load(path)
    failed = session.run_iteration()
    assert failed.error is not None and failed.record is None
    assert failed.error.line == line_of(path, 'raise RuntimeError("flaky")')
    assert not session.in_iteration and session.step == 0
    session.script.module.flaky["fail"] = False
    ok = session.run_iteration()
    assert ok.record is not None and ok.record.step == 1
    assert ok.record.grads["w"].values == (1.0,)


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ("torch.ones(2)", 2.0),
        ("(torch.ones(2),)", 2.0),
        ("{'x': torch.full((2,), 2.0)}", 4.0),
        ("lambda: torch.full((2,), 3.0)", 6.0),
        ("[torch.ones(2), torch.zeros(2)]", 2.0),
        ("torch.utils.data.DataLoader(torch.ones(4, 2), batch_size=2)", 4.0),
    ],
)
def test_inputs_forms(tmp_path, inputs, expected):
    path = script(
        tmp_path,
        f"""
        class Sum(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.ones(1))
            def forward(self, x):
                return (self.w * x).sum()
        model = Sum()
        inputs = {inputs}
    """,
    )
    session = Session.load(path)
    record = session.run_iteration().record
    assert record.output.values[0] == pytest.approx(expected)
    assert record.loss == pytest.approx(expected)  # a scalar output is the loss
    again = session.run_iteration().record
    assert again.step == 2  # iterables start again when exhausted


def test_loss_fn_with_batch_and_none(tmp_path):
    path = script(
        tmp_path,
        """
        model = Net()
        inputs = torch.ones(3, 2)
        def loss_fn(output, batch):
            return (output - batch.sum(dim=1, keepdim=True)).pow(2).mean()
    """,
    )
    session = Session.load(path)
    assert [p.value for p in session.phases()] == ["forward", "backward"]
    record = session.run_iteration().record
    assert record.grads["lin.weight"] is not None
    assert record.diff.changed == ()  # no optimizer: parameters do not change
    assert any("no optimizer" in n for n in session.notes())
    forward_only = script(
        tmp_path, "model = Net()\ninputs = torch.ones(3, 2)\nloss_fn = None\n", name="fwd.py"
    )
    session = Session.load(forward_only)
    assert [p.value for p in session.phases()] == ["forward"]
    record = session.run_iteration().record
    assert record.loss is None and all(g is None for g in record.grads.values())


def test_non_scalar_loss_is_a_located_error(tmp_path):
    path = script(
        tmp_path,
        """
        model = Net()
        inputs = torch.ones(3, 2)
        def loss_fn(output):
            return output
    """,
    )
    result = Session.load(path).run_iteration()
    assert result.error is not None
    assert "reduce it to a scalar" in result.error.message


def test_train_step_and_compute_loss(tmp_path):
    path = script(
        tmp_path,
        """
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        def train_step(model):
            optimizer.zero_grad()
            loss = model(torch.ones(1, 2)).pow(2).sum()
            loss.backward()
            optimizer.step()
            return loss
    """,
    )
    session = Session.load(path)
    assert [p.value for p in session.phases()] == ["train_step"]
    record = session.run_iteration().record
    assert record.output is not None and record.output.shape == (1, 1)
    assert record.diff.changed == ("lin.weight", "lin.bias")
    path = script(
        tmp_path,
        """
        model = Net()
        inputs = [(torch.ones(2, 2), torch.zeros(2, 1))]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        def compute_loss(model, batch):
            x, y = batch
            return ((model(x) - y) ** 2).mean()
    """,
        name="cl.py",
    )
    session = Session.load(path)
    assert [p.value for p in session.phases()] == ["forward", "backward", "optimizer"]
    with torch.no_grad():
        expected = (session.model(torch.ones(2, 2)) ** 2).mean().item()
    record = session.run_iteration().record
    assert record.output.shape == (2, 1)
    assert record.loss == pytest.approx(expected)
    assert set(record.diff.changed) == {"lin.weight", "lin.bias"}


def test_without_loss_fn_a_non_scalar_output_means_forward_only(tmp_path):
    path = script(
        tmp_path,
        """
        model = Net()
        inputs = torch.ones(3, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    """,
    )
    session = Session.load(path)
    result = session.run_iteration()
    assert result.phase.value == "forward" and result.record.step == 1
    assert result.record.loss is None and result.record.diff.changed == ()
    assert [p.value for p in session.phases()] == ["forward"]
    assert any("output is the loss when it is a scalar" in n for n in session.notes())
