"""`modscope.structure`: a model's structure as stable plain data, its text and its diff."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from torch import nn

import modscope
from modscope.core.model.structure import structure_changes, structure_lines, structure_text
from tests import models as M


class Block(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)
        self.norm = nn.BatchNorm1d(width)


class Net(nn.Module):
    def __init__(self, *, width: int = 4, tied: bool = True, cache: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, width)
        self.blocks = nn.ModuleList([Block(width) for _ in range(2)])
        self.head = nn.Linear(width, 10, bias=False)
        if tied:
            self.head.weight = self.embed.weight
        self.register_buffer("mask", torch.ones(3), persistent=False)
        if cache:
            self.blocks[1].cache = [nn.Linear(2, 2)]


def test_the_structure_names_every_module_tensor_and_key():
    spec = modscope.structure(Net())
    assert [m["path"] for m in spec["modules"]][:4] == ["", "embed", "blocks", "blocks.0"]
    assert spec["modules"][0]["class"] == f"{Net.__module__}.Net"
    assert spec["modules"][3]["class"] == f"{Block.__module__}.Block"
    head = next(p for p in spec["parameters"] if p["path"] == "head.weight")
    assert head == {
        "path": "head.weight",
        "shape": [10, 4],
        "dtype": "float32",
        "tied_to": "embed.weight",
        "requires_grad": True,
    }
    mask = next(b for b in spec["buffers"] if b["path"] == "mask")
    assert mask["persistent"] is False
    assert spec["state_dict"] == list(Net().state_dict().keys())
    assert "mask" not in spec["state_dict"]
    # Tied weights count once: embed 40, two blocks of 20 + 8 (BatchNorm's affine).
    assert spec["totals"]["parameters"] == 40 + 2 * (20 + 8)
    json.dumps(spec, allow_nan=False)


def test_two_models_built_alike_have_equal_structures_and_text():
    torch.manual_seed(0)
    a = Net()
    torch.manual_seed(1)
    b = Net()
    assert modscope.structure(a) == modscope.structure(b)
    assert structure_text(modscope.structure(a)) == structure_text(modscope.structure(b))


def test_unregistered_state_is_in_the_structure():
    spec = modscope.structure(Net(cache=True))
    assert spec["unregistered"] == [
        {"path": "blocks.1.cache[0]", "what": "module", "class": "Linear", "container": "list"}
    ]
    assert "unregistered module blocks.1.cache[0]: Linear in list" in structure_lines(spec)


def test_the_diff_names_each_change_in_the_users_words():
    before = structure_text(modscope.structure(Net()))
    after = structure_text(modscope.structure(Net(width=8, tied=False, cache=True)))
    changes = structure_changes(before, after)
    # Numbered siblings changed alike are one line.
    assert "blocks.0-1.proj.weight: [4, 4] float32 -> [8, 8] float32" in changes
    assert "head.weight no longer tied to embed.weight" in changes
    assert "new unregistered module blocks.1.cache[0]: Linear in list" in changes
    assert structure_changes(before, before) == []


def test_odd_names_survive_the_text_and_its_diff():
    model = nn.Module()
    model.add_module("a: b\nc", nn.Linear(2, 2))
    text = structure_text(modscope.structure(model))
    assert 'module "a: b\\nc": torch.nn.modules.linear.Linear' in text
    bigger = nn.Module()
    bigger.add_module("a: b\nc", nn.Linear(2, 3))
    changes = structure_changes(text, structure_text(modscope.structure(bigger)))
    assert '"a: b\\nc.weight": [2, 2] float32 -> [3, 2] float32' in changes


def test_a_buffer_made_non_persistent_and_a_frozen_weight_show():
    before = structure_text(modscope.structure(M.FrozenBackboneModel()))
    model = M.FrozenBackboneModel()
    model.head.weight.requires_grad_(False)
    changes = structure_changes(before, structure_text(modscope.structure(model)))
    assert "head.weight: [2, 3] float32 -> [2, 3] float32 frozen" in changes


def test_a_module_that_is_its_own_descendant_has_a_structure():
    spec = modscope.structure(M.CyclicModuleModel())
    assert spec["state_dict"] == ["linear.weight", "linear.bias"]


def test_structure_refuses_what_is_no_module():
    try:
        modscope.structure(object())
    except TypeError as exc:
        assert "not an nn.Module" in str(exc)
    else:
        raise AssertionError("structure() accepted an object that is no nn.Module")


def test_import_modscope_still_imports_no_torch():
    code = "import sys, modscope; print([m for m in ('torch', 'syrupy') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_removed_module_is_one_line_and_a_renamed_one_a_rename():
    class Renamed(Net):
        def __init__(self) -> None:
            super().__init__()
            self.blocks[1].final = self.blocks[1].norm
            del self.blocks[1].norm
            del self.embed

    changes = structure_changes(
        structure_text(modscope.structure(Net())), structure_text(modscope.structure(Renamed()))
    )
    assert (
        "module blocks.1.norm renamed to blocks.1.final: torch.nn.modules.batchnorm.BatchNorm1d"
        in changes
    )
    assert "module embed removed (was torch.nn.modules.sparse.Embedding)" in changes
    # What they held is said with them, not once per tensor and state_dict key.
    assert not [c for c in changes if "embed.weight" in c and "tied" not in c]
    assert not [c for c in changes if "blocks.1.norm." in c]


def test_nested_numbered_siblings_fold_on_the_index_that_varies():
    def stack(width: int) -> nn.Sequential:
        return nn.Sequential(*(nn.Sequential(nn.Linear(4, width), nn.ReLU()) for _ in range(5)))

    changes = structure_changes(
        structure_text(modscope.structure(stack(4))), structure_text(modscope.structure(stack(6)))
    )
    assert changes[:2] == [
        "0-4.0.weight: [4, 4] float32 -> [6, 4] float32",
        "0-4.0.bias: [4] float32 -> [6] float32",
    ]
