"""modscope in the user's tests against hostile inputs: checkpoints that are no state_dict or
carry odd keys, models whose own code raises or exits, names that are escape sequences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import modscope
from modscope.cli import main
from modscope.core.model.structure import structure_changes, structure_text
from modscope.testing import assert_healthy, assert_loads

HOOKED = """\
import torch
from torch import nn

class Hooked(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self._register_state_dict_hook(self.refuse)

    @staticmethod
    def refuse(module, state, prefix, local):
        raise RuntimeError("no state_dict today")

model = Hooked()
"""


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main(["compat", *argv, "--json"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1

    def refuse(token: str) -> None:
        raise ValueError(f"bare {token} in JSON")

    return code, json.loads(out, parse_constant=refuse)


@pytest.fixture
def linear_script(tmp_path: Path) -> Path:
    script = tmp_path / "linear.py"
    script.write_text("from torch import nn\nmodel = nn.Linear(2, 2)\n")
    return script


def test_a_directory_as_the_checkpoint_is_refused(tmp_path, linear_script, capsys):
    code, report = _json(capsys, str(linear_script), str(tmp_path))
    assert code == 2
    assert "is a directory" in report["error"]["message"]


def test_a_saved_tensor_or_a_dict_without_tensors_is_no_state_dict(tmp_path, linear_script, capsys):
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), tensor)
    code, report = _json(capsys, str(linear_script), str(tensor))
    assert code == 2
    assert report["error"]["message"].endswith(
        "holds a Tensor, not a state_dict; save model.state_dict()"
    )
    config = tmp_path / "config.pt"
    torch.save({"lr": 0.1, "epochs": 3}, config)
    code, report = _json(capsys, str(linear_script), str(config))
    assert code == 2
    assert "'lr', 'epochs'" in report["error"]["message"]


def test_escape_sequences_in_checkpoint_keys_stay_visible(tmp_path, linear_script, capsys):
    path = tmp_path / "odd.pt"
    torch.save(
        {"weight": torch.zeros(2, 2), "bias": torch.zeros(2), "\x1b[2J\nx": torch.ones(1)}, path
    )
    assert main(["compat", str(linear_script), str(path)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\\x1b[2J\\nx" in out
    _, report = _json(capsys, str(linear_script), str(path))
    assert report["unexpected"] == ["\x1b[2J\nx"]


def test_a_state_dict_hook_that_raises_is_the_scripts_error(tmp_path, capsys):
    script = tmp_path / "hooked.py"
    script.write_text(HOOKED)
    ckpt = tmp_path / "c.pt"
    torch.save(nn.Linear(2, 2).state_dict(), ckpt)
    code, report = _json(capsys, str(script), str(ckpt))
    assert code == 2
    assert report["error"]["message"] == "no state_dict today"
    assert report["error"]["file"].endswith("hooked.py")
    assert report["error"]["line"] == 12


def test_a_forward_that_exits_fails_the_assertion_and_does_not_end_pytest():
    class Exits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise SystemExit(3)

    with pytest.raises(AssertionError, match="SystemExit"):
        assert_healthy(Exits(), inputs=torch.zeros(1, 2))


def test_assert_loads_refuses_what_is_no_module():
    with pytest.raises(TypeError, match=r"not an nn\.Module"):
        assert_loads({"w": torch.zeros(1)}, {"w": torch.zeros(1)})


def test_the_structure_holds_whatever_the_device():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    on_meta = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).to("meta")
    assert modscope.structure(model) == modscope.structure(on_meta)


def test_a_snapshot_with_lines_it_never_writes_still_diffs():
    model = nn.Linear(2, 2)
    text = structure_text(modscope.structure(model))
    edited = 'garbage line\nmodule "unterminated\n' + text.replace("[2, 2]", "[2, 3]")
    assert structure_changes(edited, text) == ["weight: [2, 3] float32 -> [2, 2] float32"]
