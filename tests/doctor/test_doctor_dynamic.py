"""The doctor's checks that run the model: each pitfall and its twin, on torch's own layers too."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modscope.core.contract.findings import Finding, Severity
from modscope.core.contract.script_names import MISSING
from modscope.core.doctor import AfterStepRules, run_checks
from modscope.core.doctor.probes import eval_nondeterminism
from modscope.core.session import Session
from tests import doctor_models as D
from tests import models as M
from tests.helpers import CLEAN_RUNS


def kinds(findings: tuple[Finding, ...] | list[Finding]) -> list[tuple[str, str]]:
    return [(f.kind, f.path) for f in findings]


def check(session: Session, steps: int = 1) -> list[tuple[str, str]]:
    result = run_checks(session, steps=steps)
    assert result.error is None, result.error.describe()
    return kinds(result.findings)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01)


X2 = torch.ones(4, 2)
X4 = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))


def article(model: nn.Module, **kwargs: Any) -> Session:
    return D.session_for(
        model, inputs=M.article_inputs(), loss_fn=lambda z: (z - 10.0) ** 2, **kwargs
    )


# -- eval-nondeterministic ----------------------------------------------------------------------


def test_functional_dropout_in_a_child_is_named() -> None:
    model = D.DropoutIn("functional")
    found = check(D.session_for(model, inputs=X4, loss_fn=D.output_sum, optimizer=sgd(model)))
    assert found == [("eval-nondeterministic", "body.1")]


def test_functional_dropout_in_the_root() -> None:
    class Root(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.dropout(self.lin(x), 0.5)

    (f,) = run_checks(D.session_for(Root(), inputs=X4, loss_fn=D.output_sum)).findings
    assert (f.kind, f.path, f.severity) == ("eval-nondeterministic", "", Severity.ERROR)
    assert "training=self.training" in f.fix


@pytest.mark.parametrize("style", ["functional-training", "module"])
def test_training_aware_dropout_is_fine(style: str) -> None:
    model = D.DropoutIn(style)
    assert check(D.session_for(model, inputs=X4, loss_fn=D.output_sum, optimizer=sgd(model))) == []


def test_randomness_outside_the_model_is_not_its_fault() -> None:
    model = D.DropoutIn("module")

    def compute_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return model(batch + 0.1 * torch.randn_like(batch)).sum()  # augmentation

    assert check(D.session_for(model, inputs=X4, compute_loss=compute_loss)) == []


def test_state_updated_in_eval_is_not_randomness() -> None:
    # plain_tensor.py's model updates its running averages whatever the mode.
    session = D.session_for(M.PowLogPlainTensorModel(), inputs=M.article_inputs(), loss_fn=None)
    result = run_checks(session, steps=3)
    assert {f.kind for f in result.findings} == {"unregistered-tensor"}


def test_eval_probe_leaves_model_in_eval_and_state_untouched() -> None:
    model = M.PowLogPlainTensorModel()
    before = model.logModel.logBuff
    session = D.session_for(model, inputs=M.article_inputs())
    assert eval_nondeterminism(model, session.script) is None
    assert not model.training
    assert model.logModel.logBuff is before


# -- reused-module ------------------------------------------------------------------------------


def test_module_called_twice_article() -> None:
    model = D.powlog_twice()
    result = run_checks(article(model, optimizer=sgd(model)))
    assert kinds(result.findings) == [("reused-module", "powModel"), ("reused-module", "logModel")]
    f = result.findings[0]
    assert f.severity is Severity.INFO and f.step == 1
    assert "runs 2 times in one forward" in f.message


def test_reused_block_reported_once_without_its_children_or_parameterless_modules() -> None:
    model = D.TwiceCalled()
    assert check(D.session_for(model, inputs=X2, loss_fn=D.output_sum)) == [
        ("reused-module", "block")
    ]


def test_parameterless_module_twice_is_fine() -> None:
    model = D.OnceEach()
    assert check(D.session_for(model, inputs=X2, loss_fn=D.output_sum)) == []


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointing_is_not_reuse(reentrant: bool) -> None:
    model = D.Checkpointed(reentrant)
    assert check(D.session_for(model, inputs=X2, loss_fn=D.output_sum, optimizer=sgd(model))) == []


def test_two_forwards_per_iteration_are_not_reuse() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    optimizer = sgd(model)

    def train_step(model: nn.Module) -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(X2).sum() + model(2 * X2).sum()  # two micro-batches
        loss.backward()
        optimizer.step()
        return loss

    found = check(D.session_for(model, inputs=X2, train_step=train_step, optimizer=optimizer))
    assert found == []


# -- unused-parameter ---------------------------------------------------------------------------


def test_unused_layer_deep_and_frozen_twin() -> None:
    model = D.UnusedLayer()
    result = run_checks(D.session_for(model, inputs=X2, loss_fn=D.output_sum, optimizer=sgd(model)))
    found = [f for f in result.findings if f.kind == "unused-parameter"]
    assert kinds(found) == [("unused-parameter", "body.extra")]
    assert found[0].paths == ("body.extra.weight", "body.extra.bias")
    assert found[0].severity is Severity.WARNING and found[0].step == 1
    assert "model.body.extra.requires_grad_(False)" in found[0].fix


def test_unused_single_parameter() -> None:
    model = D.UnusedBias()
    assert check(D.session_for(model, inputs=X2, loss_fn=D.output_sum)) == [
        ("unused-parameter", "bias")
    ]


def test_no_unused_when_no_gradient_at_all() -> None:
    model = D.UnusedLayer()
    # Forward only, and a train_step that clears gradients: nothing to tell unused ones by.
    assert check(D.session_for(model, inputs=X2, loss_fn=None)) == []

    def train_step(m: nn.Module) -> torch.Tensor:
        loss = m(X2).sum()
        loss.backward()
        m.zero_grad(set_to_none=True)
        return loss

    assert check(D.session_for(D.UnusedLayer(), inputs=X2, train_step=train_step)) == []


# -- buffer-grad-history, nonfinite, gradient scale ---------------------------------------------


def test_buffer_history_after_a_step() -> None:
    model = D.RunningMean(detach=False)
    session = D.session_for(model, inputs=X2, loss_fn=None)
    result = run_checks(session, steps=2)
    assert kinds(result.findings) == [("buffer-grad-history", "mean")]
    assert result.findings[0].step == 1
    twin = D.RunningMean(detach=True)
    assert check(D.session_for(twin, inputs=X2, loss_fn=D.output_sum, optimizer=sgd(twin))) == []


def test_article_buffers_forward_only() -> None:
    session = D.session_for(M.PowLogBufferModel(), inputs=M.article_inputs(), loss_fn=None)
    assert check(session) == [("buffer-grad-history", "logModel.logBuff")]


def test_nan_loss_names_the_first_module() -> None:
    model = D.LogOfNegative(shift=100.0)
    result = run_checks(
        D.session_for(model, inputs=X2, loss_fn=D.output_sum, optimizer=sgd(model)), steps=3
    )
    assert result.steps_run == 3 and result.error is None
    (f,) = result.findings
    assert (f.kind, f.path, f.step) == ("nonfinite", "body.1", 1)
    assert "the loss is nan at step 1" in f.message and "body.1 (Log)" in f.message


def test_finite_loss_and_masks_are_fine() -> None:
    model = D.LogOfNegative(shift=-100.0)
    assert check(D.session_for(model, inputs=X2, loss_fn=D.output_sum, optimizer=sgd(model))) == []
    masked = D.MaskedAttention()
    x = torch.randn(2, 3, 4)
    assert check(D.session_for(masked, inputs=x, loss_fn=D.output_sum, optimizer=sgd(masked))) == []


def test_infinite_gradients_and_parameters() -> None:
    model = D.Scaled(1e38)
    session = D.session_for(
        model, inputs=torch.full((2, 2), 1e10), loss_fn=D.output_sum, optimizer=sgd(model)
    )
    found = {k for k, _ in check(session, steps=2)}
    assert "nonfinite" in found


def test_exploding_and_vanishing_gradients() -> None:
    steep = D.Scaled(1e6)
    found = check(D.session_for(steep, inputs=X2, optimizer=sgd(steep)))
    assert found == [("exploding-gradient", "")]
    flat = D.Scaled(1e-14, offset=1.0)
    found = check(D.session_for(flat, inputs=X2, optimizer=sgd(flat)))
    assert found == [("vanishing-gradient", "")]
    # Tiny gradients of a loss that is itself tiny: converged, not vanishing.
    converged = D.Scaled(1e-14)
    assert check(D.session_for(converged, inputs=X2, optimizer=sgd(converged))) == []
    ordinary = D.Scaled(1.0)
    assert check(D.session_for(ordinary, inputs=X2, optimizer=sgd(ordinary))) == []


# -- no false alarms ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CLEAN_RUNS))
def test_clean_models_stay_quiet(name: str) -> None:
    make, inputs, expected = CLEAN_RUNS[name]
    model = make()
    trainable = [p for p in model.parameters() if p.requires_grad]
    session = D.session_for(
        model, inputs=inputs, loss_fn=D.output_sum, optimizer=torch.optim.Adam(trainable)
    )
    assert check(session, steps=2) == expected


def test_compiled_and_forwardless_models_run_static_checks_only() -> None:
    result = run_checks(D.session_for(M.compiled_powlog()))
    assert result.findings == () and result.steps_run == 0
    assert "only the static checks ran" in result.notes[0]


# -- AfterStepRules: what `run` and the app use ---------------------------------------------------


def test_watcher_reports_each_finding_once_without_extra_forwards() -> None:
    model = D.LogOfNegative(shift=100.0)
    model.extra = nn.Linear(1, 1)  # unused
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(1))
    session = D.session_for(model, inputs=X2, loss_fn=D.output_sum, optimizer=sgd(model))
    watcher = AfterStepRules(session)
    assert watcher.initial() == []
    per_step = []
    found: list[Finding] = []
    for _ in range(3):
        result = session.run_iteration()
        assert result.record is not None
        new = watcher.after_step(result.record)
        per_step.append(kinds(new))
        found += new
    assert per_step == [
        [("nonfinite", ""), ("unused-parameter", "extra")],
        [],
        [],
    ]
    assert len(calls) == 3
    assert [f.step for f in found] == [1, 1]


def test_watcher_initial_is_step_zero() -> None:
    session = D.session_for(M.PowLogListModel(), inputs=M.article_inputs())
    (f,) = AfterStepRules(session).initial()
    assert (f.kind, f.step) == ("unregistered-module", 0)


def test_watcher_sees_a_parameter_turn_nan() -> None:
    model = nn.Sequential(nn.Linear(2, 1))
    session = D.session_for(model, inputs=X2, loss_fn=D.output_sum, optimizer=sgd(model))
    watcher = AfterStepRules(session)
    assert watcher.after_step(session.run_iteration().record) == []  # type: ignore[arg-type]
    with torch.no_grad():
        model[0].weight.fill_(float("inf"))
    found = watcher.after_step(session.run_iteration().record)  # type: ignore[arg-type]
    assert {f.message.split(" at step")[0] for f in found} >= {
        "the loss is inf",
        "1 parameter holds NaN/Inf",
    }
    assert all(f.step == 2 for f in found)


def test_no_inputs_means_static_only() -> None:
    session = D.session_for(D.ListOfLayers(), inputs=MISSING)
    result = run_checks(session)
    assert kinds(result.findings) == [("unregistered-module", "blocks")]
    assert result.steps_run == 0
