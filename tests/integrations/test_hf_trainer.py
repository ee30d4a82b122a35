"""The Hugging Face callback with the real `transformers.Trainer` on CPU, on a tiny GPT-2 built
from a config (random weights, nothing downloaded): a recording that replays, a NaN found at its
origin, and every hook gone after training, after a break and after another exception."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from modscope.cli import main
from modscope.core.contract.steps import Phase
from tests.helpers import hook_state, strict_lines
from tests.integrations.faults import NanGrad

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import modscope  # noqa: E402
from modscope.integrations.transformers import ModscopeCallback  # noqa: E402

STEPS = 4
FAULT_AT = 3
"""The step (modscope's, from 1) whose forward the fault spoils."""
FAULT = "transformer.h.1.mlp.act"

BACKWARD = torch.Tensor.backward


class Fault(nn.Module):
    """The activation it wraps, spoiled in its `at`-th call: NaN out of its forward
    (`kind="forward"`), out of its backward (`"backward"`), or a `ValueError` (`"error"`).
    The Trainer calls the model once per step here (no accumulation, no evaluation)."""

    def __init__(self, act: nn.Module, kind: str, at: int) -> None:
        super().__init__()
        self.act = act
        self.kind = kind
        self.at = at
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        y = self.act(x)
        if self.calls != self.at:
            return y
        if self.kind == "error":
            raise ValueError("the fault's own error")
        return y * float("nan") if self.kind == "forward" else NanGrad.apply(y)


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, 100, (16,), generator=generator) for _ in range(2 * STEPS)]
    return [{"input_ids": ids, "labels": ids.clone()} for ids in rows]


def tiny_gpt2(fault: str | None = None, at: int = FAULT_AT) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=32,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    if fault is not None:
        mlp = model.transformer.h[1].mlp
        mlp.act = Fault(mlp.act, fault, at)
    return model


def make_trainer(
    model: nn.Module, callback, data, tmp_path, *, steps: int = STEPS, accumulation: int = 1
) -> transformers.Trainer:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=steps,
        gradient_accumulation_steps=accumulation,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])


def assert_unhooked(model: nn.Module, before: dict, optimizer: torch.optim.Optimizer) -> None:
    assert hook_state(model) == before
    assert not optimizer._optimizer_step_pre_hooks
    assert not optimizer._optimizer_step_post_hooks
    assert torch.Tensor.backward is BACKWARD


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_a_training_is_recorded_and_replays(data, tmp_path, capsys):
    model = tiny_gpt2()
    before = hook_state(model)
    callback = ModscopeCallback(breaks=["nan"], record=tmp_path / "rec", on_break="raise")
    trainer = make_trainer(model, callback, data, tmp_path)
    result = trainer.train()
    watch = callback.watch
    assert watch is not None and watch.closed
    # The Trainer's optimizer is accelerate's wrapper; the watch holds the torch one inside.
    assert isinstance(trainer.optimizer.optimizer, torch.optim.AdamW)
    assert_unhooked(model, before, trainer.optimizer.optimizer)
    # The recording names the file that called trainer.train().
    assert watch.origin[0] == os.path.abspath(__file__)
    records = watch.records
    assert [r.step for r in records] == list(range(1, STEPS + 1))
    assert all(r.loss is not None and 3.0 < r.loss < 6.0 for r in records)  # about ln(100)
    # The Trainer's own mean training loss is over the same values (what backward() got).
    assert sum(r.loss for r in records) / STEPS == pytest.approx(result.training_loss, rel=1e-6)
    assert all(r.grads["transformer.wte.weight"].norm > 0 for r in records)
    # The Trainer's linear schedule decays the learning rate; each record has the one it used.
    assert [r.lr[0] for r in records] == sorted((r.lr[0] for r in records), reverse=True)

    capsys.readouterr()  # what the trainer printed
    assert main(["replay", str(tmp_path / "rec"), "--json"]) == 0
    steps = [e for e in strict_lines(capsys.readouterr().out) if e["event"] == "step"]
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    assert [s["loss"] for s in steps] == [r.loss for r in records]


def test_with_gradient_accumulation_a_step_is_one_optimizer_step(data, tmp_path):
    callback = ModscopeCallback(on_break="raise")
    result = make_trainer(tiny_gpt2(), callback, data, tmp_path, steps=2, accumulation=2).train()
    records = callback.watch.records
    assert [r.step for r in records] == [1, 2]
    # Each step's loss sums the Trainer's scaled micro-batch losses, as its own tally does.
    assert sum(r.loss for r in records) / 2 == pytest.approx(result.training_loss, rel=1e-6)


@pytest.mark.parametrize("kind", [Phase.FORWARD, Phase.BACKWARD], ids=lambda p: p.value)
def test_a_nan_is_found_at_its_origin_and_every_hook_goes(data, tmp_path, kind):
    model = tiny_gpt2(kind.value)
    before = hook_state(model)
    callback = ModscopeCallback(breaks=["nan"], record=tmp_path / "rec", on_break="raise")
    trainer = make_trainer(model, callback, data, tmp_path)
    with pytest.raises(modscope.BreakError) as caught:
        trainer.train()
    event = caught.value.event
    assert (event.module, event.class_name, event.phase) == (FAULT, "Fault", kind)
    assert event.step == FAULT_AT
    assert [r.step for r in callback.watch.records] == list(range(1, FAULT_AT))
    # Nothing around the Trainer's loop closes the watch: the break itself did.
    assert callback.watch.closed
    assert_unhooked(model, before, trainer.optimizer.optimizer)


def test_another_exception_inside_a_with_block_closes_the_watch(data, tmp_path):
    model = tiny_gpt2("error", at=2)
    before = hook_state(model)
    callback = ModscopeCallback(breaks=["nan"], on_break="raise")
    trainer = make_trainer(model, callback, data, tmp_path)
    with pytest.raises(ValueError, match="the fault's own error"), callback:
        trainer.train()
    assert callback.watch.closed
    assert_unhooked(model, before, trainer.optimizer.optimizer)


def test_after_another_exception_the_next_train_closes_the_watch_left_open(data, tmp_path):
    model = tiny_gpt2("error", at=2)
    before = hook_state(model)
    callback = ModscopeCallback(on_break="raise")
    trainer = make_trainer(model, callback, data, tmp_path)
    with pytest.raises(ValueError, match="the fault's own error"):
        trainer.train()
    first = callback.watch
    assert not first.closed  # nothing told the callback that training ended
    trainer.train()  # the fault has fired: this one runs to the end
    assert first.closed
    assert [r.step for r in callback.watch.records] == list(range(1, STEPS + 1))
    assert_unhooked(model, before, trainer.optimizer.optimizer)
