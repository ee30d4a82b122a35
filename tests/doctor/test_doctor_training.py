"""The doctor's training kinds: update-ratio, training-in-eval, grad-accumulation, torch-warning.

Each fires on its case and stays silent on a near-twin and on the common architectures trained
the usual way; they come from the iterations a session runs anyway (`AfterStepRules`), and through
`check --json` and `run --json`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modscope.cli import main
from modscope.core.contract.findings import Finding, FindingKind
from modscope.core.doctor import AfterStepRules, rules
from modscope.core.script.warning_capture import WarningCapture
from modscope.core.session import Session
from tests import training_models as T
from tests.doctor_models import output_sum, session_for
from tests.helpers import CLEAN_RUNS, ROOT, example

TRAINING_KINDS = {
    FindingKind.UPDATE_RATIO,
    FindingKind.TRAINING_IN_EVAL,
    FindingKind.GRAD_ACCUMULATION,
    FindingKind.TORCH_WARNING,
}


def watch(session: Session, steps: int, *, static: bool = False) -> list[Finding]:
    """The findings of `steps` iterations as `run` and the app see them (with the static ones
    of step 0 when `static`)."""
    watcher = AfterStepRules(session)
    found = watcher.initial() if static else []
    for _ in range(steps):
        result = session.run_iteration()
        assert result.error is None, result.error
        assert result.record is not None
        found += watcher.after_step(result.record)
    return found


def of_kind(found: list[Finding], kind: FindingKind) -> list[Finding]:
    return [f for f in found if f.kind is kind]


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def regression() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, generator=g)
    return x, x.sum(dim=1, keepdim=True)


# -- update-ratio ----------------------------------------------------------------------------


def test_the_ratio_read_is_the_update_over_the_weight_computed_by_hand() -> None:
    # W = I (2x2), x = (1, 2), loss = sum(W x): dL/dW = [[1, 2], [1, 2]]; SGD lr 0.1 moves W by
    # 0.1 * that, of norm 0.1 * sqrt(10) = 0.316228, against |W| = sqrt(2): 0.223607.
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(2))
    session = session_for(
        layer,
        inputs=torch.tensor([[1.0, 2.0]]),
        loss_fn=output_sum,
        optimizer=torch.optim.SGD(layer.parameters(), lr=0.1),
    )
    record = session.run_iteration().record
    assert record is not None
    assert record.diff.rel_change["weight"] == pytest.approx(math.sqrt(10) / 10 / math.sqrt(2))
    # Above 0.2, but the loss falls every step (a linear loss under SGD): no alarm.
    assert of_kind(watch(session, 4), FindingKind.UPDATE_RATIO) == []


def _two_groups(model: nn.Module, body_lr: float, head_lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": body_lr},
            {"params": model[2].parameters(), "lr": head_lr},
        ]
    )


def test_a_layer_whose_learning_rate_is_far_too_high_is_named() -> None:
    model = mlp()
    x, y = regression()
    optimizer = _two_groups(model, body_lr=0.01, head_lr=3.0)
    session = session_for(
        model, inputs=x, loss_fn=lambda out: F.mse_loss(out, y), optimizer=optimizer
    )
    found = of_kind(watch(session, 3), FindingKind.UPDATE_RATIO)
    assert [(f.path, f.step) for f in found] == [("2.weight", 3)]
    assert "2.weight of 2 (Linear) changes by" in found[0].message
    assert "above 0.2 while the loss did not fall" in found[0].message
    assert "learning rate (3) is too high for this layer" in found[0].message
    assert '"params": model[2].parameters(), "lr": 1e-4' in found[0].fix


def test_the_same_layer_at_a_usual_learning_rate_is_quiet() -> None:
    model = mlp()
    x, y = regression()
    optimizer = _two_groups(model, body_lr=0.01, head_lr=0.05)
    session = session_for(
        model, inputs=x, loss_fn=lambda out: F.mse_loss(out, y), optimizer=optimizer
    )
    assert of_kind(watch(session, 6), FindingKind.UPDATE_RATIO) == []


def test_a_layer_that_barely_moves_is_named_and_its_twin_is_not() -> None:
    x, y = regression()
    found = {}
    for head_lr in (1e-9, 1e-2):
        model = mlp()
        optimizer = _two_groups(model, body_lr=0.01, head_lr=head_lr)
        session = session_for(
            model, inputs=x, loss_fn=lambda out: F.mse_loss(out, y), optimizer=optimizer
        )
        found[head_lr] = of_kind(watch(session, 4), FindingKind.UPDATE_RATIO)
    assert [f.path for f in found[1e-9]] == ["2.weight"]
    assert "below 1e-06: this layer barely learns" in found[1e-9][0].message
    assert "(1e-09)" in found[1e-9][0].message
    assert found[1e-2] == []


def test_a_learning_rate_too_high_everywhere_is_one_finding_listing_the_weights() -> None:
    model = mlp()
    x, y = regression()
    session = session_for(
        model,
        inputs=x,
        loss_fn=lambda out: F.mse_loss(out, y),
        optimizer=torch.optim.SGD(model.parameters(), lr=3.0),
    )
    found = of_kind(watch(session, 3), FindingKind.UPDATE_RATIO)
    assert len(found) == 1 and found[0].paths == ("0.weight", "2.weight")
    assert found[0].message.startswith("2 layer weights change by more than 0.2")


class WithSkippedWeights(nn.Module):
    """Weights the rule leaves alone, each trained at a tiny learning rate: an embedding (rows
    out of the batch never move), a zero-initialised projection, biases, a frozen layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 4)
        self.norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.zero = nn.Linear(4, 4)
        nn.init.zeros_(self.zero.weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.embed(tokens))
        return self.zero(self.frozen(h)) + h


