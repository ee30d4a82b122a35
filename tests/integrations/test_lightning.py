"""The Lightning callback with the real `lightning.pytorch` Trainer on CPU: one record per optimizer
step (automatic optimization runs the forward and backward inside `optimizer.step(closure)`),
a recording that replays, a NaN found at its origin in forward and in backward, every hook gone."""

from __future__ import annotations

import inspect
import os

import pytest
import torch
from torch import nn

from modscope.cli import main
from modscope.core.contract.break_spec import BreakSpecError
from modscope.core.contract.steps import Phase
from tests.helpers import hook_state, strict_lines
from tests.integrations.faults import NanGrad

pl = pytest.importorskip("lightning.pytorch")

import modscope  # noqa: E402
from modscope.integrations.lightning import ModscopeCallback  # noqa: E402

# lightning 2.6.6 warns from its own pytree helper under torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")

NAN_AT = 2
"""The fault fires in the training step that starts with this `global_step`: modscope's step 3."""


class Fault(nn.Module):
    """The identity, except in the training step at `NAN_AT`: NaN out of its forward
    (`kind="forward"`) or out of its backward (`kind="backward"`)."""

    def __init__(self, kind: str | None) -> None:
        super().__init__()
        self.kind = kind
        self.global_step = -1

    def forward(self, x):
        if self.global_step != NAN_AT or self.kind is None:
            return x
        return x * float("nan") if self.kind == "forward" else NanGrad.apply(x)


class Tiny(pl.LightningModule):
    """Linear -> ReLU -> Fault -> Linear; keeps each training step's loss and, before each
    optimizer step, the gradient norms the update will use."""

    def __init__(self, fault: str | None = None, *, call_self: bool = True) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.fault = Fault(fault)
        self.b = nn.Linear(8, 1)
        self.call_self = call_self
        self.losses: list[float] = []
        self.grad_norms: list[dict[str, float]] = []

    def forward(self, x):
        return self.b(self.fault(torch.relu(self.a(x))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.fault.global_step = self.global_step
        out = self(x) if self.call_self else self.b(self.fault(torch.relu(self.a(x))))
        loss = nn.functional.mse_loss(out, y)
        self.losses.append(loss.item())
        return loss

    def on_before_optimizer_step(self, optimizer):
        self.grad_norms.append(
            {n: float(p.grad.norm()) for n, p in self.named_parameters() if p.grad is not None}
        )

    def configure_optimizers(self):
        self.optimizer = torch.optim.SGD(self.parameters(), lr=0.05)
        return self.optimizer


class Validated(Tiny):
    """`Tiny` with a validation step: forwards without backward between the steps."""

    def validation_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)


def fit(
    model: Tiny,
    callback: ModscopeCallback,
    steps: int = 4,
    **trainer_options,
) -> None:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 8), torch.randn(32, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        **trainer_options,
    )
    trainer.fit(model, loader, loader if isinstance(model, Validated) else None)


def new_model(*args, **kwargs) -> Tiny:
    torch.manual_seed(0)
    return Tiny(*args, **kwargs)


def assert_unhooked(model: Tiny, before: dict) -> None:
    assert hook_state(model) == before
    assert not model.optimizer._optimizer_step_pre_hooks
    assert not model.optimizer._optimizer_step_post_hooks
    assert torch.Tensor.backward is BACKWARD


BACKWARD = torch.Tensor.backward


