"""The doctor's `dead-units` and `saturated`: each fires on its pitfall and stays silent on a
near-twin, on torch's own layers and on well-formed models of common architectures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modscope.core.contract.findings import FindingKind, Severity
from modscope.core.doctor import run_checks
from modscope.core.session import Session
from tests import doctor_models as D
from tests import models as M
from tests.helpers import example

LAYER_KINDS = {FindingKind.DEAD_UNITS, FindingKind.SATURATED}


def layer_findings(session: Session, steps: int = 3):
    result = run_checks(session, steps=steps)
    assert result.error is None, result.error.describe()
    assert result.steps_run == steps
    return [f for f in result.findings if f.kind in LAYER_KINDS]


def relu_after(bias: float, inputs, steps: int = 1, lr: float = 0.01):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():
        model[0].weight.fill_(0.1)
        model[0].bias.fill_(bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    return D.session_for(model, inputs=inputs, loss_fn=D.output_sum, optimizer=optimizer)


def test_the_example_has_dead_units_at_act_and_a_saturated_gate():
    session = Session.load(example("layer_health.py"))
    found = {(f.kind, f.path): f for f in layer_findings(session)}
    assert set(found) == {(FindingKind.DEAD_UNITS, "act"), (FindingKind.SATURATED, "gate")}
    dead = found[(FindingKind.DEAD_UNITS, "act")]
    assert dead.severity is Severity.WARNING and dead.step == 3
    assert "act (ReLU)" in dead.message and "each of the 3 steps" in dead.message
    assert "nn.LeakyReLU" in dead.fix
    gate = found[(FindingKind.SATURATED, "gate")]
    assert gate.message.startswith("85% of the outputs of gate (Sigmoid)")
    assert "BCEWithLogitsLoss" in gate.fix


def test_the_fixed_example_has_neither():
    assert layer_findings(Session.load(example("layer_health_fixed.py"))) == []


def test_dead_units_fires_when_every_relu_output_is_zero():
    # x >= 0, weights 0.1, bias -5: every pre-activation is below zero.
    session = relu_after(-5.0, torch.rand(6, 4))
    (f,) = layer_findings(session, steps=1)
    assert (f.kind, f.path) == (FindingKind.DEAD_UNITS, "1")


def test_a_relu_with_one_live_output_is_not_dead():
    # The twin: one sample in six lifts one pre-activation above zero.
    x = torch.rand(6, 4)
    x[0] = 20.0
    assert layer_findings(relu_after(-5.0, x), steps=1) == []


def test_a_relu_dead_on_one_batch_but_alive_on_the_next_is_not_reported():
    batches = [torch.rand(6, 4), torch.full((6, 4), 20.0)]
    assert layer_findings(relu_after(-5.0, batches), steps=2) == []


def test_an_all_zero_output_that_is_no_activation_is_not_reported():
    # A zero-initialised layer (a LoRA-style adapter, a residual branch) starts at exactly zero
    # by design.
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    nn.init.zeros_(model[1].weight)
    nn.init.zeros_(model[1].bias)
    session = D.session_for(
        model,
        inputs=torch.rand(6, 4),
        loss_fn=D.output_sum,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
    )
    assert layer_findings(session, steps=1) == []


def saturating(activation: nn.Module, scale: float):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), activation, nn.Linear(64, 1))
    with torch.no_grad():
        model[0].weight.mul_(scale)
    inputs = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    return D.session_for(model, inputs=inputs, loss_fn=D.output_sum, optimizer=optimizer)


@pytest.mark.parametrize("activation", [nn.Sigmoid, nn.Tanh], ids=["sigmoid", "tanh"])
def test_saturated_fires_on_large_logits_and_not_on_the_default_scale(activation):
    (f,) = layer_findings(saturating(activation(), 40.0))
    assert (f.kind, f.path) == (FindingKind.SATURATED, "1")
    assert layer_findings(saturating(activation(), 1.0)) == []


def test_saturated_needs_most_outputs_at_the_rails():
    # Near-twins about the threshold: logits 6 times too large put 49% of the tanh's outputs at
    # the rails (not most), 8 times 60%.
    assert layer_findings(saturating(nn.Tanh(), 6.0)) == []
    (f,) = layer_findings(saturating(nn.Tanh(), 8.0))
    assert f.message.startswith("60% of the outputs of 1 (Tanh)")


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU: a ResNet basic block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(x + self.bn2(self.conv2(h)))


def resnet_session() -> Session:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        ResidualBlock(8), ResidualBlock(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 10),
    )  # fmt: skip
    # zero_init_residual, as torchvision offers: each block's branch starts at exactly zero.
    for block in (model[3], model[4]):
        nn.init.zeros_(block.bn2.weight)
    images = torch.randn(4, 3, 8, 8)
    labels = torch.tensor([0, 3, 5, 9])
    return D.session_for(
        model,
        inputs=images,
        loss_fn=lambda out: nn.functional.cross_entropy(out, labels),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
    )


def lstm_session() -> Session:
    torch.manual_seed(0)
    model = M.lstm()
    inputs = torch.randn(5, 2, 3)
    return D.session_for(
        model,
        inputs=inputs,
        loss_fn=D.output_sum,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
    )


def encoder_session() -> Session:
    torch.manual_seed(0)
    model = M.transformer_encoder()
    return D.session_for(
        model,
        inputs=torch.randn(2, 6, 8),
        loss_fn=D.output_sum,
        optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
    )


def torch_layers_session() -> Session:
    torch.manual_seed(0)
    model = nn.Sequential(
        M.batchnorm_dropout(), nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 8), nn.Tanh(),
        nn.Linear(8, 8), nn.ReLU6(), nn.Linear(8, 4), nn.Sigmoid(),
    )  # fmt: skip
    return D.session_for(
        model,
        inputs=torch.randn(8, 4),
        loss_fn=D.output_sum,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
    )


@pytest.mark.parametrize(
    "make",
    [
        resnet_session,
        lambda: Session.load(example("cnn.py")),
        lambda: Session.load(example("tiny_lm.py")),
        lstm_session,
        encoder_session,
        torch_layers_session,
    ],
    ids=["resnet", "cnn", "transformer-lm", "lstm", "transformer-encoder", "torch-layers"],
)
def test_no_alarm_on_well_formed_models_over_a_few_steps(make):
    assert layer_findings(make(), steps=3) == []
