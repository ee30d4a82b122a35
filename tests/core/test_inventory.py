"""Tests for the module inventory: tree, tensors, totals, unregistered state, folding."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from modscope.core.contract.tensors import TensorInfo
from modscope.core.contract.tree import Inventory, ModuleInfo, Totals, Unregistered
from modscope.core.model.inventory import (
    LAZY_NOTE,
    SiblingRun,
    build_inventory,
    find_unregistered,
    fold_runs,
)
from tests import models


def paths(inventory: Inventory) -> list[str]:
    return [m.path for m in inventory.modules]


def tensor(inventory: Inventory, path: str) -> TensorInfo:
    owner, _, name = path.rpartition(".")
    module = inventory.module(owner)
    assert module is not None, f"no module {owner!r}"
    for info in (*module.parameters, *module.buffers):
        if info.name == name:
            return info
    raise AssertionError(f"no tensor {path!r}")


def children_of(inventory: Inventory, path: str) -> list[ModuleInfo]:
    module = inventory.module(path)
    assert module is not None
    return [inventory.module(c) for c in module.children]  # type: ignore[misc]


# --- The article's model and the tree itself. ---


def test_powlog_tree() -> None:
    inv = build_inventory(models.PowLogModel())
    assert paths(inv) == ["", "powModel", "logModel"]
    root = inv.root
    assert (root.name, root.type_name, root.depth, root.training) == ("", "PowLogModel", 0, True)
    assert root.children == ("powModel", "logModel")
    assert root.parameters == () and root.buffers == ()
    assert root.totals == Totals(parameters=2, trainable=2, buffers=0, bytes=8)
    pow_module = inv.module("powModel")
    assert pow_module is not None
    assert (pow_module.name, pow_module.type_name, pow_module.depth) == ("powModel", "PowModel", 1)
    assert pow_module.totals == Totals(parameters=1, trainable=1, buffers=0, bytes=4)
    assert tensor(inv, "powModel.powParam") == TensorInfo(
        name="powParam",
        path="powModel.powParam",
        shape=(),
        dtype="float32",
        device="cpu",
        numel=1,
        nbytes=4,
        requires_grad=True,
        is_parameter=True,
    )
    log_param = tensor(inv, "logModel.logParam")
    assert (log_param.shape, log_param.numel, log_param.shared_with) == ((), 1, ())
    assert inv.unregistered == () and inv.shared == ()


def test_snapshots_equal_ordinary_dataclasses() -> None:
    inv = build_inventory(models.NonPersistentBufferModel())
    for module in inv.modules:
        assert dataclasses.replace(module) == module
        assert hash(dataclasses.replace(module.totals)) == hash(module.totals)
        for info in (*module.parameters, *module.buffers):
            assert TensorInfo(**dataclasses.asdict(info)) == info


@pytest.mark.parametrize(
    "name",
    ["powlog", "containers", "transformer_encoder", "reused_block", "tied", "compiled", "lstm"],
)
def test_paths_follow_named_modules_with_duplicates(name: str) -> None:
    model = models.CLEAN_MODELS[name]()
    inv = build_inventory(model)
    expected = [path for path, _ in model.named_modules(remove_duplicate=False)]
    assert paths(inv) == expected
    for module in inv.modules:
        expected_depth = 0 if module.path == "" else module.path.count(".") + 1
        assert module.depth == expected_depth


def test_compiled_model_shows_orig_mod() -> None:
    inv = build_inventory(models.compiled_powlog())
    assert paths(inv) == ["", "_orig_mod", "_orig_mod.powModel", "_orig_mod.logModel"]
    assert inv.root.type_name == "OptimizedModule"
    assert inv.root.totals.parameters == 2


def test_bracket_name_kept_literally() -> None:
    inv = build_inventory(models.BracketNameModel())
    assert paths(inv) == ["", "blocks[attn]"]
    assert tensor(inv, "blocks[attn].weight").path == "blocks[attn].weight"
    assert inv.module("blocks[attn]").name == "blocks[attn]"  # type: ignore[union-attr]


def test_extra_repr_first_80_chars_and_broken_one() -> None:
    linear = build_inventory(nn.Linear(2, 3)).root
    assert linear.extra_repr == "in_features=2, out_features=3, bias=True"
    broken = build_inventory(models.BrokenExtraReprModule()).root
    assert broken.extra_repr == "<extra_repr() raised ValueError>"

    class Chatty(nn.Module):
        def extra_repr(self) -> str:
            return "line one\n" + "x" * 200

    assert build_inventory(Chatty()).root.extra_repr == ("line one " + "x" * 200)[:80]


def test_without_extra_reprs_only_extra_repr_differs() -> None:
    model = models.TiedLanguageModel()
    full, plain = build_inventory(model), build_inventory(model, extra_reprs=False)
    assert any(m.extra_repr for m in full.modules)
    assert all(m.extra_repr == "" for m in plain.modules)
    assert plain == dataclasses.replace(
        full, modules=tuple(dataclasses.replace(m, extra_repr="") for m in full.modules)
    )
    broken = models.BrokenExtraReprModule()
    broken.extra_repr = lambda: pytest.fail("extra_repr() called")  # type: ignore[method-assign]
    assert build_inventory(broken, extra_reprs=False).root.extra_repr == ""


# --- Parameters, buffers and totals. ---


def test_tied_weights_shared_and_counted_once() -> None:
    inv = build_inventory(models.TiedLanguageModel(vocab=10, dim=4))
    assert tensor(inv, "embedding.weight").shared_with == ("decoder.weight",)
    assert tensor(inv, "decoder.weight").shared_with == ("embedding.weight",)
    assert tensor(inv, "decoder.bias").shared_with == ()
    # 10 x 4 tied weight once, plus the decoder's bias of 10.
    assert inv.root.totals == Totals(parameters=50, trainable=50, buffers=0, bytes=200)
    assert inv.module("decoder").totals.parameters == 50  # type: ignore[union-attr]
    assert inv.shared == (("embedding.weight", "decoder.weight"),)


def test_reused_module_listed_under_both_paths() -> None:
    inv = build_inventory(models.ReusedBlockModel())
    assert paths(inv) == ["", "first", "second"]
    assert tensor(inv, "first.weight").shared_with == ("second.weight",)
    assert tensor(inv, "second.bias").shared_with == ("first.bias",)
    assert inv.root.totals.parameters == 12
    assert set(inv.shared) == {("first.weight", "second.weight"), ("first.bias", "second.bias")}


def test_non_persistent_buffer() -> None:
    inv = build_inventory(models.NonPersistentBufferModel())
    mask, count = tensor(inv, "mask"), tensor(inv, "count")
    assert (mask.persistent, mask.is_parameter, mask.shape, mask.dtype) == (
        False,
        False,
        (2,),
        "float32",
    )
    assert (count.persistent, count.dtype, count.nbytes) == (True, "int64", 8)
    assert inv.root.totals == Totals(parameters=6, trainable=6, buffers=3, bytes=24 + 8 + 8)


def test_frozen_submodule() -> None:
    inv = build_inventory(models.FrozenBackboneModel())
    weight = tensor(inv, "backbone.weight")
    assert weight.requires_grad is False and weight.frozen
    assert tensor(inv, "head.weight").requires_grad is True
    assert inv.root.totals.parameters == 4 * 3 + 3 + 3 * 2 + 2
    assert inv.root.totals.trainable == 3 * 2 + 2
    assert inv.module("backbone").totals.trainable == 0  # type: ignore[union-attr]


def test_buffer_with_grad_history() -> None:
    model = models.PowLogBufferModel()
    model(*models.article_inputs())
    inv = build_inventory(model)
    log_buff = tensor(inv, "logModel.logBuff")
    assert log_buff.has_grad_fn is True and log_buff.is_parameter is False
    # powBuff averages x only, which carries no history.
    assert tensor(inv, "powModel.powBuff").has_grad_fn is False
    assert tensor(inv, "logModel.logParam").has_grad_fn is False


def test_lazy_parameters_before_first_forward() -> None:
    model = models.lazy_linear()
    inv = build_inventory(model)
    weight = tensor(inv, "0.weight")
    assert (weight.shape, weight.numel, weight.nbytes, weight.note) == ((), 0, 0, LAZY_NOTE)
    assert weight.dtype == "float32" and weight.is_parameter
    assert inv.root.totals == Totals()
    model(torch.ones(2, 5))
    weight = tensor(build_inventory(model), "0.weight")
    assert (weight.shape, weight.numel, weight.note) == ((3, 5), 15, None)


def test_weight_norm_and_parametrizations_list_their_real_parameters() -> None:
    old = build_inventory(models.old_weight_norm())
    assert [p.name for p in old.module("0").parameters] == ["bias", "weight_g", "weight_v"]  # type: ignore[union-attr]
    spectral = build_inventory(models.old_spectral_norm())
    assert [b.name for b in spectral.module("0").buffers] == ["weight_u", "weight_v"]  # type: ignore[union-attr]
    param = build_inventory(models.parametrized_weight_norm())
    assert "0.parametrizations.weight" in paths(param)
    assert tensor(param, "0.parametrizations.weight.original0").shape == (4, 1)
    assert tensor(param, "0.parametrizations.weight.original1").shape == (4, 3)


# --- What failed to register. ---


def test_plain_list_of_modules() -> None:
    model = models.PowLogListModel()
    assert list(model.named_children()) == []
    inv = build_inventory(model)
    assert paths(inv) == [""] and inv.root.totals == Totals()
    # The parameters inside the listed modules are not reported again: outermost only.
    assert list(inv.unregistered) == find_unregistered(model)
    assert find_unregistered(model) == [
        Unregistered("modelList[0]", "module", "PowModel", "", "modelList", "list"),
        Unregistered("modelList[1]", "module", "LogModel", "", "modelList", "list"),
    ]


def test_plain_dict_of_modules() -> None:
    found = find_unregistered(models.PowLogDictModel())
    assert [(u.path, u.what, u.container) for u in found] == [
        ("modelDict['powModel']", "module", "dict"),
        ("modelDict['logModel']", "module", "dict"),
    ]


def test_parameter_in_plain_dict() -> None:
    assert find_unregistered(models.PowLogParamDictModel()) == [
        Unregistered(
            path="powModel.powParamDict['powParam']",
            what="parameter",
            type_name="Parameter",
            owner="powModel",
            attribute="powParamDict",
            container="dict",
            shape=(),
        )
    ]


def test_plain_tensor_attributes() -> None:
    assert find_unregistered(models.PowLogPlainTensorModel()) == [
        Unregistered("powModel.powBuff", "tensor", "Tensor", "powModel", "powBuff", None, ()),
        Unregistered("logModel.logBuff", "tensor", "Tensor", "logModel", "logBuff", None, ()),
    ]


def test_nested_container_path() -> None:
    assert find_unregistered(models.NestedCacheModel()) == [
        Unregistered("encoder.cache[1]['k']", "module", "Linear", "encoder", "cache", "list")
    ]


def test_underscored_user_attribute_is_examined() -> None:
    found = find_unregistered(models.PrivateListModel())
    assert [(u.path, u.attribute) for u in found] == [
        ("_heads[0]", "_heads"),
        ("_heads[1]", "_heads"),
    ]


def test_module_in_a_set() -> None:
    found = find_unregistered(models.SetOfModulesModel())
    assert [(u.path, u.what, u.container) for u in found] == [("pool{0}", "module", "set")]


def test_one_report_per_object() -> None:
    model = nn.Module()
    stray = nn.Linear(2, 2)
    model.first = [stray, {"again": stray}]
    model.second = (stray,)
    assert [u.path for u in find_unregistered(model)] == ["first[0]"]


def test_container_cycle_terminates() -> None:
    found = find_unregistered(models.CyclicContainerModel())
    assert [(u.path, u.what, u.shape) for u in found] == [("history[0]", "tensor", (2,))]


def test_deep_containers_are_bounded() -> None:
    model = nn.Module()
    nested: list[object] = [nn.Linear(1, 1)]
    for _ in range(10):
        nested = [nested]
    model.deep = nested
    model.shallow = [[[nn.Linear(1, 1)]]]
    assert [u.path for u in find_unregistered(model)] == ["shallow[0][0][0]"]


def test_module_cycle_terminates() -> None:
    inv = build_inventory(models.CyclicModuleModel())
    assert paths(inv) == ["", "linear", "again"]
    again = inv.module("again")
    assert again is not None and again.children == ()
    assert again.totals == inv.root.totals == Totals(6, 6, 0, 24)
    assert inv.unregistered == ()


def test_equal_totals_are_one_object_with_each_module_its_own_count() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    inv = build_inventory(model)
    by_path = {m.path: m.totals for m in inv.modules}
    assert by_path["0"] is by_path["2"] and by_path["1"] is by_path["3"]
    assert by_path["0"] == Totals(9, 9, 0, 36) and by_path["1"] == Totals()
    assert by_path["4"] == Totals(4, 4, 0, 16) and by_path[""] == Totals(22, 22, 0, 88)


def test_repeated_diamonds_stay_bounded() -> None:
    # Each level registers the level below twice: 2**22 paths, 23 distinct modules.
    module: nn.Module = nn.Linear(2, 2)
    for _ in range(22):
        parent = nn.Module()
        parent.left = module
        parent.right = module
        module = parent
    inv = build_inventory(module)
    assert len(inv.modules) < 20_000
    assert inv.root.totals.parameters == 6
    for info in inv.modules:
        assert info.totals.parameters == 6


@pytest.mark.parametrize("name", list(models.CLEAN_MODELS))
def test_no_false_alarms(name: str) -> None:
    model = models.CLEAN_MODELS[name]()
    assert find_unregistered(model) == []
    assert build_inventory(model).unregistered == ()


def test_lstm_flat_weights_cache_is_not_user_state() -> None:
    # The cache holds a tensor no path reaches once the weight is parametrized.
    model = models.parametrized_lstm()
    registered = {id(t) for t in (*model.parameters(), *model.buffers())}
    assert any(id(t) not in registered for t in model._flat_weights)
    assert find_unregistered(model) == []


# --- Folding runs of identical siblings. ---


def test_two_identical_blocks_fold() -> None:
    def block() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU())

    inv = build_inventory(nn.Sequential(block(), block(), nn.Linear(4, 2)))
    children = children_of(inv, "")
    runs = fold_runs(children, inv)
    assert runs == [
        SiblingRun(0, 2, children[0], children[1]),
        SiblingRun(2, 1, children[2], children[2]),
    ]


def test_folding_compares_the_whole_subtree() -> None:
    inv = build_inventory(
        nn.Sequential(
            nn.Sequential(nn.Linear(4, 4), nn.ReLU()),
            nn.Sequential(nn.Linear(4, 5), nn.ReLU()),
        )
    )
    children = children_of(inv, "")
    assert [r.count for r in fold_runs(children, inv)] == [1, 1]


def test_folding_keeps_frozen_and_named_siblings_apart() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    model[2].requires_grad_(False)
    inv = build_inventory(model)
    assert [r.count for r in fold_runs(children_of(inv, ""), inv)] == [2, 1]
    layer = build_inventory(models.transformer_encoder())
    named = children_of(layer, "layers.0")
    assert all(r.count == 1 for r in fold_runs(named, layer))
    norms = [m for m in named if m.name in ("norm1", "norm2")]
    assert [r.count for r in fold_runs(norms, layer, numbered_only=False)] == [2]


def test_many_blocks_fold_into_one_run() -> None:
    inv = build_inventory(models.many_blocks(200))
    children = children_of(inv, "")
    runs = fold_runs(children, inv)
    assert [(r.start, r.count, r.first.name, r.last.name) for r in runs] == [(0, 200, "0", "199")]
    assert inv.root.totals.parameters == 200 * (20 + 8)


# --- The fixtures themselves reproduce the article. ---


def test_fixtures_reproduce_the_article() -> None:
    z = models.PowLogModel()(*models.article_inputs())
    assert z.item() == pytest.approx(4.8283, abs=5e-5)
    model = models.PowLogPlainTensorModel()
    for _ in range(10):
        z = model(*models.article_inputs())
    assert model.powModel.powBuff.item() == pytest.approx(4.9698, abs=5e-5)
    assert model.logModel.logBuff.item() == pytest.approx(116.3565, abs=5e-4)
    assert z.item() == pytest.approx(4.7567, abs=5e-5)
