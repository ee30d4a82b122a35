"""The headless command line: every example under `modscope run`, flags, JSON shapes, tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from modscope import __version__
from modscope.cli import main
from tests.helpers import MODEL_SCRIPTS, ROOT, example, strict_lines


@pytest.mark.parametrize("path", [str(p) for p in MODEL_SCRIPTS], ids=os.path.basename)
def test_every_example_runs_under_modscope(path, capsys):
    assert main(["run", path, "--steps", "2", "--json"]) == 0
    events = strict_lines(capsys.readouterr().out)
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]


def test_save_state_writes_a_loadable_state_dict(tmp_path, capsys):
    target = tmp_path / "final.pt"
    assert main(["run", example("powlog.py"), "--steps", "10", "--save-state", str(target)]) == 0
    state = torch.load(target, weights_only=True)
    assert list(state) == ["powModel.powParam", "logModel.logParam"]
    assert state["powModel.powParam"].item() == pytest.approx(1.2430, abs=5e-5)
    assert not list(tmp_path.glob(".modscope-*"))  # the temporary file was renamed, not left


def test_eval_flag_runs_in_eval_mode_and_buffers_stay(capsys):
    assert main(["run", example("buffers.py"), "--steps", "3", "--eval", "--json"]) == 0
    rows = [e for e in strict_lines(capsys.readouterr().out) if e["event"] == "step"]
    assert {r["mode"] for r in rows} == {"eval"}
    assert all(r["diff"]["changed"] == [] for r in rows)
    assert rows[0]["state"]["powModel.powBuff"]["values"] == [0.0]


def test_tree_json_shape(capsys):
    assert main(["tree", example("tiny_lm.py"), "--json"]) == 0
    [tree] = strict_lines(capsys.readouterr().out)
    root = tree["modules"][0]
    assert root["path"] == "" and root["type"] == "TinyLM" and root["training"] is True
    assert root["buffers"]["causal_mask"]["persistent"] is False
    embed = next(m for m in tree["modules"] if m["path"] == "embed")
    assert embed["parameters"]["weight"]["shared_with"] == ["head.weight"]
    assert (
        root["totals"]["parameters"]
        == sum(p["numel"] for m in tree["modules"] for p in m["parameters"].values())
        - embed["parameters"]["weight"]["numel"]
    )  # a tied weight counts once
    assert tree["unregistered"] == []


def test_tree_shows_what_failed_to_register_and_honours_depth(capsys):
    assert main(["tree", example("containers.py")]) == 0
    out = capsys.readouterr().out
    assert "modelList[0]" in out and "not registered" in out
    assert main(["tree", example("tiny_lm.py"), "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "encoder" in out and "layers" not in out and "(--depth)" in out


def test_tree_marks_a_stateless_unregistered_module_by_what_it_loses(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    script = tmp_path / "stateless_tables.py"
    script.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Kernel(nn.Module):\n    def forward(self, x):\n        return x\n\n"
        "class Model(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.proj = nn.Linear(2, 2)\n"
        "        self.kernels = {'rotary': Kernel()}\n        self.drops = [nn.Dropout(0.5)]\n\n"
        "model = Model()\n"
    )
    assert main(["tree", str(script), "--json"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert tree["unregistered"] == [
        {
            "path": "kernels['rotary']",
            "what": "module",
            "type": "Kernel",
            "holds_state": False,
            "mode_dependent": False,
        },
        {
            "path": "drops[0]",
            "what": "module",
            "type": "Dropout",
            "holds_state": False,
            "mode_dependent": True,
        },
    ]
    assert main(["tree", str(script)]) == 0
    out = capsys.readouterr().out
    assert "○ kernels['rotary'] Kernel  not registered (module, in a plain dict; stateless)" in out
    assert "! drops[0] Dropout  not registered (module, in a plain list; stateless, eval()" in out
    assert "2 stateless not registered (mode and hooks only)" in out
    assert main(["check", str(script)]) == 0  # a warning and an info: nothing lost


def test_tree_builds_and_prints_with_the_collector_held_then_restores_it(monkeypatch, capsys):
    import gc

    from modscope.report import tree_command

    seen = []
    real_build_tree, real_inventory_json = tree_command.build_tree, tree_command.inventory_json

    def build_tree(*args, **kwargs):
        seen.append(("tree", gc.isenabled()))
        return real_build_tree(*args, **kwargs)

    def inventory_json(*args, **kwargs):
        seen.append(("json", gc.isenabled()))
        return real_inventory_json(*args, **kwargs)

    monkeypatch.setattr(tree_command, "build_tree", build_tree)
    monkeypatch.setattr(tree_command, "inventory_json", inventory_json)
    assert gc.isenabled()
    assert main(["tree", example("tiny_lm.py")]) == 0
    assert main(["tree", example("tiny_lm.py"), "--json"]) == 0
    assert seen == [("tree", False), ("json", False)]
    assert gc.isenabled()
    assert "TinyLM" in capsys.readouterr().out


def test_tree_imports_neither_the_doctor_nor_the_rank_digests():
    # `tree` asks only where it runs (core.process_rank): the doctor is a fifth of modscope's
    # code, and importing it is felt on a large model (every allocation can start a collection).
    code = (
        "import contextlib, io, sys\n"
        "from modscope.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['tree', 'examples/tiny_lm.py']) == 0\n"
        "print(sorted(m for m in sys.modules if m.startswith(('modscope.core.doctor', "
        "'modscope.core.doctor.ranks'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_run_tables_without_a_terminal(capsys):
    assert main(["run", example("powlog.py"), "--steps", "10", "--hook", "logModel:forward"]) == 0
    out = capsys.readouterr().out
    assert "Iterations" in out and "26.7463" in out
    assert "1.2430" in out and "1.9815" in out  # the final state table
    assert "Hooks fired" in out and "logModel" in out
    assert "\x1b[" not in out  # no progress bar or colour codes when stdout is not a terminal


LONG_KEYS = """
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential()
model.add_module("encoder_layer_with_a_long_name", nn.Sequential(nn.Linear(4, 4)))
inputs = torch.randn(2, 4)
loss_fn = lambda out: out.square().mean()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""


