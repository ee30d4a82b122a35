"""Break conditions (`--break`, `Session.arm`): parsing, where `nan` starts, when each condition
trips, and that watching changes nothing (no hooks unarmed, bit-identical armed)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from modscope.cli import main
from modscope.core.breaks import finite
from modscope.core.contract.break_spec import (
    CONDITIONS,
    GRAMMAR,
    BreakCondition,
    BreakMetric,
    BreakSpecError,
)
from modscope.core.contract.steps import Phase
from modscope.core.hooks.manager import BreakStop, HookSpec, IterationAbandoned
from modscope.core.session import Session
from tests.helpers import POWLOG, example, hook_state, strict_lines

ORIGIN = example("nan_origin.py")
BACKWARD = example("nan_backward.py")


def forward_line(path: str, class_name: str) -> int:
    """The line of `def forward` in the class `class_name` of the file `path`."""
    with open(path) as f:
        lines = f.read().splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"class {class_name}(")))
    return next(i for i in range(start, len(lines)) if "def forward" in lines[i]) + 1


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "op", "threshold", "module"),
    [
        ("nan", BreakMetric.NAN, "", None, None),
        (" nan ", BreakMetric.NAN, "", None, None),
        ("loss>3.5", BreakMetric.LOSS, ">", 3.5, None),
        ("loss<-1e-3", BreakMetric.LOSS, "<", -1e-3, None),
        ("grad-norm>1e6", BreakMetric.GRAD_NORM, ">", 1e6, None),
        ("step=7", BreakMetric.STEP, "=", 7, None),
        ("blocks.0.attn:output-absmax>1e4", BreakMetric.OUTPUT_ABSMAX, ">", 1e4, "blocks.0.attn"),
        ("a:b.c:grad-norm>2", BreakMetric.GRAD_NORM, ">", 2.0, "a:b.c"),
        (".:grad-norm>1", BreakMetric.GRAD_NORM, ">", 1.0, ""),
        (":output-absmax>1e30", BreakMetric.OUTPUT_ABSMAX, ">", 1e30, ""),
    ],
)
def test_good_conditions_parse(text, metric, op, threshold, module):
    c = BreakCondition.parse(text)
    assert (c.metric, c.op, c.threshold, c.module) == (metric, op, threshold, module)
    assert str(c) == text.strip()
    assert BreakCondition.parse(str(c)) == c


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nans",
        "fc:nan",
        "loss",
        "loss>",
        "loss>=3",
        "loss=3",
        "loss > 3",
        "grad-norm<1",
        "step>3",
        "step=1.5",
        "step=0",
        "fc:output-absmax<3",
        "fc:loss>3",
        "fc:step=3",
        "loss>nan",
        ":output-absmax>inf",  # never holds: `nan` watches for Inf
        "loss>abc",
        "output-absmax>3",
    ],
)
def test_bad_conditions_are_refused_naming_the_grammar_or_the_fault(text):
    with pytest.raises(BreakSpecError, match="break condition"):
        BreakCondition.parse(text)


def test_refusal_names_the_grammar():
    with pytest.raises(BreakSpecError) as info:
        BreakCondition.parse("loss>=3")
    assert GRAMMAR in str(info.value)


def test_every_condition_the_help_and_the_dialog_list_parses():
    for listed in CONDITIONS:
        typed = listed.replace("MODULE:", "fc:").replace("X", "2").replace("N", "2")
        condition = BreakCondition.parse(typed)
        assert str(condition) == typed
        assert condition.watches_module == listed.startswith("MODULE:")


def test_break_spec_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, modscope.core.contract.break_spec; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


# -- run --break nan: the origin --------------------------------------------------------------


def test_run_break_nan_names_the_forward_origin(capsys):
    assert main(["run", ORIGIN, "--steps", "5", "--break", "nan", "--json"]) == 1
    lines = strict_lines(capsys.readouterr().out)
    assert [e["step"] for e in lines if e["event"] == "step"] == [1, 2]
    brk = lines[-1]  # the break is the last thing written
    assert [e["event"] for e in lines].count("break") == 1
    assert list(brk)[:9] == [
        "event",
        "step",
        "phase",
        "condition",
        "module",
        "class",
        "where",
        "inputs",
        "outputs",
    ]
    assert brk["event"] == "break" and brk["condition"] == "nan"
    assert (brk["step"], brk["phase"]) == (3, "forward")
    assert (brk["module"], brk["class"]) == ("blocks.1.gate", "LogGate")
    assert brk["where"] == f"{ORIGIN}:{forward_line(ORIGIN, 'LogGate')}"
    assert [s["nan"] + s["inf"] for s in brk["inputs"]] == [0]
    assert brk["outputs"][0]["nan"] > 0


def test_run_break_nan_names_the_backward_origin(capsys):
    assert main(["run", BACKWARD, "--steps", "5", "--break", "nan", "--json"]) == 1
    lines = strict_lines(capsys.readouterr().out)
    assert [e["step"] for e in lines if e["event"] == "step"] == [1, 2]
    brk = lines[-1]
    assert (brk["event"], brk["step"], brk["phase"]) == ("break", 3, "backward")
    assert (brk["module"], brk["class"]) == ("blocks.1.length", "RowLength")
    assert brk["where"] == f"{BACKWARD}:{forward_line(BACKWARD, 'RowLength')}"
    assert brk["inputs"][0]["nan"] > 0  # the gradient w.r.t. its input
    assert all(s["nan"] == 0 and s["inf"] == 0 for s in brk["outputs"])  # w.r.t. its output


def test_run_break_human_paragraph_comes_last(capsys):
    assert main(["run", ORIGIN, "--steps", "5", "--break", "nan"]) == 1
    out = capsys.readouterr().out
    paragraph = out[out.index("break nan") :]
    assert paragraph.startswith("break nan at step 3, forward phase: blocks.1.gate (LogGate) at ")
    assert "nan_origin.py:" in paragraph and "NaN!" in paragraph
    assert "inputs" in paragraph and "outputs" in paragraph
    assert "Iterations" in out[: out.index("break nan")]


def test_hook_lines_of_the_broken_iteration_come_before_the_break(capsys):
    args = ["run", ORIGIN, "--steps", "5", "--break", "nan", "--json", "--hook", "blocks.0:forward"]
    assert main(args) == 1
    lines = strict_lines(capsys.readouterr().out)
    assert [(e["event"], e["step"]) for e in lines[-2:]] == [("hook", 3), ("break", 3)]


def test_a_model_without_nan_runs_to_the_end(capsys):
    assert main(["run", POWLOG, "--steps", "10", "--break", "nan", "--json"]) == 0
    lines = strict_lines(capsys.readouterr().out)
    assert [e["step"] for e in lines if e["event"] == "step"] == list(range(1, 11))
    assert not [e for e in lines if e["event"] == "break"]


def test_break_with_record_stops_too(tmp_path, capsys):
    folder = str(tmp_path / "rec")
    args = ["run", ORIGIN, "--steps", "5", "--break", "nan", "--json", "--record", folder]
    assert main(args) == 1
    lines = strict_lines(capsys.readouterr().out)
    assert lines[-1]["event"] == "break" and lines[-1]["module"] == "blocks.1.gate"


def test_bad_break_is_a_usage_error_before_loading(capsys):
    assert main(["run", ORIGIN, "--break", "loss>=3", "--json"]) == 2
    captured = capsys.readouterr()
    [line] = strict_lines(captured.out)
    assert line["phase"] == "arguments" and "loss>X" in line["message"]
    assert main(["run", ORIGIN, "--break", "blocks.9:grad-norm>1"]) == 2
    assert "no module 'blocks.9'" in capsys.readouterr().err


# -- the other conditions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "step", "phase", "module"),
    [
        ("loss<1", 2, "forward", None),
        ("loss>1", 1, "forward", None),
        ("grad-norm>1", 1, "backward", None),
        ("step=2", 2, "forward", None),
        # at step 3 the head's output holds NaN too: NaN is no magnitude, 1.02 is
        ("head:output-absmax>1", 3, "forward", "head"),
        ("blocks.2:grad-norm>0.5", 2, "backward", "blocks.2"),
    ],
)
def test_conditions_trip_at_the_right_step(capsys, condition, step, phase, module):
    assert main(["run", ORIGIN, "--steps", "5", "--break", condition, "--json"]) == 1
    lines = strict_lines(capsys.readouterr().out)
    brk = lines[-1]
    assert (brk["condition"], brk["step"], brk["phase"], brk["module"]) == (
        condition,
        step,
        phase,
        module,
    )
    assert [e["step"] for e in lines if e["event"] == "step"] == list(range(1, step))


def test_conditions_that_never_hold_run_to_the_end(capsys):
    conditions = ["loss>100", "powModel:grad-norm>1e9", "step=99", "logModel:output-absmax>1e9"]
    args = ["run", POWLOG, "--steps", "3", "--json"]
    for c in conditions:
        args += ["--break", c]
    assert main(args) == 0
    assert [e["step"] for e in strict_lines(capsys.readouterr().out)] == [1, 2, 3]


# -- the other origins, through the Session API -----------------------------------------------


def session_of(model, *, inputs, loss_fn, optimizer=None, on_break=None) -> Session:
    session = Session.from_objects(
        model, inputs=inputs, loss_fn=loss_fn, optimizer=optimizer, origin=__file__
    )
    session.on_break = on_break
    return session


def test_a_nonfinite_batch_is_the_origin():
    x = torch.ones(2, 3)
    x[0, 0] = float("nan")
    session = session_of(nn.Linear(3, 1), inputs=x, loss_fn=lambda out: out.mean())
    session.arm(["nan"])
    with pytest.raises(BreakStop) as info:
        session.run_iteration()
    event = info.value.event
    assert (event.step, event.phase, event.module, event.labels[0]) == (
        1,
        Phase.FORWARD,
        None,
        "batch",
    )
    assert "batch" in event.message and event.inputs[0].nan == 1
    session.close()


def loss_log(out):
    return torch.log(out.mean() - 100.0)  # finite output, NaN loss


def test_a_loss_that_goes_nan_from_a_finite_output_is_the_origin():
    session = session_of(nn.Linear(3, 1), inputs=torch.ones(2, 3), loss_fn=loss_log)
    session.arm(["nan"])
    with pytest.raises(BreakStop) as info:
        session.run_iteration()
    event = info.value.event
    assert (event.phase, event.module, event.labels) == (Phase.FORWARD, None, ("output", "loss"))
    assert event.where is not None and event.where.endswith(
        f"test_breaks.py:{loss_log.__code__.co_firstlineno}"
    )
    assert event.outputs[0] is not None and event.outputs[0].nan == 1
    session.close()


def test_an_optimizer_step_that_makes_a_parameter_nonfinite_is_the_origin():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=float("inf"))
    session = session_of(
        model, inputs=torch.ones(2, 3), loss_fn=lambda out: out.mean(), optimizer=optimizer
    )
    session.arm(["nan"])
    with pytest.raises(BreakStop) as info:
        session.run_iteration()
    event = info.value.event
    assert (event.step, event.phase, event.module, event.class_name) == (
        1,
        Phase.OPTIMIZER,
        "0",
        "Linear",
    )
    assert "0.weight" in event.message and event.labels == ("gradient", "parameter")
    assert session.step == 0  # the broken iteration is not counted
    session.close()


# -- the Session API --------------------------------------------------------------------------


def test_on_break_that_returns_lets_the_iteration_go_on_and_trips_once_per_iteration():
    seen = []
    session = Session.load(ORIGIN)
    session.on_break = seen.append
    session.arm(["nan"])
    for _ in range(4):
        result = session.run_iteration()
        assert result.record is not None and result.error is None
    assert [(e.step, e.phase, e.module) for e in seen] == [
        (3, Phase.FORWARD, "blocks.1.gate"),
        # step 3's backward put NaN into every weight: step 4 starts at the first layer
        (4, Phase.FORWARD, "blocks.0.linear"),
    ]
    session.close()


def test_on_break_is_called_inside_the_module_hook():
    session = Session.load(ORIGIN)
    ran = []
    session.model.blocks[1].gate.register_forward_hook(lambda m, a, o: ran.append("gate"))
    session.model.head.register_forward_pre_hook(lambda m, a: ran.append("head"))

    session.on_break = lambda event: ran.append("break")
    session.arm(["nan"])
    for _ in range(3):
        assert session.run_iteration().error is None
    # at step 3 the break came inside the gate's hooks, before the head ran
    assert ran[-3:] == ["gate", "break", "head"]
    session.close()


def test_on_break_raising_abandons_the_iteration_and_leaves_no_hook():
    def abandon(event):
        raise IterationAbandoned()

    session = Session.load(BACKWARD)
    before = hook_state(session.model)
    session.on_break = abandon
    session.arm(["nan"])
    results = [session.run_iteration() for _ in range(3)]
    assert [r.abandoned for r in results] == [False, False, True]
    assert results[-1].phase is Phase.BACKWARD and session.step == 2
    assert session._breaks is not None and session._breaks._transient == []
    session.disarm()
    assert hook_state(session.model) == before
    session.close()


def test_break_stop_carries_the_hook_events_of_the_partial_iteration():
    session = Session.load(BACKWARD)
    session.attach(HookSpec.parse("head:forward"))
    session.arm(["nan"])
    for _ in range(2):
        session.run_iteration()
    with pytest.raises(BreakStop) as info:
        session.run_iteration()
    assert info.value.event.module == "blocks.1.length"
    assert [(e.step, e.module) for e in info.value.events] == [(3, "head")]
    assert not session.in_iteration
    session.close()


# -- watching changes nothing -----------------------------------------------------------------


def test_unarmed_adds_no_hooks():
    session = Session.load(ORIGIN)
    before = hook_state(session.model)
    session.run_iteration()
    assert hook_state(session.model) == before
    session.arm(["nan", "head:output-absmax>1e9"])
    assert hook_state(session.model) != before
    session.disarm()
    assert hook_state(session.model) == before and session.armed == ()
    session.arm(["nan"])
    session.close()
    assert hook_state(session.model) == before


class Mixed(nn.Module):
    """Dropout and an in-place ReLU right after a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Linear(8, 16), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(16, 4)
        )
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


