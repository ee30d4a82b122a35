"""core/model/walk.py, and the names declared once: callables, exit codes, script names."""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import pickle
from collections import deque

import pytest
import torch
from torch import nn

import modscope
from modscope.core.contract.exit_codes import ExitCode
from modscope.core.contract.script_names import MISSING, SCRIPT_NAMES
from modscope.core.model.inventory import build_inventory
from modscope.core.model.walk import (
    MAX_CONTAINER_DEPTH,
    distinct_modules,
    find_cycle,
    held_objects,
    structure_fingerprint,
    tensor_at,
)
from modscope.core.script.callables import callable_label, describe_callable
from modscope.core.script.loader import LoadedScript
from modscope.core.session import Session
from tests import models

FIXTURES = {
    "powlog": models.PowLogModel,
    "tied": models.TiedLanguageModel,
    "reused": models.ReusedBlockModel,
    "aliased": models.AliasedModel,
    "cyclic": models.CyclicModuleModel,
    "lstm": models.lstm,
    "transformer": models.transformer_encoder,
    "parametrized": models.parametrized_weight_norm,
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_distinct_modules_is_the_inventorys_distinct_walk(name: str) -> None:
    model = FIXTURES[name]()
    listed = distinct_modules(model)
    # The inventory lists every path of a shared instance: its first path is the distinct one.
    inventory_walk: dict[int, str] = {}
    for info in build_inventory(model).modules:
        inventory_walk.setdefault(id(model.get_submodule(info.path)), info.path)
    assert [(p, id(m)) for p, m in listed] == [(p, k) for k, p in inventory_walk.items()]
    if name != "cyclic":  # torch's own walk recurses forever on a cycle
        assert [(p, id(m)) for p, m in listed] == [(p, id(m)) for p, m in model.named_modules()]


def test_distinct_modules_lists_empty_containers_and_skips_seen() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ModuleList())
    assert [p for p, _ in distinct_modules(model)] == ["", "0", "1"]
    seen = {id(model[0])}
    assert [p for p, _ in distinct_modules(model, seen=seen)] == ["", "1"]
    assert id(model) in seen and id(model[1]) in seen


def test_held_objects_paths_depth_and_visited() -> None:
    layer = nn.Linear(2, 2)
    t = torch.zeros(1)
    value = {"a": [layer, 1, "x"], ("k", 2): deque([t]), "s": {frozenset()}}
    visited: set[int] = set()
    found = [(p, type(o).__name__) for p, o in held_objects(value, "m.cache", visited=visited)]
    assert found == [
        ("m.cache", "dict"),
        ("m.cache['a']", "list"),
        ("m.cache['a'][0]", "Linear"),
        ("m.cache[('k', 2)]", "deque"),
        ("m.cache[('k', 2)][0]", "Tensor"),
        ("m.cache['s']", "set"),
        ("m.cache['s']{0}", "frozenset"),
    ]
    # Each container is looked into once per `visited`.
    assert [p for p, _ in held_objects(value, "again", visited=visited)] == []

    deep: list[object] = [layer]
    for _ in range(MAX_CONTAINER_DEPTH):
        deep = [deep]
    assert not any(o is layer for _, o in held_objects(deep, "d", visited=set()))
    assert any(o is layer for _, o in held_objects(deep[0], "d", visited=set()))


def test_find_cycle_tells_a_cycle_from_a_shared_module() -> None:
    shared = nn.Linear(2, 2)
    diamond = nn.Sequential(nn.Sequential(shared), nn.Sequential(shared), nn.ReLU())
    assert find_cycle(diamond) is None
    assert find_cycle(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))) is None
    inner = nn.Sequential(nn.Linear(2, 2))
    outer = nn.Sequential(nn.ReLU(), nn.Sequential(inner))
    inner.add_module("up", outer[1])
    assert find_cycle(outer) == ("1.0.up", "1")
    assert find_cycle(models.CyclicModuleModel()) == ("again", "")
    assert find_cycle(torch.jit.script(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))) is None


def test_structure_fingerprint_counts_in_one_pass() -> None:
    model = models.TiedLanguageModel()
    modules = distinct_modules(model)
    expected = (
        len(modules),
        sum(m.training for _, m in modules),
        sum(len(m._parameters) for _, m in modules),
        sum(len(m._buffers) for _, m in modules),
    )
    assert structure_fingerprint(model) == expected
    before = structure_fingerprint(model)
    model.eval()
    assert structure_fingerprint(model)[1] == 0 and structure_fingerprint(model) != before
    model.train()
    assert structure_fingerprint(model) == before
    model.register_buffer("extra", torch.zeros(1))
    assert structure_fingerprint(model)[3] == before[3] + 1
    assert structure_fingerprint(models.CyclicModuleModel())[0] >= 1


def test_tensor_at_finds_parameters_and_buffers_by_state_path() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert tensor_at(model, "0.weight") is model[0].weight
    assert tensor_at(model, "1.running_mean") is model[1].running_mean
    for missing in ("0.nothing", "7.weight", "0.weight.x", "", "0"):
        assert tensor_at(model, missing) is None
    root = nn.Linear(2, 2)
    assert tensor_at(root, "bias") is root.bias
    for path in models.TiedLanguageModel().state_dict():
        assert tensor_at(models.TiedLanguageModel(), path) is not None


def hook_target(module: nn.Module, grad_input: object, grad_output: object) -> None:
    return None


class CallableHook:
    def __call__(self, *args: object) -> None:
        return None


def test_describe_callable_and_its_label() -> None:
    line = hook_target.__code__.co_firstlineno
    here = hook_target.__module__  # `tests.core.test_walk` or `test_walk`, by how pytest imports
    qualname, location = describe_callable(functools.partial(hook_target))
    assert qualname == f"{here}.hook_target"
    assert location is not None and location.endswith(f"test_walk.py:{line}")
    assert callable_label(hook_target) == f"{here}.hook_target (test_walk.py:{line})"
    qualname, location = describe_callable(CallableHook())
    assert qualname == f"{here}.CallableHook"
    assert location is not None and "test_walk.py:" in location
    assert callable_label(len) == "builtins.len"


def test_exit_codes_are_ints() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 130]
    assert ExitCode.FINDINGS == 1 and isinstance(ExitCode.FAILED, int)


def test_script_names_are_declared_once() -> None:
    fields = {f.name for f in dataclasses.fields(LoadedScript)}
    assert set(SCRIPT_NAMES) <= fields
    inspect_params = set(inspect.signature(modscope.inspect).parameters)
    assert inspect_params == set(SCRIPT_NAMES) | {"hooks"}
    from_objects = set(inspect.signature(Session.from_objects).parameters)
    assert set(SCRIPT_NAMES) <= from_objects
    defaults = inspect.signature(modscope.inspect).parameters
    assert defaults["inputs"].default is MISSING and defaults["loss_fn"].default is MISSING


def test_missing_is_one_falsy_marker() -> None:
    assert repr(MISSING) == "<absent>" and not MISSING
    assert copy.deepcopy(MISSING) is MISSING and copy.copy(MISSING) is MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING
