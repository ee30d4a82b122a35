"""`modscope.watch()` on the user's own loop: the records `run` keeps, breaks at the NaN's origin,
recordings that replay as `run`'s, nothing left behind, and clear errors for bad use."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import modscope
from modscope.cli import main
from modscope.core import own_loop
from modscope.core.contract.break_spec import BreakSpecError
from modscope.core.contract.findings import FindingKind
from modscope.core.contract.hook_spec import HookSpecError
from modscope.core.contract.steps import Phase
from modscope.core.iteration import Iteration
from modscope.core.script.outputs import OutputError
from modscope.watching import handle
from tests.helpers import ARTICLE_TABLE, POWLOG, example, strict_lines
from tests.watching.loops import script_objects, train

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def hook_dicts(model: nn.Module) -> dict[tuple[str, str], list[object]]:
    return {
        (path, name): list(getattr(m, name).values())
        for path, m in model.named_modules()
        for name in HOOK_DICTS
    }


def optimizer_hooks(opt: torch.optim.Optimizer) -> tuple[int, int]:
    return len(opt._optimizer_step_pre_hooks), len(opt._optimizer_step_post_hooks)


def test_a_watched_loop_follows_the_articles_table_and_keeps_what_run_keeps():
    ns = script_objects(POWLOG)
    with modscope.watch(ns["model"], ns["optimizer"]) as w:
        train(ns, 10)
    assert w.step_count == 10
    assert [r.step for r in w.records] == list(range(1, 11))
    for record, (pow_param, log_param) in zip(w.records, ARTICLE_TABLE, strict=True):
        assert record.state["powModel.powParam"].values[0] == pytest.approx(pow_param, abs=5e-5)
        assert record.state["logModel.logParam"].values[0] == pytest.approx(log_param, abs=5e-5)
        assert set(record.grads) == {"powModel.powParam", "logModel.logParam"}
        assert record.diff.changed == ("powModel.powParam", "logModel.logParam")
    assert w.records[0].loss == pytest.approx((4.8283 - 10) ** 2, abs=1e-3)
    assert w.records[0].lr == (0.01,)


def test_a_long_loop_keeps_the_newest_records_and_layers_only(monkeypatch):
    # A loop runs as long as it likes: what a watch keeps of each step is bounded.
    monkeypatch.setattr(handle, "RECORDS_KEPT", 4)
    ns = script_objects(POWLOG)
    with modscope.watch(ns["model"], ns["optimizer"], layers=True) as w:
        train(ns, 10)
    assert w.step_count == 10
    assert [r.step for r in w.records] == [7, 8, 9, 10]
    assert [layer.step for layer in w.layers] == [7, 8, 9, 10]
    pow_param, _ = ARTICLE_TABLE[9]
    assert w.records[-1].state["powModel.powParam"].values[0] == pytest.approx(pow_param, abs=5e-5)


@pytest.mark.parametrize(
    "name", ["powlog.py", "health.py", "cnn.py", "dropout.py", "tiny_lm.py", "nan_origin.py"]
)
def test_a_watched_recording_replays_as_runs_own_lines(name, tmp_path, capsys):
    """The same iterations, watched in the user's loop or run by modscope: the same lines."""
    assert main(["run", example(name), "--steps", "3", "--json"]) == 0
    ran = capsys.readouterr().out
    ns = script_objects(example(name))
    with modscope.watch(ns["model"], ns["optimizer"], record=tmp_path / "rec"):
        train(ns, 3)
    assert main(["replay", str(tmp_path / "rec"), "--json"]) == 0
    replayed = capsys.readouterr().out
    assert [e["event"] for e in strict_lines(replayed)].count("step") == 3
    assert replayed == ran


def test_every_option_on_leaves_training_bit_identical_and_nothing_behind(tmp_path):
    plain = script_objects(example("cnn.py"))
    train(plain, 4)
    ns = script_objects(example("cnn.py"))
    model, opt = ns["model"], ns["optimizer"]
    hooks_before, backward = hook_dicts(model), torch.Tensor.backward
    with modscope.watch(
        model,
        opt,
        breaks=["nan", "loss>1e9", "grad-norm>1e9", "step=99"],
        record=tmp_path / "rec",
        layers=True,
        hooks=["*:forward", "*:backward", "*:forward-pre"],
    ) as w:
        train(ns, 4)
    assert len(w.layers) == 4 and not w.breaks
    kinds = {(e.step, e.kind.value) for e in w.events}
    assert {(4, "forward"), (4, "backward"), (4, "forward-pre")} <= kinds
    for (name, a), b in zip(
        plain["model"].state_dict().items(), model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert hook_dicts(model) == hooks_before
    assert optimizer_hooks(opt) == (0, 0)
    assert torch.Tensor.backward is backward


def test_nan_breaks_at_its_forward_origin_in_the_users_loop():
    ns = script_objects(example("nan_origin.py"))
    model = ns["model"]
    before = hook_dicts(model)
    with (
        pytest.raises(modscope.BreakError) as raised,
        modscope.watch(model, ns["optimizer"], breaks=["nan"], on_break="raise"),
    ):
        train(ns, 5)
    event = raised.value.event
    assert (event.module, event.phase, event.step) == ("blocks.1.gate", Phase.FORWARD, 3)
    assert str(raised.value).startswith(
        "break nan at step 3, forward phase: blocks.1.gate (LogGate)"
    )
    assert hook_dicts(model) == before


def test_nan_breaks_at_its_backward_origin_in_the_users_loop():
    ns = script_objects(example("nan_backward.py"))
    with (
        pytest.raises(modscope.BreakError) as raised,
        modscope.watch(ns["model"], ns["optimizer"], breaks=["nan"], on_break="raise"),
    ):
        train(ns, 5)
    event = raised.value.event
    assert (event.module, event.phase, event.step) == ("blocks.1.length", Phase.BACKWARD, 3)


def test_print_and_record_go_on_and_the_recording_ends_with_the_break(tmp_path, capsys):
    ns = script_objects(example("nan_origin.py"))
    with modscope.watch(
        ns["model"], ns["optimizer"], breaks=["nan"], on_break="print", record=tmp_path / "r"
    ) as w:
        train(ns, 5)
    assert w.step_count == 5
    # Where it starts at step 3; at step 4 the NaN weights the update left make it anew.
    assert [(b.module, b.step) for b in w.breaks] == [
        ("blocks.1.gate", 3),
        ("blocks.0.linear", 4),
        ("blocks.0.linear", 5),
    ]
    assert "break nan at step 3, forward phase: blocks.1.gate" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "r"), "--json"]) == 1  # a break, as run's exit status
    lines = strict_lines(capsys.readouterr().out)
    assert [e["step"] for e in lines if e["event"] == "break"] == [3, 4, 5]
    assert [e["step"] for e in lines if e["event"] == "step"] == [1, 2, 3, 4, 5]
    nonfinite = [e for e in lines if e["event"] == "finding" and e["kind"] == "nonfinite"]
    assert nonfinite  # the doctor saw the NaN too, as run's doctor does


def test_a_function_on_break_gets_the_event():
    seen = []
    ns = script_objects(example("nan_origin.py"))
    with modscope.watch(ns["model"], ns["optimizer"], breaks=["nan"], on_break=seen.append):
        train(ns, 4)
    assert [(e.module, e.step) for e in seen] == [("blocks.1.gate", 3), ("blocks.0.linear", 4)]


def test_loss_and_grad_norm_conditions_trip_in_the_users_loop():
    ns = script_objects(POWLOG)
    with (
        pytest.raises(modscope.BreakError, match="above 20"),
        modscope.watch(ns["model"], ns["optimizer"], breaks=["loss>20"], on_break="raise"),
    ):
        train(ns, 3)
    ns = script_objects(POWLOG)
    with (
        pytest.raises(modscope.BreakError) as raised,
        modscope.watch(ns["model"], ns["optimizer"], breaks=["step=4"], on_break="raise") as w,
    ):
        train(ns, 10)
    assert raised.value.event.step == 4 and w.step_count == 3


def test_findings_come_as_runs_do(capsys):
    ns = script_objects(example("health.py"))
    with modscope.watch(ns["model"], ns["optimizer"]) as w:
        train(ns, 2)
    assert main(["run", example("health.py"), "--steps", "2", "--json"]) == 0
    lines = strict_lines(capsys.readouterr().out)
    assert [f.kind.value for f in w.findings] == [
        e["kind"] for e in lines if e["event"] == "finding"
    ]
    assert {FindingKind.TRAINING_IN_EVAL, FindingKind.TORCH_WARNING} <= {f.kind for f in w.findings}


def test_step_by_hand_without_an_optimizer_and_with_accumulation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    x = torch.randn(6, 4)
    with modscope.watch(model) as w:
        for _ in range(3):
            model(x).pow(2).mean().backward()
            w.step(torch.tensor(1.5))
            model.zero_grad()
    assert [r.loss for r in w.records] == [1.5, 1.5, 1.5]
    assert all(r.diff.changed == () for r in w.records)  # nothing updated the weights

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    with modscope.watch(model, opt) as w:
        for _ in range(2):
            opt.zero_grad(set_to_none=False)
            for half in x.split(3):  # two micro-batches, one optimizer step
                loss = model(half).pow(2).mean() / 2
                losses.append(loss.item())
                loss.backward()
            opt.step()
    assert w.step_count == 2
    assert w.records[0].loss == pytest.approx(losses[0] + losses[1])
    assert w.records[1].loss == pytest.approx(losses[2] + losses[3])


def test_param_groups_and_a_scheduler_give_the_learning_rates_run_records():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    opt = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 0.1}, {"params": model[1].parameters()}], lr=0.01
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x = torch.randn(4, 3)
    with modscope.watch(model, opt) as w:
        for _ in range(2):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
            sched.step()
    assert [r.lr for r in w.records] == [(0.05, 0.005), (0.025, 0.0025)]


def test_bad_use_is_a_clear_error(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"model is a dict, not an nn\.Module"):
        modscope.watch({"a": 1})
    other = torch.optim.SGD(nn.Linear(3, 3).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="not the model's"):
        modscope.watch(model, other)
    with pytest.raises(BreakSpecError) as bad:
        modscope.watch(model, breaks=["loss>>1"])
    with pytest.raises(BreakSpecError) as same:
        modscope.core.contract.break_spec.parse_conditions(["loss>>1"])
    assert str(bad.value) == str(same.value)
    with pytest.raises(HookSpecError):
        modscope.watch(model, hooks=["nope:sideways"])
    with pytest.raises(ValueError, match="on_break"):
        modscope.watch(model, on_break="shout")
    with pytest.raises(ValueError, match="give record=DIR"):
        modscope.watch(model, on_break="record")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("mine")
    with pytest.raises(OutputError, match="not a folder"):
        modscope.watch(model, record=not_a_folder)
    assert not_a_folder.read_text() == "mine"
    with modscope.watch(model), pytest.raises(RuntimeError, match="watched already"):
        modscope.watch(model)
    with modscope.watch(model):  # closed: it may be watched again
        pass


def test_a_recording_of_the_same_program_needs_overwrite(tmp_path):
    ns = script_objects(POWLOG)
    with modscope.watch(ns["model"], ns["optimizer"], record=tmp_path / "r"):
        train(ns, 1)
    with pytest.raises(OutputError, match="overwrite"):
        modscope.watch(ns["model"], ns["optimizer"], record=tmp_path / "r")
    with modscope.watch(ns["model"], ns["optimizer"], record=tmp_path / "r", overwrite=True):
        train(ns, 2)
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["script"] == os.path.abspath(__file__)


def test_an_exception_in_the_users_loop_leaves_no_hook(tmp_path):
    ns = script_objects(POWLOG)
    model, opt = ns["model"], ns["optimizer"]
    before = hook_dicts(model)
    with (
        pytest.raises(ZeroDivisionError),
        modscope.watch(model, opt, breaks=["nan"], layers=True, hooks=["*:forward"]),
    ):
        train(ns, 1)
        model(*ns["inputs"])
        1 / 0  # noqa: B018
    assert hook_dicts(model) == before
    assert optimizer_hooks(opt) == (0, 0)