def test_one_record_per_optimizer_step_with_its_loss_and_grads(tmp_path, capsys):
    model = new_model()
    before = hook_state(model)
    callback = ModscopeCallback(breaks=["nan"], record=tmp_path / "rec", on_break="raise")
    fit(model, callback)
    watch = callback.watch
    assert watch is not None and watch.closed
    assert_unhooked(model, before)
    # The recording names the file of the LightningModule's class.
    assert watch.origin == (os.path.abspath(__file__), inspect.getsourcelines(Tiny)[1])
    assert [r.step for r in watch.records] == [1, 2, 3, 4]
    # The loss is the training step's, though its forward and backward ran inside step(closure).
    assert [r.loss for r in watch.records] == model.losses
    for record, norms in zip(watch.records, model.grad_norms, strict=True):
        assert set(record.grads) == set(norms)
        for name, norm in norms.items():
            assert record.grads[name].norm == pytest.approx(norm, rel=1e-5)
        assert record.diff.changed  # the update came after the gradients were read
    assert watch.breaks == []

    capsys.readouterr()  # what the trainer printed
    assert main(["replay", str(tmp_path / "rec"), "--json"]) == 0
    lines = strict_lines(capsys.readouterr().out)
    steps = [line for line in lines if line["event"] == "step"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert [s["loss"] for s in steps] == model.losses


def test_with_gradient_accumulation_a_step_is_one_optimizer_step_its_loss_the_mean():
    model = new_model()
    callback = ModscopeCallback(on_break="raise")
    fit(model, callback, steps=2, accumulate_grad_batches=2)
    records = callback.watch.records
    assert [r.step for r in records] == [1, 2]
    assert len(model.losses) == 4
    for record, pair in zip(records, (model.losses[:2], model.losses[2:]), strict=True):
        assert record.loss == pytest.approx(sum(pair) / 2, rel=1e-6)


def test_validation_forwards_between_steps_leave_the_records_as_they_are():
    torch.manual_seed(0)
    model = Validated()
    before = hook_state(model)
    callback = ModscopeCallback(breaks=["nan"], on_break="raise")
    # The sanity check before step 1, then a validation pass after every second step.
    fit(model, callback, steps=6, val_check_interval=2)
    records = callback.watch.records
    assert [r.step for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r.loss for r in records] == model.losses
    assert {r.mode for r in records} == {"train"}
    assert_unhooked(model, before)


@pytest.mark.parametrize("kind", [Phase.FORWARD, Phase.BACKWARD], ids=lambda p: p.value)
def test_a_nan_is_found_at_its_origin_and_every_hook_goes(kind):
    model = new_model(kind.value)
    before = hook_state(model)
    callback = ModscopeCallback(breaks=["nan"], on_break="raise")
    with pytest.raises(modscope.BreakError) as caught:
        fit(model, callback)
    event = caught.value.event
    assert (event.module, event.class_name, event.phase, event.step) == ("fault", "Fault", kind, 3)
    assert [r.step for r in callback.watch.records] == [1, 2]
    assert callback.watch.closed
    assert_unhooked(model, before)


@pytest.mark.parametrize("kind", [Phase.FORWARD, Phase.BACKWARD], ids=lambda p: p.value)
def test_a_training_step_that_calls_submodules_directly(kind):
    """A forward begins at the model's direct children too (`self.a(x)` in training_step)."""
    model = new_model(kind.value, call_self=False)
    callback = ModscopeCallback(breaks=["nan"], on_break="raise")
    with pytest.raises(modscope.BreakError) as caught:
        fit(model, callback)
    event = caught.value.event
    assert (event.module, event.phase, event.step) == ("fault", kind, 3)
    assert [r.loss for r in callback.watch.records] == model.losses[:2]


def test_layers_and_hooks_pass_through_and_come_off():
    plain = new_model()
    fit(plain, ModscopeCallback(on_break="raise"))
    model = new_model()
    before = hook_state(model)
    callback = ModscopeCallback(layers=True, hooks=["b:forward:scale=0", "a:backward"])
    fit(model, callback)
    assert [layer.step for layer in callback.watch.layers] == [1, 2, 3, 4]
    # The scale hook zeroed b's output during the fit: mse(0, y) is not the plain fit's loss.
    assert model.losses[0] != plain.losses[0]
    assert_unhooked(model, before)


def test_a_bad_break_spec_fails_where_the_callback_is_made():
    with pytest.raises(BreakSpecError):
        ModscopeCallback(breaks=["loss>"])