def test_the_state_table_keeps_long_keys_whole(tmp_path, capsys, monkeypatch):
    """The key is what a row is read by: the summaries wrap first; a key still too long folds
    onto the next line instead of losing its end to an ellipsis (`.weight` or `.bias`?)."""
    script = tmp_path / "long_keys.py"
    script.write_text(LONG_KEYS)
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["run", str(script)]) == 0
    out = capsys.readouterr().out
    assert "encoder_layer_with_a_long_name.0.weight │" in out  # 39 cells, on one line
    assert "encoder_layer_with_a_long_name.0.bias " in out
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["run", str(script)]) == 0
    table = capsys.readouterr().out.split("state_dict after step 1")[1]
    keys = "".join(line.split("│")[1].strip() for line in table.splitlines() if "│" in line)
    assert "…" not in table
    assert keys == "encoder_layer_with_a_long_name.0.weightencoder_layer_with_a_long_name.0.bias"


def test_bad_hook_specs_exit_2(capsys):
    assert main(["run", example("powlog.py"), "--hook", "logModel:sideways"]) == 2
    assert "expected MODULE:KIND" in capsys.readouterr().err
    assert main(["run", example("powlog.py"), "--hook", "logModle:forward"]) == 2
    assert "did you mean logModel" in capsys.readouterr().err
    assert main(["run", example("powlog.py"), "--hook", "logModel:forward:pause"]) == 2
    assert "app" in capsys.readouterr().err


def test_module_named_with_brackets_is_printed_literally(tmp_path, capsys):
    script = tmp_path / "brackets.py"
    script.write_text(
        "import torch\nfrom torch import nn\n"
        "model = nn.Sequential()\nmodel.add_module('blocks[attn]', nn.Linear(2, 2))\n"
        "model.add_module('x[/y]', nn.Linear(2, 1))\ninputs = torch.ones(1, 2)\n"
    )
    assert main(["tree", str(script)]) == 0
    out = capsys.readouterr().out
    assert "blocks[attn]" in out and "x[/y]" in out
    assert main(["run", str(script), "--hook", "blocks[attn]:forward", "--json"]) == 0
    events = strict_lines(capsys.readouterr().out)
    assert any(e["event"] == "hook" and e["module"] == "blocks[attn]" for e in events)


def test_nan_loss_is_not_an_error(tmp_path, capsys):
    script = tmp_path / "nan.py"
    script.write_text(
        "import torch\nfrom torch import nn\nmodel = nn.Linear(2, 1)\n"
        "inputs = torch.ones(1, 2)\n"
        "def loss_fn(out):\n    return out.sum() * float('nan')\n"
        "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    )
    assert main(["run", str(script), "--steps", "2", "--json"]) == 0
    rows = [e for e in strict_lines(capsys.readouterr().out) if e["event"] == "step"]
    assert rows[0]["loss"] is None  # NaN is written as null: strict JSON
    assert rows[1]["state"]["weight"]["nan"] == 2


def test_version_and_python_dash_m():
    result = subprocess.run(
        [sys.executable, "-m", "modscope", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == f"modscope {__version__}"
