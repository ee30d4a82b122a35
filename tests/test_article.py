"""The article's reference numbers, through the engine (Session) and through `run --json`."""

from __future__ import annotations

import json

import pytest
import torch

from modscope.cli import main
from modscope.core.hooks.manager import HookSpec
from modscope.core.session import Session
from tests.helpers import ARTICLE_TABLE, example


def value(summary) -> float:
    return summary.values[0]


def test_powlog_trains_along_the_articles_table():
    session = Session.load(example("powlog.py"))
    first = session.run_iteration()
    assert first.record is not None
    assert first.record.loss == pytest.approx(26.7463, abs=1e-4)
    assert value(first.record.output) == pytest.approx(4.8283, abs=1e-4)
    assert first.record.grads["powModel.powParam"].norm == pytest.approx(10.3434, abs=1e-3)
    rows = [first.record] + [session.run_iteration().record for _ in range(9)]
    got = [(value(r.state["powModel.powParam"]), value(r.state["logModel.logParam"])) for r in rows]
    assert got == [pytest.approx(row, abs=5e-5) for row in ARTICLE_TABLE]
    # the forward of the next iteration shows the trained z
    forward = session.run_phase()
    assert value(forward.output) == pytest.approx(9.9982, abs=1e-4)
    session.close()


def test_phases_step_one_at_a_time_and_s_finishes_the_iteration():
    session = Session.load(example("powlog.py"))
    forward = session.run_phase()
    assert forward.phase.value == "forward" and forward.record is None
    assert value(forward.output) == pytest.approx(4.8283, abs=1e-4)
    assert session.model.powModel.powParam.grad is None
    backward = session.run_phase()
    assert backward.phase.value == "backward" and backward.record is None
    assert session.model.powModel.powParam.grad.item() == pytest.approx(-10.3434, abs=1e-3)
    assert session.model.powModel.powParam.item() == 1.0
    rest = session.run_iteration()
    assert rest.phase.value == "optimizer" and rest.record.step == 1
    assert value(rest.record.state["powModel.powParam"]) == pytest.approx(1.1034, abs=5e-5)
    assert rest.record.diff.changed == ("powModel.powParam", "logModel.logParam")
    assert rest.record.diff.max_abs_delta["powModel.powParam"] == pytest.approx(0.1034, abs=1e-4)


def test_separate_instances_split_the_gradient():
    session = Session.load(example("separate.py"))
    for _ in range(10):
        record = session.run_iteration().record
    values = {k: round(value(s), 4) for k, s in record.state.items()}
    assert values == {
        "powModel1.powParam": 1.2401,
        "logModel1.logParam": 1.9373,
        "powModel2.powParam": 1.2401,
        "logModel2.logParam": 1.9373,
    }
    assert value(session.run_phase().output) == pytest.approx(9.7706, abs=1e-4)


def test_shared_instance_follows_the_same_table():
    session = Session.load(example("shared.py"))
    for _ in range(10):
        record = session.run_iteration().record
    assert value(record.state["powModel.powParam"]) == pytest.approx(1.2430, abs=5e-5)
    assert value(record.state["logModel.logParam"]) == pytest.approx(1.9815, abs=5e-5)


def test_buffers_update_in_train_and_freeze_in_eval():
    session = Session.load(example("buffers.py"))
    assert session.phases() == (session.next_phase,)  # loss_fn = None: forward only
    for _ in range(10):
        record = session.run_iteration().record
    assert value(record.state["powModel.powBuff"]) == pytest.approx(4.9698, abs=1e-4)
    assert value(record.state["logModel.logBuff"]) == pytest.approx(116.3565, abs=1e-3)
    assert value(record.output) == pytest.approx(4.7567, abs=1e-4)
    assert record.state["logModel.logBuff"].grad_fn == "AddBackward0"
    assert all(g is None for g in record.grads.values())
    session.set_training(False)
    frozen = session.run_iteration().record
    assert frozen.mode == "eval"
    assert frozen.diff.changed == ()
    assert value(frozen.output) == pytest.approx(4.7567, abs=1e-4)