def loss_sq(out: torch.Tensor) -> torch.Tensor:
    return out.pow(2).mean()


NEVER = ["nan", "loss>1e9", "loss<-1e9", "grad-norm>1e9", "block.0:output-absmax>1e9"]


@pytest.mark.parametrize("deferred", [False, True], ids=["decided-at-once", "deferred"])
def test_armed_but_never_tripping_is_bit_identical_to_the_plain_loop(monkeypatch, deferred):
    if deferred:  # the path off the CPU: flags read back after each phase
        monkeypatch.setattr(finite, "_HOST_DEVICE_TYPES", frozenset())
    torch.manual_seed(0)
    plain = Mixed()
    watched = copy.deepcopy(plain)
    x = torch.randn(6, 8, requires_grad=True)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    watched_opt = torch.optim.SGD(watched.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(1)
    for _ in range(3):
        plain_opt.zero_grad()
        loss_sq(plain(x)).backward()
        plain_opt.step()
    plain_rng = torch.get_rng_state()
    plain_x_grad = x.grad.clone()
    x.grad = None

    session = session_of(watched, inputs=x, loss_fn=loss_sq, optimizer=watched_opt)
    before = hook_state(watched)
    session.arm([*NEVER, "block.3:grad-norm>1e9", "step=99"])
    torch.manual_seed(1)
    for _ in range(3):
        result = session.run_iteration()
        assert result.error is None and result.record is not None
    assert torch.equal(plain_rng, torch.get_rng_state())
    assert torch.equal(plain_x_grad, x.grad)
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for a, b in zip(plain.parameters(), watched.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    session.close()
    assert hook_state(watched) == before


@pytest.mark.parametrize("path", [ORIGIN, BACKWARD], ids=["forward", "backward"])
def test_the_deferred_path_finds_the_same_origin(monkeypatch, path):
    monkeypatch.setattr(finite, "_HOST_DEVICE_TYPES", frozenset())
    session = Session.load(path)
    session.arm(["nan"])
    with pytest.raises(BreakStop) as info:
        for _ in range(5):
            session.run_iteration()
    event = info.value.event
    expected = (
        ("blocks.1.gate", Phase.FORWARD) if path == ORIGIN else ("blocks.1.length", Phase.BACKWARD)
    )
    assert (event.step, event.module, event.phase) == (3, *expected)
    assert event.inputs and event.outputs
    session.close()


@pytest.mark.parametrize("deferred", [False, True], ids=["decided-at-once", "deferred"])
def test_finiteness_check_is_exact(monkeypatch, deferred):
    if deferred:
        monkeypatch.setattr(finite, "_HOST_DEVICE_TYPES", frozenset())

    def bad(t: torch.Tensor) -> bool:
        flag = finite.any_bad([t])
        return bool(flag)

    huge = torch.full((8,), 3e38)  # its sum overflows, every value is finite
    assert not bad(huge) and not bad(torch.zeros(0))
    for value in (float("nan"), float("inf"), -float("inf")):
        t = torch.ones(5)
        t[3] = value
        assert bad(t) and bad(t.to(torch.complex64))
    assert not bad(torch.full((4,), 6e4, dtype=torch.float16))  # the sum overflows in fp16
