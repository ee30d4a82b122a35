"""`doctor.structure.Structure`: the doctor's walk, kept only while the model's structure is."""

from __future__ import annotations

import torch
from torch import nn

from modscope.core.doctor.reachable import named_parameters_once
from modscope.core.doctor.structure import Structure
from modscope.core.model.walk import distinct_modules


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))


def _fresh(model: nn.Module) -> tuple[list[str], list[tuple[str, int]]]:
    modules = distinct_modules(model)
    named = named_parameters_once(modules).values()
    return [path for path, _ in modules], [(name, id(p)) for name, p in named]


def _seen(structure: Structure, model: nn.Module) -> tuple[list[str], list[tuple[str, int]]]:
    walked = structure.walk(model)
    return [path for path, _ in walked.modules], [(name, id(p)) for name, p in walked.named]


def test_an_unchanged_model_gets_the_same_walk_back() -> None:
    model, structure = _model(), Structure()
    first = structure.walk(model)
    assert structure.walk(model) is first
    assert _seen(structure, model) == _fresh(model)
    assert [n for n, _ in first.named] == ["0.weight", "0.bias", "1.1.weight", "1.1.bias"]


def test_a_replaced_parameter_is_seen() -> None:
    model, structure = _model(), Structure()
    first = structure.walk(model)
    model[0].weight = nn.Parameter(torch.zeros(4, 3))
    assert structure.walk(model) is not first
    assert _seen(structure, model) == _fresh(model)
    assert structure.walk(model).params[id(model[0].weight)][0] == "0.weight"


def test_added_removed_and_replaced_modules_are_seen() -> None:
    model, structure = _model(), Structure()
    structure.walk(model)
    model[1].append(nn.Linear(2, 2))  # added deep down
    assert _seen(structure, model)[0] == ["", "0", "1", "1.0", "1.1", "1.2"]
    model[0] = nn.Linear(3, 4)  # replaced under the same name: same lengths
    assert _seen(structure, model) == _fresh(model)
    del model[1][0]  # removed
    assert _seen(structure, model) == _fresh(model)
    assert _seen(structure, model)[0] == ["", "0", "1", "1.0", "1.1"]


def test_a_renamed_module_and_another_model_are_walked_again() -> None:
    model, structure = _model(), Structure()
    structure.walk(model)
    model._modules["head"] = model._modules.pop("1")
    assert _seen(structure, model)[0] == ["", "0", "head", "head.0", "head.1"]
    other = _model()
    assert structure.walk(other).modules[0][1] is other