def run_json(capsys, *argv: str) -> list[dict]:
    code = main(["run", *argv, "--json"])
    out = capsys.readouterr().out
    events = [
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c}"))
        for line in out.splitlines()
        if line.strip()
    ]
    assert code == 0, out
    return events


def steps(events):
    return [e for e in events if e["event"] == "step"]


def test_run_json_carries_the_table(capsys):
    events = run_json(capsys, example("powlog.py"), "--steps", "10")
    rows = steps(events)
    assert len(rows) == 10
    got = [
        (r["state"]["powModel.powParam"]["values"][0], r["state"]["logModel.logParam"]["values"][0])
        for r in rows
    ]
    assert got == [pytest.approx(row, abs=5e-5) for row in ARTICLE_TABLE]
    assert rows[0]["loss"] == pytest.approx(26.7463, abs=1e-4)
    assert rows[0]["diff"]["changed"] == ["powModel.powParam", "logModel.logParam"]


@pytest.mark.parametrize(
    ("spec", "z", "grads"),
    [
        ("logModel:forward-pre:scale=2", 5.5215, {"logModel.logParam": 5.5215}),
        (
            "logModel:forward:scale=2",
            9.6566,
            {"powModel.powParam": 2.0, "logModel.logParam": 9.6566},
        ),
    ],
)
def test_hook_codes_1_and_2(capsys, spec, z, grads):
    events = run_json(
        capsys, example("hooks.py"), "--steps", "1", "--hook", spec, "--hook", "powModel:backward"
    )
    step = steps(events)[0]
    assert step["output"]["values"][0] == pytest.approx(z, abs=1e-4)
    for name, grad in grads.items():
        assert step["grads"][name]["values"][0] == pytest.approx(grad, abs=1e-4)
    hooks = {e["kind"]: e for e in events if e["event"] == "hook"}
    assert hooks[spec.split(":")[1]]["action"] == "scale"
    if spec == "logModel:forward:scale=2":
        # x.grad 1.2000 and q.grad 3.2189 reach powModel's inputs
        grad_input = [s["values"][0] for s in hooks["backward"]["grad_input"]]
        assert grad_input == [pytest.approx(1.2, abs=1e-4), pytest.approx(3.2189, abs=1e-4)]


def test_hook_code_3_legacy_against_observed_backward(capsys):
    legacy = run_json(
        capsys, example("hooks.py"), "--steps", "1", "--hook", "powModel:legacy-backward"
    )
    full = run_json(capsys, example("hooks.py"), "--steps", "1", "--hook", "powModel:backward")

    def grad_input(events, kind):
        event = next(e for e in events if e["event"] == "hook" and e["kind"] == kind)
        return [round(s["values"][0], 4) for s in event["grad_input"]]

    assert grad_input(legacy, "legacy-backward") == [1.0, 0.008]
    assert grad_input(full, "backward") == [0.6, 1.6094]


def test_plain_list_children_are_invisible():
    session = Session.load(example("containers.py"))
    assert list(session.model.named_children()) == []
    inv = session.inventory()
    assert [u.what for u in inv.unregistered] and all(u.what == "module" for u in inv.unregistered)


def test_forward_pre_hook_attached_in_the_session_and_detached():
    session = Session.load(example("hooks.py"))
    module = session.model.logModel
    before = dict(module._forward_pre_hooks)
    [hook] = session.attach(HookSpec.parse("logModel:forward-pre:scale=2"))
    result = session.run_iteration()
    assert value(result.record.output) == pytest.approx(5.5215, abs=1e-4)
    session.detach(hook.hook_id)
    assert dict(module._forward_pre_hooks) == before
    again = session.run_iteration()
    assert value(again.record.output) == pytest.approx(4.8283, abs=1e-4)


def test_observing_changes_nothing_with_torch_grad_state():
    torch.manual_seed(0)
    session = Session.load(example("powlog.py"))
    rng = torch.get_rng_state()
    session.run_iteration()
    assert torch.equal(rng, torch.get_rng_state())