def test_embeddings_biases_norms_frozen_and_zero_initialised_weights_are_left_out() -> None:
    torch.manual_seed(0)
    model = WithSkippedWeights()
    trainable = [p for p in model.parameters() if p.requires_grad]
    session = session_for(
        model,
        inputs=torch.tensor([[1, 2, 3]]),
        loss_fn=lambda out: out.pow(2).mean(),
        optimizer=torch.optim.SGD(trainable, lr=1e-9),
    )
    assert of_kind(watch(session, 5), FindingKind.UPDATE_RATIO) == []


# -- training-in-eval ------------------------------------------------------------------------


class NormDropModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class NoisyInTraining(nn.Module):
    """A module of the user's whose forward reads `self.training`."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = x + 0.1 * torch.randn_like(x)
        return self.lin(x)


def _trained_session(model: nn.Module, *, loss_fn: Any = output_sum) -> Session:
    x, _ = regression()
    return session_for(
        model, inputs=x, loss_fn=loss_fn, optimizer=torch.optim.SGD(model.parameters(), lr=0.01)
    )


def test_training_in_eval_names_the_modules_that_behave_differently() -> None:
    torch.manual_seed(0)
    model = NormDropModel().eval()
    found = of_kind(watch(_trained_session(model), 2), FindingKind.TRAINING_IN_EVAL)
    assert len(found) == 1 and found[0].step == 1 and found[0].path == ""
    assert found[0].paths == ("body.1", "body.3")
    assert "body.1 (BatchNorm1d) and body.3 (Dropout)" in found[0].message
    assert found[0].fix.startswith("call model.train()")


def test_training_in_train_mode_is_quiet() -> None:
    torch.manual_seed(0)
    found = watch(_trained_session(NormDropModel()), 2)
    assert of_kind(found, FindingKind.TRAINING_IN_EVAL) == []


def test_a_users_module_reading_self_training_counts() -> None:
    torch.manual_seed(0)
    found = of_kind(
        watch(_trained_session(NoisyInTraining().eval()), 1), FindingKind.TRAINING_IN_EVAL
    )
    assert [f.message.count("the model (NoisyInTraining)") for f in found] == [1]


def test_eval_mode_changes_nothing_in_a_plain_mlp() -> None:
    found = watch(_trained_session(mlp().eval()), 2)
    assert of_kind(found, FindingKind.TRAINING_IN_EVAL) == []


def test_eval_asked_for_through_modscope_is_no_finding() -> None:
    torch.manual_seed(0)
    session = _trained_session(NormDropModel())
    session.set_training(False)  # `run --eval`, the app's key
    assert of_kind(watch(session, 2), FindingKind.TRAINING_IN_EVAL) == []


def test_a_submodule_in_eval_under_a_training_root_is_mode_mismatch_only() -> None:
    torch.manual_seed(0)
    model = NormDropModel()
    model.body[1].eval()
    found = watch(_trained_session(model), 2, static=True)
    assert [(f.kind, f.path) for f in found] == [(FindingKind.MODE_MISMATCH, "body.1")]


def test_inference_in_eval_mode_is_quiet() -> None:
    torch.manual_seed(0)
    found = watch(_trained_session(NormDropModel().eval(), loss_fn=None), 2)
    assert found == []


# -- grad-accumulation -----------------------------------------------------------------------


def _train_step_session(name: str, clear: str, *, sgd: bool = False) -> Session:
    model, batch, loss_of = T.TASKS[name].build()
    optimizer = (
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        if sgd
        else torch.optim.Adam(model.parameters(), lr=1e-3)
    )
    step = T.train_step_for(model, batch, loss_of, optimizer, clear=clear)
    return session_for(model, train_step=step, optimizer=optimizer)


@pytest.mark.parametrize("name", list(T.TASKS))
def test_gradients_never_cleared_are_found_at_the_third_step(name: str) -> None:
    found = of_kind(watch(_train_step_session(name, "none"), 4), FindingKind.GRAD_ACCUMULATION)
    assert [f.step for f in found] == [3]
    assert "the gradients are never cleared" in found[0].message
    assert "optimizer.zero_grad()" in found[0].fix


@pytest.mark.parametrize("clear", ["set_to_none", "in_place", "accumulate", "accumulate_in_place"])
@pytest.mark.parametrize("name", list(T.TASKS))
@pytest.mark.parametrize("sgd", [False, True], ids=["adam", "sgd_momentum"])
def test_gradients_cleared_each_step_or_every_k_steps_are_quiet(
    name: str, clear: str, sgd: bool
) -> None:
    found = watch(_train_step_session(name, clear, sgd=sgd), 10)
    assert {f.kind for f in found} & TRAINING_KINDS == set()


def test_the_growth_read_is_the_global_gradient_norm_of_each_step() -> None:
    # A linear loss has the same gradient at every step: never cleared, .grad holds k times it.
    layer = nn.Linear(2, 1, bias=False)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.01)
    x = torch.tensor([[3.0, 4.0]])

    def train_step(model: nn.Module) -> torch.Tensor:
        loss = model(x).sum()
        loss.backward()
        optimizer.step()
        return loss

    found = watch(session_for(layer, train_step=train_step, optimizer=optimizer), 3)
    assert [f.kind for f in found] == [FindingKind.GRAD_ACCUMULATION]
    assert "(5, 10, 15 at steps 1-3)" in found[0].message


# -- torch-warning ---------------------------------------------------------------------------


def broadcasting_loss(out: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, torch.zeros(out.shape[0]))  # the warning's line


class WarnsItself(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warnings.warn("the script's own words", UserWarning, stacklevel=1)
        return self.lin(x)


class CopiesATensor(nn.Module):
    """Warned by PyTorch's C++ core, from a line of the user's own."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.tensor(x))  # the C++ warning's line