def test_the_example_loop_runs_with_python(tmp_path):
    import subprocess
    import sys

    script = Path(example("own_loop.py"))
    out = subprocess.run(
        [sys.executable, str(script), "--record", str(tmp_path / "rec")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "steps watched: 12" in out.stdout
    assert (tmp_path / "rec" / "meta.json").exists()


def test_without_a_terminal_the_default_raises_and_app_says_why(capsys):
    ns = script_objects(example("nan_origin.py"))
    watch = modscope.watch(ns["model"], ns["optimizer"], breaks=["nan"])
    assert watch.on_break == "raise"  # a batch job never waits for a keyboard
    watch.close()
    ns = script_objects(example("nan_origin.py"))
    with (
        pytest.raises(modscope.BreakError, match=r"blocks\.1\.gate"),
        modscope.watch(ns["model"], ns["optimizer"], breaks=["nan"], on_break="app"),
    ):
        train(ns, 5)
    assert "is not a terminal; raising instead" in capsys.readouterr().err


def test_a_backward_of_a_non_scalar_gives_a_step_without_a_loss():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3)
    with modscope.watch(model, opt) as w:
        opt.zero_grad()
        out = model(x)
        out.backward(torch.ones_like(out))  # a gradient given: no scalar loss
        opt.step()
    assert w.step_count == 1 and w.records[0].loss is None
    assert w.records[0].diff.changed == ("weight", "bias")


def test_a_step_whose_record_fails_counts_and_the_loop_goes_on(monkeypatch):
    ns = script_objects(POWLOG)
    real = Iteration.record
    calls = []

    def second_fails(self, step, **kwargs):
        calls.append(step)
        if len(calls) == 2:
            raise RuntimeError("no record this time")
        return real(self, step, **kwargs)

    monkeypatch.setattr(Iteration, "record", second_fails)
    with (
        pytest.warns(RuntimeWarning, match="step 2 has no record"),
        modscope.watch(ns["model"], ns["optimizer"]) as w,
    ):
        train(ns, 5)
    assert w.step_count == 5
    assert [r.step for r in w.records] == [1, 3, 4, 5]
    pow_param, _ = ARTICLE_TABLE[4]
    assert w.records[-1].state["powModel.powParam"].values[0] == pytest.approx(pow_param, abs=5e-5)


def test_a_forward_that_raises_inside_the_loop_does_not_blind_the_watch():
    ns = script_objects(POWLOG)
    model, opt = ns["model"], ns["optimizer"]
    calls = {"n": 0}

    def flaky(module, args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("a batch that does not fit")

    # On a child, before the watch's own hook there: it raises inside the model's forward.
    model.powModel.register_forward_pre_hook(flaky)
    with modscope.watch(model, opt) as w:
        train(ns, 1)
        with pytest.raises(ValueError):
            model(*ns["inputs"])  # the loop catches it and goes on
        opt.zero_grad()
        train(ns, 2)
    assert w.step_count == 3
    assert all(r.loss is not None for r in w.records)  # each forward and its loss seen


def test_a_watch_that_cannot_attach_leaves_nothing_behind(monkeypatch):
    ns = script_objects(POWLOG)
    model, opt = ns["model"], ns["optimizer"]
    before, backward = hook_dicts(model), torch.Tensor.backward

    def refuse(loop):
        raise RuntimeError("cannot wrap")

    monkeypatch.setattr(own_loop.SCALER_STEPS, "add", refuse)
    with pytest.raises(RuntimeError, match="cannot wrap"):
        modscope.watch(model, opt)
    assert hook_dicts(model) == before
    assert optimizer_hooks(opt) == (0, 0)
    assert torch.Tensor.backward is backward
    monkeypatch.undo()
    with modscope.watch(model, opt) as w:  # the model is not left claimed
        train(ns, 1)
    assert w.step_count == 1


def test_a_wrapper_put_on_backward_after_the_watch_is_kept_when_it_closes():
    ns = script_objects(POWLOG)
    original = torch.Tensor.backward
    with modscope.watch(ns["model"], ns["optimizer"]):
        watched = torch.Tensor.backward

        def theirs(self, *args, **kwargs):
            return watched(self, *args, **kwargs)

        torch.Tensor.backward = theirs
    try:
        assert torch.Tensor.backward is theirs  # another library's wrapper stays
    finally:
        torch.Tensor.backward = original


class _PlainList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.rest = [nn.Linear(4, 4), nn.Linear(4, 1)]  # a plain list: never registered

    def forward(self, x):
        x = self.first(x)
        for layer in self.rest:
            x = layer(x)
        return x


def test_an_optimizer_over_a_layer_the_model_never_registered_is_watched_and_reported():
    # The article's bug in the user's own loop: the optimizer was given the list's parameters
    # by hand, so they train, yet the model neither saves nor moves them. The watch goes on
    # and the doctor names the list.
    torch.manual_seed(0)
    model = _PlainList()
    params = [*model.parameters(), *(p for layer in model.rest for p in layer.parameters())]
    opt = torch.optim.SGD(params, lr=0.1)
    x = torch.randn(8, 4)
    with modscope.watch(model, opt) as w:
        for _ in range(2):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    assert w.step_count == 2
    assert [(f.kind, f.path) for f in w.findings] == [(FindingKind.UNREGISTERED_MODULE, "rest")]
