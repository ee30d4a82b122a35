"""Per-module statistics (core.layers.collector): values checked by hand, and the observer rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from modscope.core.contract.hook_notes import LAYER_STATISTICS
from modscope.core.contract.layer_types import Activation
from modscope.core.hooks.listing import list_hooks
from modscope.core.layers.collector import LayerCollector
from modscope.core.layers.parts import rails_of
from tests.doctor_models import session_for


def _by_hand_model() -> nn.Sequential:
    """Linear(2, 3) -> ReLU -> Linear(3, 1) with weights chosen so that the sums are short."""
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, -10.0, 0.0]))
        model[2].weight.copy_(torch.tensor([[1.0, 1.0, 1.0]]))
        model[2].bias.zero_()
    return model


def _one_step(model: nn.Module, inputs: torch.Tensor, lr: float = 0.1):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    session = session_for(model, inputs=inputs, loss_fn=lambda out: out.sum(), optimizer=optimizer)
    with LayerCollector(session.model) as watch:
        result = session.run_iteration()
        assert result.record is not None
        return {m.path: m for m in watch.take(result.record).modules}


def test_dead_fraction_and_output_statistics_match_the_hand_computation():
    # Pre-activations [[1, -8, -3], [3, -11, -2]]: the ReLU keeps 1 and 3, four of six are 0.
    layers = _one_step(_by_hand_model(), torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
    relu = layers["1"]
    assert relu.activation is Activation.RELU_LIKE
    assert relu.dead == pytest.approx(4 / 6)
    assert relu.output.mean == pytest.approx(4 / 6)
    assert relu.output.absmax == 3.0
    assert relu.output.numel == 6 and relu.output.calls == 1
    mean = 4 / 6
    assert relu.output.std == pytest.approx(math.sqrt((1 + 9) / 6 - mean**2))
    first = layers["0"]
    assert first.dead == 0.0
    assert first.output.mean == pytest.approx(-20 / 6)
    assert first.output.absmax == 11.0
    assert first.saturated is None and relu.saturated is None


def test_update_ratio_and_gradient_norm_match_the_hand_computation():
    # loss = sum of outputs. Linear 2: dW = sum of ReLU outputs over the batch = [4, 0, 0],
    # db = 2 (the batch); SGD lr 0.1 moves W by 0.4 from a norm of sqrt(3).
    # Linear 1: only unit 0 is alive, dW[0] = x summed over the batch = [4, 1]; W's norm is 2.
    layers = _one_step(_by_hand_model(), torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
    last = layers["2"]
    assert last.update_ratio == pytest.approx(0.4 / math.sqrt(3), rel=1e-5)
    assert last.grad_norm == pytest.approx(math.sqrt(4**2 + 2**2), rel=1e-5)
    params = {p.name: p for p in last.params}
    assert params["weight"].grad_norm == pytest.approx(4.0)
    assert params["bias"].grad_norm == pytest.approx(2.0)
    assert params["bias"].update_ratio is None  # from all zeros: no ratio
    first = layers["0"]
    assert first.update_ratio == pytest.approx(0.1 * math.sqrt(17) / 2, rel=1e-5)
    assert {p.name: p.grad_norm for p in first.params}["weight"] == pytest.approx(math.sqrt(17))
    # The ReLU holds no parameter: no gradient, no ratio.
    assert layers["1"].grad_norm is None and layers["1"].update_ratio is None


def test_saturated_fraction_counts_outputs_within_one_percent_of_the_rails():
    model = nn.Sequential(nn.Identity(), nn.Sigmoid())
    # sigmoid: 4.5e-5, 0.5, 0.99995, 0.9933: three of four within 0.01 of 0 or 1.
    layers = _one_step_forward(model, torch.tensor([-10.0, 0.0, 10.0, 5.0]))
    assert layers["1"].saturated == pytest.approx(0.75)
    assert layers["1"].activation is Activation.SATURATING
    # tanh: -0.995, 0.0997, 0.964, 0.995: two of four beyond +-0.98.
    layers = _one_step_forward(nn.Sequential(nn.Tanh()), torch.tensor([-3.0, 0.1, 2.0, 3.0]))
    assert layers["0"].saturated == pytest.approx(0.5)
    assert layers[""].saturated is None


def _one_step_forward(model: nn.Module, inputs: torch.Tensor):
    session = session_for(model, inputs=inputs, loss_fn=None)
    with LayerCollector(session.model) as watch:
        result = session.run_iteration()
        return {m.path: m for m in watch.take(result.record).modules}


def test_rails_of_the_bounded_activations():
    assert rails_of(nn.Sigmoid()) == (0.0, 1.0)
    assert rails_of(nn.Hardtanh(-2.0, 2.0)) == (-2.0, 2.0)
    assert rails_of(nn.ReLU6()) is None  # its lower rail is ReLU's zero: dead, not saturated
    assert rails_of(nn.ReLU()) is None and rails_of(nn.Linear(1, 1)) is None


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x) + self.act(-x)


def test_a_module_called_twice_in_one_iteration_has_both_calls_combined():
    layers = _one_step_forward(_Twice(), torch.tensor([1.0, -2.0, 0.0, 4.0]))
    act = layers["act"]
    # relu(x) = [1, 0, 0, 4], relu(-x) = [0, 2, 0, 0]: 8 elements, 5 zeros, sum 7.
    assert act.output.calls == 2 and act.output.numel == 8
    assert act.dead == pytest.approx(5 / 8)
    assert act.output.mean == pytest.approx(7 / 8)
    assert act.output.absmax == 4.0


def _dropout_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 2))


def _train(watched: bool) -> dict[str, torch.Tensor]:
    model = _dropout_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    torch.manual_seed(1)
    batches = [torch.randn(5, 4) for _ in range(3)]
    session = session_for(
        model, inputs=batches, loss_fn=lambda o: o.square().mean(), optimizer=optimizer
    )
    watch = LayerCollector(session.model)
    if watched:
        watch.attach()
    for _ in range(3):
        record = session.run_iteration().record
        if watched:
            watch.take(record)
    watch.detach()
    return {k: v.clone() for k, v in model.state_dict().items()} | {
        "rng": torch.get_rng_state().float()
    }


def test_watching_layers_leaves_training_bit_identical_and_no_hook_behind():
    plain, watched = _train(False), _train(True)
    assert plain.keys() == watched.keys()
    for key in plain:
        assert torch.equal(plain[key], watched[key]), key
    model = _dropout_net()
    with LayerCollector(model):
        assert all(m._forward_hooks for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())


def test_nonfinite_outputs_leave_the_statistics_empty_not_wrong():
    layers = _one_step_forward(nn.Sequential(nn.Identity()), torch.tensor([1.0, math.nan]))
    out = layers["0"].output
    assert out.mean is None and out.std is None and out.absmax is None
    assert layers["0"].to_json()["output"]["mean"] is None


def test_many_small_outputs_joined_give_the_numbers_each_would_alone():
    # Twelve small outputs (under segments.SUMMARY_MAX_NUMEL elements) take the joined path;
    # the reference is each output's statistics computed directly in float64.
    torch.manual_seed(0)
    layers = [m for _ in range(6) for m in (nn.Linear(4, 4), nn.ReLU())]
    model = nn.Sequential(*layers)
    x = torch.randn(3, 4)
    seen: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        m.register_forward_hook(
            lambda mod, a, out, name=name: seen.__setitem__(name, out.detach().double())
        )
    layers_by_path = _one_step_forward(model, x)
    assert len(seen) == 13
    for name, out in seen.items():
        stats = layers_by_path[name]
        assert stats.output.mean == pytest.approx(float(out.mean()), abs=1e-12)
        assert stats.output.std == pytest.approx(float(out.std(correction=0)), abs=1e-6)
        assert stats.output.absmax == pytest.approx(float(out.abs().max()))
        assert stats.dead == pytest.approx(float((out == 0).double().mean()))


def test_a_nan_in_a_joined_small_output_empties_its_statistics_only():
    model = nn.Sequential(*[nn.Identity() for _ in range(9)], nn.ReLU())
    layers = _one_step_forward(model, torch.tensor([1.0, math.nan, -2.0]))
    assert layers["0"].output.mean is None and layers["0"].output.numel == 3
    # ReLU passes NaN on: its mean is empty too, but its zeros still count (-2 -> 0).
    assert layers["9"].dead == pytest.approx(1 / 3)


def test_saturated_shares_of_many_small_outputs_joined_match_each_alone():
    torch.manual_seed(0)
    kinds = (nn.Sigmoid, nn.Tanh, lambda: nn.Hardtanh(-0.5, 0.5), nn.ReLU)
    acts = [make() for _ in range(3) for make in kinds]
    model = nn.Sequential(*[m for a in acts for m in (nn.Linear(4, 4), a)])
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(4.0)
    seen: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        m.register_forward_hook(lambda mod, a, out, name=name: seen.__setitem__(name, out.detach()))
    layers = _one_step_forward(model, torch.randn(5, 4))
    for name, module in model.named_children():
        low, high = rails_of(module) or (None, None)
        if low is None:
            assert layers[name].saturated is None
            continue
        margin = 0.01 * (high - low)
        out = seen[name]
        expected = float(((out <= low + margin) | (out >= high - margin)).double().mean())
        assert layers[name].saturated == pytest.approx(expected), name
    assert any(layers[n].saturated for n in layers if layers[n].saturated is not None)


def test_the_watchs_hooks_are_listed_as_modscopes_own() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with LayerCollector(model):
        (hook,) = list_hooks(model, "0")
        assert (hook.owner, hook.action) == ("modscope", LAYER_STATISTICS)
    assert list_hooks(model, "0") == []