def _line_of(text: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_a_broadcasting_loss_is_a_torch_warning_at_the_users_line() -> None:
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        found = watch(_trained_session(mlp(), loss_fn=broadcasting_loss), 2)
    found = of_kind(found, FindingKind.TORCH_WARNING)
    assert len(found) == 1 and found[0].step == 1
    where = f"{os.path.relpath(__file__)}:{_line_of('# the warning' + chr(39) + 's line')}"
    assert f"PyTorch warned at step 1, at {where}" in found[0].message
    assert "UserWarning: Using a target size (torch.Size([16]))" in found[0].message
    # Still shown to the user, at every step, as without modscope.
    assert sum("Using a target size" in str(w.message) for w in shown) == 2


def test_a_matching_target_is_quiet() -> None:
    found = watch(_trained_session(mlp(), loss_fn=lambda out: F.mse_loss(out, out * 0)), 2)
    assert of_kind(found, FindingKind.TORCH_WARNING) == []


def test_a_warning_from_torchs_cpp_core_names_the_users_line() -> None:
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        found = of_kind(watch(_trained_session(CopiesATensor()), 1), FindingKind.TORCH_WARNING)
    line = _line_of("# the C++ warning" + chr(39) + "s line")
    assert [f"{os.path.relpath(__file__)}:{line}" in f.message for f in found] == [True]


def test_the_scripts_own_warning_reaches_the_user_and_is_no_finding() -> None:
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        found = watch(_trained_session(WarnsItself()), 1)
    assert of_kind(found, FindingKind.TORCH_WARNING) == []
    assert [str(w.message) for w in shown] == ["the script's own words"]


def test_an_ignored_warning_is_neither_shown_nor_reported() -> None:
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("ignore")
        found = watch(_trained_session(mlp(), loss_fn=broadcasting_loss), 1)
    assert shown == [] and of_kind(found, FindingKind.TORCH_WARNING) == []


def test_the_legacy_hook_warning_is_shown_and_left_to_legacy_backward_hook() -> None:
    model = mlp()
    model[2].register_backward_hook(lambda module, grad_in, grad_out: None)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        found = watch(_trained_session(model), 2, static=True)
    assert [f.kind for f in found] == [FindingKind.LEGACY_BACKWARD_HOOK]
    assert any("non-full backward hook" in str(w.message) for w in shown)


def test_capture_hands_the_hook_back_and_leaves_other_threads_alone() -> None:
    capture = WarningCapture()
    before = warnings.showwarning
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with capture.capturing():
            other = threading.Thread(target=lambda: torch.tensor(torch.ones(1)))
            other.start()
            other.join()
            torch.tensor(torch.ones(1))
    assert warnings.showwarning is before
    taken = capture.take()
    assert [(w.category, w.from_torch) for w in taken] == [("UserWarning", True)]
    assert capture.take() == []


# -- the common architectures ------------------------------------------------------------------


OPTIMIZERS = {
    "adam": lambda params: torch.optim.Adam(params, lr=1e-3),
    "adamw": lambda params: torch.optim.AdamW(params, lr=3e-4),
    "sgd_momentum": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1),
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("name", list(T.TASKS))
def test_common_architectures_trained_the_usual_way_raise_none_of_these(
    name: str, optimizer: str
) -> None:
    model, batch, loss_of = T.TASKS[name].build()
    session = session_for(
        model,
        inputs=T.model_input(batch),
        loss_fn=loss_of,
        optimizer=OPTIMIZERS[optimizer](model.parameters()),
    )
    found = watch(session, 8)
    assert {f.kind for f in found} & TRAINING_KINDS == set()


@pytest.mark.parametrize("name", list(CLEAN_RUNS))
def test_torchs_own_layers_raise_none_of_these_over_eight_steps(name: str) -> None:
    """The clean models of the other doctor tests (LSTM, attention, BatchNorm, weight norm,
    pruning, parametrizations, tied embeddings...), four times as many steps as they run."""
    make, inputs, _ = CLEAN_RUNS[name]
    torch.manual_seed(0)
    model = make()
    trainable = [p for p in model.parameters() if p.requires_grad]
    session = session_for(
        model, inputs=inputs, loss_fn=output_sum, optimizer=torch.optim.Adam(trainable)
    )
    assert {f.kind for f in watch(session, 8)} & TRAINING_KINDS == set()


# -- through the command line ------------------------------------------------------------------


def _json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def test_check_json_carries_the_examples_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", example("health.py"), "--json"]) == 0
    report = _json(capsys)
    kinds = [(f["kind"], f["severity"], f["step"]) for f in report["findings"]]
    assert kinds == [("training-in-eval", "warning", 1), ("torch-warning", "warning", 1)]
    assert report["findings"][0]["paths"] == ["body.1", "body.3"]
    assert "examples/health.py:" in report["findings"][1]["message"]


def test_check_json_on_the_fixed_example_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", example("health_fixed.py"), "--json", "--steps", "5"]) == 0
    assert _json(capsys)["findings"] == []


def test_run_eval_asks_for_eval_and_keeps_the_warning(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", example("health.py"), "--json", "--steps", "2"]
    assert main([*argv, "--eval"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [f["kind"] for f in lines if f["event"] == "finding"] == ["torch-warning"]


def test_rules_thresholds_are_the_documented_ones() -> None:
    doctor = (ROOT / "docs" / "doctor.md").read_text()
    for kind in TRAINING_KINDS:
        assert f"| `{kind.value}` |" in doctor
    assert rules.UPDATE_RATIO_HIGH == 0.2 and "**0.2**" in doctor
    assert rules.UPDATE_RATIO_LOW == 1e-6 and "**1e-6**" in doctor
