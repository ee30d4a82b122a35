"""`modscope run --layers`: one `layers` JSON line per step, a readable table, results unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from modscope.cli import main
from tests.helpers import example

HEALTH = example("layer_health.py")


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_run_layers_json_writes_one_layers_line_after_each_step_line(capsys):
    assert main(["run", HEALTH, "--steps", "2", "--layers", "--json"]) == 0
    events = _lines(capsys.readouterr().out)
    kinds = [e["event"] for e in events if e["event"] in ("step", "layers")]
    assert kinds == ["step", "layers", "step", "layers"]
    layers = [e for e in events if e["event"] == "layers"]
    assert [e["step"] for e in layers] == [1, 2]
    modules = {m["path"]: m for m in layers[-1]["modules"]}
    assert list(modules) == ["", "hidden", "act", "gate_in", "gate", "out"]
    act = modules["act"]
    assert set(act) == {
        "path",
        "type",
        "output",
        "dead",
        "saturated",
        "grad_norm",
        "update_ratio",
        "params",
    }
    assert set(act["output"]) == {"mean", "std", "absmax", "numel", "calls"}
    assert act["dead"] == 1.0 and act["output"]["absmax"] == 0.0
    assert act["output"]["numel"] == 32 * 16 and act["saturated"] is None
    assert modules["gate"]["saturated"] > 0.5
    # Nothing flows back through the dead ReLU: hidden gets zero gradients and never moves.
    assert modules["hidden"]["grad_norm"] == 0.0 and modules["hidden"]["update_ratio"] == 0.0
    assert modules["hidden"]["params"]["bias"] == {"grad_norm": 0.0, "update_ratio": 0.0}
    assert modules["out"]["params"]["bias"]["update_ratio"] > 0


def test_run_layers_readable_prints_the_table_after_the_rows(capsys):
    assert main(["run", HEALTH, "--steps", "2", "--layers"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("Layers after step 2") :]
    row = next(line for line in table.splitlines() if line.strip().startswith("act ReLU"))
    assert "100%" in row
    gate = next(line for line in table.splitlines() if line.strip().startswith("gate Sigmoid"))
    assert "85%" in gate


def test_run_without_layers_writes_no_layers_line(capsys):
    assert main(["run", HEALTH, "--steps", "1", "--json"]) == 0
    assert all(e["event"] != "layers" for e in _lines(capsys.readouterr().out))


@pytest.mark.parametrize("script", ["layer_health.py", "cnn.py"])
def test_run_layers_ends_bit_identical_to_a_run_without(script, tmp_path, capsys):
    plain, watched = tmp_path / "plain.pt", tmp_path / "watched.pt"
    path = example(script)
    assert main(["run", path, "--steps", "3", "--json", "--save-state", str(plain)]) == 0
    args = ["run", path, "--steps", "3", "--json", "--layers", "--save-state", str(watched)]
    assert main(args) == 0
    capsys.readouterr()
    a, b = torch.load(plain, weights_only=True), torch.load(watched, weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_check_json_carries_dead_units_and_saturated_as_warnings(capsys):
    assert main(["check", HEALTH, "--json", "--steps", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    found = {(f["kind"], f["path"], f["severity"], f["step"]) for f in report["findings"]}
    assert found == {("dead-units", "act", "warning", 2), ("saturated", "gate", "warning", 2)}


def test_a_recording_made_with_layers_replays_its_layers_lines(tmp_path, capsys):
    folder = str(tmp_path / "R")
    assert main(["run", HEALTH, "--steps", "2", "--layers", "--json", "--record", folder]) == 0
    ran = _lines(capsys.readouterr().out)
    assert main(["replay", folder, "--json"]) == 0
    replayed = _lines(capsys.readouterr().out)
    assert [e for e in replayed if e["event"] == "layers"] == [
        e for e in ran if e["event"] == "layers"
    ]
    assert [e["event"] for e in replayed if e["event"] in ("step", "layers")] == [
        "step",
        "layers",
        "step",
        "layers",
    ]
