"""The doctor's static rules: each pitfall found at the right path, and its near-twin not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from modscope.core.contract.findings import SEVERITIES, Finding, Severity
from modscope.core.doctor import FindingKind, static_findings
from modscope.core.hooks.manager import HookSpec
from tests import doctor_models as D
from tests import models as M


def kinds(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.kind, f.path) for f in findings]


def of_kind(findings: list[Finding], kind: FindingKind) -> list[Finding]:
    return [f for f in findings if f.kind == kind.value]


# (model factory, kind, expected paths of that kind)
TRIGGERS: dict[str, tuple[Callable[[], nn.Module], FindingKind, list[str]]] = {
    "module-list": (D.ListOfLayers, FindingKind.UNREGISTERED_MODULE, ["blocks"]),
    "module-tuple": (lambda: D.ListOfLayers(tuple), FindingKind.UNREGISTERED_MODULE, ["blocks"]),
    "module-dict": (D.DictOfLayers, FindingKind.UNREGISTERED_MODULE, ["heads"]),
    "module-nested-dict-of-lists": (
        D.NestedStages,
        FindingKind.UNREGISTERED_MODULE,
        ["encoder.stages"],
    ),
    "module-set": (D.SetOfLayers, FindingKind.UNREGISTERED_MODULE, ["pool"]),
    "module-mixed-dict": (D.MixedDict, FindingKind.UNREGISTERED_MODULE, ["heads['q']"]),
    "module-alias-and-new": (D.AliasAndNew, FindingKind.UNREGISTERED_MODULE, ["extra[1]"]),
    "module-deep": (D.DeepList, FindingKind.UNREGISTERED_MODULE, ["a.b.c.layers"]),
    "module-article-list": (M.PowLogListModel, FindingKind.UNREGISTERED_MODULE, ["modelList"]),
    "module-article-dict": (M.PowLogDictModel, FindingKind.UNREGISTERED_MODULE, ["modelDict"]),
    "module-cache": (
        M.NestedCacheModel,
        FindingKind.UNREGISTERED_MODULE,
        ["encoder.cache[1]['k']"],
    ),
    "module-private": (M.PrivateListModel, FindingKind.UNREGISTERED_MODULE, ["_heads"]),
    "parameter-dict": (
        M.PowLogParamDictModel,
        FindingKind.UNREGISTERED_PARAMETER,
        ["powModel.powParamDict"],
    ),
    "parameter-list": (D.ParamList, FindingKind.UNREGISTERED_PARAMETER, ["scales"]),
    "parameter-mixed-in-child": (
        D.ParamInChild,
        FindingKind.UNREGISTERED_PARAMETER,
        ["child.cfg['w']"],
    ),
    "tensor-attributes": (
        M.PowLogPlainTensorModel,
        FindingKind.UNREGISTERED_TENSOR,
        ["powModel.powBuff", "logModel.logBuff"],
    ),
    "tensor-deep-and-list": (
        D.PlainTensorDeep,
        FindingKind.UNREGISTERED_TENSOR,
        ["body.stats.count", "history"],
    ),
    "tensor-in-cyclic-list": (
        M.CyclicContainerModel,
        FindingKind.UNREGISTERED_TENSOR,
        ["history[0]"],
    ),
    "buffer-requires-grad": (
        D.BufferRequiresGrad,
        FindingKind.BUFFER_GRAD_HISTORY,
        ["lin.running"],
    ),
    "dtype": (D.mixed_dtype_linear, FindingKind.DTYPE_MISMATCH, ["1"]),
    "device": (D.mixed_device_linear, FindingKind.DEVICE_MISMATCH, ["0"]),
    "tied-weights": (M.TiedLanguageModel, FindingKind.SHARED_PARAMETER, ["embedding.weight"]),
    "module-alias": (M.ReusedBlockModel, FindingKind.SHARED_PARAMETER, ["first"]),
}

TWINS: dict[str, tuple[Callable[[], nn.Module], list[FindingKind]]] = {
    "registered-containers": (
        D.RegisteredTwin,
        [FindingKind.UNREGISTERED_MODULE, FindingKind.UNREGISTERED_PARAMETER],
    ),
    "article-modulelist": (M.PowLogModuleListModel, [FindingKind.UNREGISTERED_MODULE]),
    "article-moduledict": (M.PowLogModuleDictModel, [FindingKind.UNREGISTERED_MODULE]),
    "registered-params": (D.RegisteredParams, [FindingKind.UNREGISTERED_PARAMETER]),
    "buffers": (D.BufferTwin, [FindingKind.UNREGISTERED_TENSOR, FindingKind.BUFFER_GRAD_HISTORY]),
    "article-buffers": (M.PowLogBufferModel, [FindingKind.UNREGISTERED_TENSOR]),
    "same-dtype": (lambda: nn.Sequential(nn.Linear(2, 2)).double(), [FindingKind.DTYPE_MISMATCH]),
    "batchnorm-long-counter": (D.WithNorm, [FindingKind.DTYPE_MISMATCH]),
    "separate-layers": (M.PowLogModel, [FindingKind.SHARED_PARAMETER]),
}


@pytest.mark.parametrize("case", list(TRIGGERS))
def test_trigger(case: str) -> None:
    make, kind, paths = TRIGGERS[case]
    found = static_findings(make())
    assert sorted(f.path for f in of_kind(found, kind)) == sorted(paths), kinds(found)
    for f in of_kind(found, kind):
        assert f.severity is SEVERITIES[kind]
        assert f.message and f.fix


@pytest.mark.parametrize("case", list(TWINS))
def test_twin(case: str) -> None:
    make, absent = TWINS[case]
    found = static_findings(make())
    assert not [f for f in found if FindingKind(f.kind) in absent], kinds(found)


def test_container_finding_names_items_and_fix() -> None:
    (f,) = static_findings(D.ListOfLayers())
    assert f.paths == ("blocks[0]", "blocks[1]")
    assert (
        "blocks[0] Linear" in f.message and "optimizer never sees their 4 parameters" in f.message
    )
    assert f.fix.startswith("self.blocks = nn.ModuleList([...])")
    (d,) = static_findings(D.DictOfLayers())
    assert d.fix.startswith("self.heads = nn.ModuleDict({...})")
    (p,) = static_findings(M.PowParamDictModel())
    assert p.fix.startswith("self.powParamDict = nn.ParameterDict({...})")
    assert "optimizer never sees it" in p.message
    tensors = static_findings(M.PowLogPlainTensorModel())
    assert tensors[1].fix.startswith('self.register_buffer("logBuff", ...)')
    (item,) = static_findings(D.MixedDict())
    assert item.fix.startswith('self.add_module("heads_q", module)')


@pytest.mark.parametrize("name", list(M.CLEAN_MODELS))
def test_clean_models_have_no_warnings(name: str) -> None:
    model = M.CLEAN_MODELS[name]()
    found = static_findings(model)
    expected_info = {
        "tied": [("shared-parameter", "embedding.weight")],
        "reused_block": [("shared-parameter", "first")],
    }.get(name, [])
    assert kinds(found) == expected_info


def test_tied_weights_one_info_with_paths() -> None:
    (f,) = static_findings(M.TiedLanguageModel())
    assert f.severity is Severity.INFO
    assert f.paths == ("embedding.weight", "decoder.weight")
    assert "self.decoder.weight = nn.Parameter(self.embedding.weight.detach().clone())" in f.fix


def test_module_alias_one_info() -> None:
    (f,) = static_findings(M.ReusedBlockModel())
    assert f.paths == ("first", "second")
    assert "weight and bias" in f.message
    assert "copy.deepcopy(self.first)" in f.fix


def test_lazy_module_before_first_forward() -> None:
    model = M.lazy_linear()
    assert static_findings(model, torch.optim.SGD(model.parameters(), lr=0.1)) == []


def test_legacy_backward_hook_on_child_and_root() -> None:
    def hook(module: nn.Module, grad_input: Any, grad_output: Any) -> None:
        return None

    model = M.PowLogModel()
    model.logModel.register_backward_hook(hook)
    model.register_backward_hook(hook)
    found = of_kind(static_findings(model), FindingKind.LEGACY_BACKWARD_HOOK)
    assert sorted(f.path for f in found) == ["", "logModel"]
    assert "hook (test_doctor_static.py:" in found[0].message
    assert "model.register_full_backward_hook(hook)" in {f.fix.split(" (")[0] for f in found}


def test_full_or_removed_backward_hook_is_fine() -> None:
    model = M.PowLogModel()
    model.powModel.register_full_backward_hook(lambda m, gi, go: None)
    handle = model.logModel.register_backward_hook(lambda m, gi, go: None)
    handle.remove()  # the module keeps _is_full_backward_hook = False, with no hook left
    assert static_findings(model) == []


def test_modscope_legacy_hook_is_not_reported() -> None:
    session = D.session_for(M.PowLogModel())
    session.attach(HookSpec.parse("powModel:legacy-backward"))
    try:
        assert static_findings(session.model) == []
    finally:
        session.close()


def test_mode_mismatch_outermost_only() -> None:
    model = D.WithNorm()
    model.train()
    model.body.eval()
    model.body[0].train()  # inside the eval body, back in train mode: its own finding
    found = static_findings(model)
    assert kinds(found) == [("mode-mismatch", "body")]
    model.eval()
    assert static_findings(model) == []
    model.body[1].train()
    (f,) = static_findings(model)
    assert f.path == "body.1" and "train mode while the model is in eval mode" in f.message


def test_not_in_optimizer_grouped_by_module() -> None:
    model = D.WithNorm()
    optimizer = torch.optim.SGD(model.body[0].parameters(), lr=0.1)
    found = static_findings(model, optimizer)
    assert sorted(kinds(found)) == [("not-in-optimizer", "body.1"), ("not-in-optimizer", "body.3")]
    assert all(f.severity is Severity.ERROR for f in found)
    assert "torch.optim.SGD(model.parameters(), ...)" in found[0].fix
    twin = D.WithNorm()
    assert static_findings(twin, torch.optim.SGD(twin.parameters(), lr=0.1)) == []


def test_not_in_optimizer_single_parameter() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    optimizer = torch.optim.SGD([model[0].weight], lr=0.1)
    (f,) = static_findings(model, optimizer)
    assert (f.kind, f.path) == ("not-in-optimizer", "0.bias")


def test_optimizer_built_before_a_layer_was_replaced() -> None:
    model = D.WithNorm()
    optimizer = torch.optim.Adam(model.parameters())
    model.body[3] = nn.Linear(4, 1)
    found = static_findings(model, optimizer)
    assert sorted(kinds(found)) == [
        ("not-in-optimizer", "body.3"),
        ("stale-optimizer", "optimizer.param_groups[0]['params'][4]"),
    ]
    stale = of_kind(found, FindingKind.STALE_OPTIMIZER)[0]
    assert stale.paths == (
        "optimizer.param_groups[0]['params'][4]",
        "optimizer.param_groups[0]['params'][5]",
    )
    assert "[1, 4] float32" in stale.message


def test_optimizer_holding_an_unregistered_parameter_is_not_stale() -> None:
    model = M.PowParamDictModel()
    optimizer = torch.optim.SGD([model.powParamDict["powParam"]], lr=0.1)
    assert kinds(static_findings(model, optimizer)) == [("unregistered-parameter", "powParamDict")]


def test_frozen_in_optimizer_is_info() -> None:
    model = D.FrozenBackbone()
    (f,) = static_findings(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert (f.kind, f.severity, f.path) == ("frozen-in-optimizer", Severity.INFO, "backbone")
    assert "if p.requires_grad" in f.fix
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert static_findings(model, torch.optim.SGD(trainable, lr=0.1)) == []


def test_nonfinite_parameter_at_load_but_not_a_mask() -> None:
    model = D.MaskedAttention()
    assert static_findings(model) == []
    with torch.no_grad():
        model.lin.weight[0, 0] = float("nan")
    (f,) = static_findings(model)
    assert (f.kind, f.path, f.paths) == ("nonfinite", "lin.weight", ("lin.weight",))
    assert f.step is None and "at load" in f.message


def test_buffer_with_grad_fn_found_statically() -> None:
    model = M.PowLogBufferModel()
    model(torch.tensor(5.0, requires_grad=True), torch.tensor(3.0))
    found = static_findings(model)
    assert kinds(found) == [
        ("buffer-grad-history", "powModel.powBuff"),
        ("buffer-grad-history", "logModel.logBuff"),
    ]
    assert "grad_fn=AddBackward0" in found[1].message
    assert ".detach()" in found[1].fix and "torch.no_grad()" in found[1].fix


def test_every_kind_has_a_severity() -> None:
    assert set(SEVERITIES) == set(FindingKind)
    assert SEVERITIES[FindingKind.UNREGISTERED_TENSOR] is Severity.WARNING
    assert SEVERITIES[FindingKind.REUSED_MODULE] is Severity.INFO


class _Kernel(nn.Module):
    """A parameterless function module, as transformers keeps its hub kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class _ReadsMode(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.training else x * 0


class _StatelessTables(nn.Module):
    """Parameterless modules kept apart in plain containers: only the mode and hooks are lost."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self._kernel_funcs = {"rotary": _Kernel(), "scan": _Kernel()}
        self._drops = [nn.Dropout(0.1)]
        self._gates = (_ReadsMode(),)
        self._holder = [nn.Sequential(_Kernel(), nn.Dropout(0.2))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def test_unregistered_modules_without_state_are_judged_by_what_they_lose() -> None:
    found = {
        f.path: f
        for f in of_kind(static_findings(_StatelessTables()), FindingKind.UNREGISTERED_MODULE)
    }
    assert {p: f.severity for p, f in found.items()} == {
        "_kernel_funcs": Severity.INFO,
        "_drops": Severity.WARNING,
        "_gates": Severity.WARNING,
        "_holder": Severity.WARNING,  # a Dropout below a parameterless Sequential
    }
    kernels = found["_kernel_funcs"]
    assert kernels.paths == ("_kernel_funcs['rotary']", "_kernel_funcs['scan']")
    assert "state_dict(), parameters() and .to() lose nothing" in kernels.message
    assert "model.train()/model.eval()" in kernels.message
    assert "nothing to fix if they are kept apart on purpose" in kernels.fix
    assert "behaves differently in eval mode" in found["_gates"].message
    assert found["_drops"].fix.startswith("self._drops = nn.ModuleList([...])")


def test_a_module_with_parameters_in_a_plain_container_stays_an_error() -> None:
    model = _StatelessTables()
    model._kernel_funcs["proj"] = nn.Linear(2, 2)  # one member holds state: the whole dict loses it
    found = {f.path: f for f in static_findings(model)}
    assert found["_kernel_funcs"].severity == Severity.ERROR
    assert "the optimizer never sees their 2 parameters" in found["_kernel_funcs"].message
