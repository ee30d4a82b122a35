"""`modscope.testing.assert_healthy`: the doctor on live objects, as an assertion."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from modscope.core.script.loader import load_script
from modscope.testing import assert_healthy
from tests.helpers import example


def _healthy(name: str, **options: object) -> None:
    s = load_script(example(name))
    assert_healthy(
        s.model,
        inputs=s.inputs,
        loss_fn=s.loss_fn,
        optimizer=s.optimizer,
        compute_loss=s.compute_loss,
        train_step=s.train_step,
        **options,
    )


@pytest.mark.parametrize(
    ("example", "kind"),
    [
        ("buffers.py", "buffer-grad-history"),
        ("containers.py", "unregistered-module"),
        ("dropout.py", "eval-nondeterministic"),
        ("param_dict.py", "unregistered-parameter"),
    ],
)
def test_each_doctor_example_fails_with_its_finding_and_fix(example: str, kind: str) -> None:
    with pytest.raises(AssertionError) as failed:
        _healthy(example)
    message = str(failed.value)
    assert f"error {kind}" in message
    assert "fix: " in message
    # Where to look: the example's own file and the line of a class defined there.
    assert f"examples/{example}:" in message.replace(os.sep, "/")
    # And that kind, allowed, passes (each of these examples has one error only).
    _healthy(example, allow=[kind])


@pytest.mark.parametrize(
    "example",
    [
        "buffers_fixed.py",
        "containers_fixed.py",
        "dropout_fixed.py",
        "param_dict_fixed.py",
        "health_fixed.py",
        "layer_health_fixed.py",
    ],
)
def test_the_fixed_examples_pass_even_strict(example: str) -> None:
    _healthy(example, strict=True)


def test_warnings_fail_only_when_strict() -> None:
    _healthy("layer_health.py")
    with pytest.raises(AssertionError) as failed:
        _healthy("layer_health.py", strict=True)
    assert "warning dead-units" in str(failed.value)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(self.fc(x))).sum()


class _Closure(nn.Module):
    """A forward through a lambda over its own submodules: a deep copy would run the
    original's layers, so the doctor runs on the model itself and restores it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        me = self
        self.f = lambda x: me.bn(me.fc(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x).sum()


@pytest.mark.parametrize("make", [_Net, _Closure], ids=["copy", "restore"])
def test_the_model_and_optimizer_are_bit_identical_afterwards(make) -> None:
    torch.manual_seed(0)
    model = make()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    model(x).backward()  # the user's own step first: grads and Adam state to keep
    optimizer.step()
    model(x).backward()
    state = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    opt_state = copy.deepcopy(optimizer.state_dict())
    rng = torch.get_rng_state()
    modes = [m.training for m in model.modules()]

    assert_healthy(model, inputs=x, optimizer=optimizer, steps=3, strict=True)

    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))
    opt_after = optimizer.state_dict()
    assert opt_after["param_groups"] == opt_state["param_groups"]
    for key, slot in opt_state["state"].items():
        for name, value in slot.items():
            assert torch.equal(value, opt_after["state"][key][name])
    assert torch.equal(rng, torch.get_rng_state())
    assert modes == [m.training for m in model.modules()]


def test_an_iteration_that_raises_fails_with_where() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(AssertionError) as failed:
        assert_healthy(model, inputs=torch.zeros(2, 5), loss_fn=lambda out: out.sum())
    assert "an iteration raised" in str(failed.value)
    assert "RuntimeError" in str(failed.value)


def test_a_misspelt_allowed_kind_is_refused_with_the_kinds() -> None:
    with pytest.raises(ValueError, match="unused-parameter"):
        assert_healthy(nn.Linear(2, 2), allow=["unused-param"])
