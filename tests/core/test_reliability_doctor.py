"""The engine on models that break the usual assumptions (docs/design.md sections 2 and 4).

A `state_dict()` that raises, a `named_parameters()`, property or `__repr__` that raises, and a
module registered as its own descendant are located user errors (or nothing), never crashes, in
`tree`, `run`, `check` and the Session. `check` never trusts a copy that still runs the
original's code. ScriptModules are skipped by hooks with a note. The optimizer rules run again
after each step; gradient scale is judged by its growth; Lightning's `example_input_array` is
data; and every finding's sentence agrees with its count.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modscope.cli import main
from modscope.core.contract.findings import Finding, FindingKind
from modscope.core.contract.hook_spec import HookKind, HookSpec, HookSpecError
from modscope.core.contract.steps import Phase
from modscope.core.doctor import rules, run_checks
from modscope.core.doctor.rules.distributed import RankGroup
from modscope.core.model.walk import find_cycle, tensor_at
from modscope.core.script.errors import ScriptError
from modscope.core.session import Session
from tests import doctor_models as D
from tests.helpers import strict

HEADER = "import torch\nfrom torch import nn\n"

TAIL = """
model = Net()
inputs = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
loss_fn = lambda out: out.sum()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""


def write(tmp_path: Path, name: str, body: str) -> tuple[str, str]:
    path = tmp_path / name
    text = HEADER + textwrap.dedent(body)
    path.write_text(text)
    return str(path), text


def line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


COMMANDS = [["tree"], ["run"], ["run", "--hooks", "all"], ["check"]]

# -- the state may fail ---------------------------------------------------------------------------

EXTRA_STATE = (
    """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def get_extra_state(self):
        raise ValueError("cannot serialise this")  # MARK

    def set_extra_state(self, state):
        pass

    def forward(self, x):
        return self.lin(x)
"""
    + TAIL
)

CYCLE_AT_TOP = (
    """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.inner = nn.Sequential(nn.Linear(2, 2))

    def forward(self, x):
        return self.inner(self.lin(x))
"""
    + TAIL
    + """
model.inner.add_module("loop", model)  # MARK
"""
)

CYCLE_IN_INIT = (
    """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.body = nn.Sequential(nn.Linear(2, 2))
        self.body.add_module("back", self)  # MARK

    def forward(self, x):
        return self.body[0](self.lin(x))
"""
    + TAIL
)

CYCLE_ITSELF = (
    """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x)
"""
    + TAIL
    + """
model.add_module("me", model)  # MARK
"""
)

UNREADABLE = {
    "extra_state.py": EXTRA_STATE,
    "cycle_at_top.py": CYCLE_AT_TOP,
    "cycle_in_init.py": CYCLE_IN_INIT,
    "cycle_itself.py": CYCLE_ITSELF,
}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("name", list(UNREADABLE))
def test_an_unreadable_state_is_a_located_load_error(
    name: str, command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script, text = write(tmp_path, name, UNREADABLE[name])
    assert main([*command, script]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert script in captured.err and f"line {line_of(text, '# MARK')}" in captured.err
    assert "Traceback" not in captured.err and "RecursionError" not in captured.err


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_session_load_raises_a_located_script_error(name: str, tmp_path: Path) -> None:
    script, text = write(tmp_path, name, UNREADABLE[name])
    with pytest.raises(ScriptError) as caught:
        Session.load(script)
    error = caught.value.error
    assert (error.file, error.line, error.phase) == (script, line_of(text, "# MARK"), Phase.LOAD)
    if "cycle" in name:
        assert error.exc_type == "ModuleCycle" and "registered as its own descendant" in (
            error.message
        )


def test_a_cycle_in_live_objects_is_refused_by_the_session() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)))
    model[1].add_module("up", model)
    assert find_cycle(model) == ("1.up", "")
    with pytest.raises(ScriptError, match=r"1\.up is the model itself"):
        Session.from_objects(model, inputs=torch.ones(1, 2))


OVERRIDES = """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def named_parameters(self, *args, **kwargs):
        raise RuntimeError("named_parameters is broken here")

    @property
    def device(self):
        raise RuntimeError("no device here")

    def __repr__(self):
        raise RuntimeError("no repr either")

    def forward(self, x):
        return self.lin(x)

model = Net()
inputs = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
loss_fn = lambda out: out.sum()
optimizer = torch.optim.SGD(model.lin.parameters(), lr=0.1)
"""


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_methods_that_raise_do_not_stop_the_commands(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script, _ = write(tmp_path, "overrides.py", OVERRIDES)
    assert main([*command, script, "--json"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    for line in captured.out.splitlines():
        strict(line)


def test_a_model_found_by_a_method_that_raises_is_a_load_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = OVERRIDES.replace("model = Net()", "net = Net()").replace("model.lin", "net.lin")
    body = body.replace('raise RuntimeError("named_parameters', 'raise RuntimeError("named_p')
    script, text = write(tmp_path, "found.py", body)
    assert main(["tree", script]) == 2
    err = capsys.readouterr().err
    assert script in err and f"line {line_of(text, 'named_p is broken')}" in err
    assert "Traceback" not in err


def test_a_state_dict_that_fails_after_a_step_is_an_error_of_that_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = EXTRA_STATE.replace(
        'raise ValueError("cannot serialise this")  # MARK',
        "if self.lin.weight.grad is not None:\n"
        '            raise ValueError("cannot serialise this")  # MARK\n'
        "        return {}",
    )
    script, text = write(tmp_path, "later.py", body)
    assert main(["run", script, "--json"]) == 2
    captured = capsys.readouterr()
    (error,) = [strict(line) for line in captured.out.splitlines()[-1:]]
    assert error["event"] == "error" and error["step"] == 1
    assert (error["file"], error["line"]) == (script, line_of(text, "# MARK"))
    assert "Traceback" not in captured.err


# -- a copy that shares code paths with the original ----------------------------------------------


class MinGPTBlock(nn.Module):
    """minGPT's block: its MLP is a lambda over its own submodules (deepcopy keeps it)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.mlp = nn.ModuleDict(
            dict(c_fc=nn.Linear(d, 4 * d), c_proj=nn.Linear(4 * d, d), act=nn.GELU())
        )
        m = self.mlp
        self.mlpf = lambda x: m.c_proj(m.act(m.c_fc(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlpf(self.ln(x))


class MinGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(MinGPTBlock(8), MinGPTBlock(8))
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(x)))


ORIGINALS: dict[str, Any] = {}


class CallsOriginalModule(nn.Module):
    """Calls a module it finds through a global: a copy calls the original's."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)
        ORIGINALS["head"] = self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ORIGINALS["head"](self.lin(x))


class UsesOriginalWeight(nn.Module):
    """Uses a weight it finds through a global: a copy's backward fills the original's .grad."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(4, 4))
        ORIGINALS["scale"] = self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.lin(x), ORIGINALS["scale"])


def _state_of(model: nn.Module) -> dict[str, Any]:
    out: dict[str, Any] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out.update({f"{n}.grad": p.grad for n, p in model.named_parameters()})
    return out


def _unchanged(before: dict[str, Any], model: nn.Module) -> bool:
    after = _state_of(model)
    return before.keys() == after.keys() and all(
        (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
        for a, b in ((before[k], after[k]) for k in before)
    )


@pytest.mark.parametrize("make", [MinGPT, CallsOriginalModule, UsesOriginalWeight])
def test_check_never_trusts_a_copy_that_runs_the_original(make: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = make()
    x = torch.randn(4, 8 if make is MinGPT else 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _state_of(model)
    session = D.session_for(model, inputs=x, loss_fn=D.output_sum, optimizer=optimizer)
    result = run_checks(session, steps=2)
    assert result.error is None and result.steps_run == 2
    assert result.findings == ()  # no unused-parameter on the copy's idle layers
    assert result.where is not None and "model itself" in result.where
    assert any("still runs the model's own code" in n for n in result.notes)
    assert _unchanged(before, model)
    assert not optimizer.state


def test_a_mingpt_script_checks_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = """
    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.ln = nn.LayerNorm(d)
            self.mlp = nn.ModuleDict(dict(
                c_fc=nn.Linear(d, 4 * d), c_proj=nn.Linear(4 * d, d), act=nn.GELU(),
                dropout=nn.Dropout(0.1),
            ))
            m = self.mlp
            self.mlpf = lambda x: m.dropout(m.c_proj(m.act(m.c_fc(x))))

        def forward(self, x):
            return x + self.mlpf(self.ln(x))

    model = nn.Sequential(Block(8), Block(8), nn.Linear(8, 1))
    inputs = torch.randn(4, 8)
    loss_fn = lambda out: out.pow(2).mean()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    """
    script, _ = write(tmp_path, "mingpt.py", body)
    assert main(["check", script, "--json", "--steps", "2"]) == 0
    report = strict(capsys.readouterr().out)
    assert report["findings"] == [] and report["steps_run"] == 2


# -- ScriptModules --------------------------------------------------------------------------------

SCRIPTED = (
    """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.scripted = torch.jit.script(nn.Linear(2, 2))

    def forward(self, x):
        return self.scripted(self.lin(x))
"""
    + TAIL
)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_script_modules_are_skipped_with_a_note(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script, _ = write(tmp_path, "scripted.py", SCRIPTED)
    assert main([*command, script, "--json"]) == 0
    captured = capsys.readouterr()
    lines = [strict(line) for line in captured.out.splitlines()]
    assert "Traceback" not in captured.err
    if command[0] == "check":
        assert lines[0]["findings"] == []
        assert "1 ScriptModule (scripted)" in captured.err
    if command[1:] == ["--hooks", "all"]:
        modules = {e["module"] for e in lines if e["event"] == "hook"}
        assert "lin" in modules and "scripted" not in modules


def test_hooks_skip_script_modules_and_say_so() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.scripted = torch.jit.script(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.scripted(self.lin(x))

    session = Session.from_objects(Net(), inputs=torch.ones(3, 2), loss_fn=D.output_sum)
    added = session.attach(HookSpec("*", HookKind.FORWARD))
    assert [h.path for h in added] == ["", "lin"]
    assert session.hooks.skipped == ("scripted",)
    assert session.hooks.skipped_note() == (
        "skipped 1 ScriptModule (scripted): PyTorch refuses hooks on them"
    )
    assert any("1 ScriptModule (scripted)" in note for note in session.notes())
    with pytest.raises(HookSpecError, match="ScriptModule"):
        session.attach(HookSpec("scripted.0", HookKind.FORWARD))
    assert session.run_iteration().record is not None
    assert tensor_at(session.model, "scripted.0.weight") is session.model.scripted[0].weight
    session.close()


# -- the optimizer rules after a step -------------------------------------------------------------

REPLACED = (
    """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, x):
        self.w = nn.Parameter(torch.ones(2))
        return self.lin(x) * self.w
"""
    + TAIL
)


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_parameter_replaced_by_forward_is_noticed_after_the_first_step(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script, _ = write(tmp_path, "replaced.py", REPLACED)
    status = main([command, script, "--json", "--steps", "2"])
    lines = [strict(line) for line in capsys.readouterr().out.splitlines()]
    findings = lines[0]["findings"] if command == "check" else lines
    found = {(f["kind"], f["step"]) for f in findings if f.get("event", "finding") == "finding"}
    assert ("not-in-optimizer", 1) in found and ("stale-optimizer", 1) in found
    assert status == (1 if command == "check" else 0)
    replaced = next(f for f in findings if f.get("kind") == "not-in-optimizer")
    assert replaced["path"] == "w" and "during step 1" in replaced["message"]


# -- gradient scale -------------------------------------------------------------------------------


def convnet() -> nn.Module:
    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

    torch.manual_seed(0)
    return nn.Sequential(block(3, 8), block(8, 8), block(8, 8), nn.Flatten(), nn.Linear(512, 4))


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 3, 8, 8, generator=g), torch.randn(32, 4, generator=g)


def test_a_fresh_convnet_with_a_summed_loss_is_no_exploding_gradient() -> None:
    model = convnet()
    x, y = _images()
    session = D.session_for(
        model,
        inputs=x,
        loss_fn=lambda out: F.mse_loss(out, 10 * y, reduction="sum"),
        optimizer=torch.optim.SGD(model.parameters(), lr=1e-4),
    )
    result = run_checks(session, steps=3)
    assert result.steps_run == 3 and result.findings == ()


def test_a_convnet_blowing_up_is_an_exploding_gradient() -> None:
    model = convnet()
    x, y = _images()
    session = D.session_for(
        model,
        inputs=x,
        loss_fn=lambda out: F.cross_entropy(out, y.argmax(1)),
        optimizer=torch.optim.SGD(model.parameters(), lr=1e3),
    )
    result = run_checks(session, steps=3)
    exploding = [f for f in result.findings if f.kind is FindingKind.EXPLODING_GRADIENT]
    assert [f.step for f in exploding] == [2]
    assert "times the" in exploding[0].message


def test_gradient_growth_counts_only_while_the_loss_does_not_fall() -> None:
    from modscope.core.contract.steps import StateDiff, StepRecord
    from modscope.core.doctor import AfterStepRules
    from modscope.core.stats.summary import summarize

    model = nn.Linear(2, 1)
    watcher = AfterStepRules(D.session_for(model, inputs=torch.ones(1, 2)))

    def step(n: int, norm: float, loss: float) -> list[Finding]:
        grads = {
            "weight": summarize(torch.tensor([[norm, 0.0]])),
            "bias": summarize(torch.zeros(1)),
        }
        return watcher.after_step(StepRecord(n, "train", loss, None, {}, grads, StateDiff()))

    assert step(1, 1e-9, 5.0) == []
    assert step(2, 1e-7, 6.0) == []  # 100 times a tiny norm: still tiny
    assert step(3, 0.5, 4.0) == []
    assert step(4, 20.0, 3.0) == []  # grew 40 times while the loss fell
    (f,) = step(5, 400.0, 3.5)  # grew 20 times while the loss rose
    assert (f.kind, f.step) == (FindingKind.EXPLODING_GRADIENT, 5)
    assert "20 times the 20 of step 4" in f.message


# -- Lightning's example_input_array ------------------------------------------------------------


def test_example_input_array_is_not_unregistered_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lightning_like = """
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.example_input_array = torch.zeros(3, 2)

        def forward(self, x):
            return self.lin(x)
    """
    body = textwrap.dedent(lightning_like) + TAIL
    script, _ = write(tmp_path, "lightning_like.py", body)
    assert main(["check", script, "--json"]) == 0
    assert strict(capsys.readouterr().out)["findings"] == []
    assert main(["tree", script, "--json"]) == 0
    assert strict(capsys.readouterr().out)["unregistered"] == []


# -- every finding's sentence agrees with its count -----------------------------------------------


def _names(n: int) -> list[str]:
    return [f"body.{i}.weight" for i in range(n)]


def _each_kind(n: int) -> list[Finding]:
    """Every kind of finding (each wording variant) about `n` objects (n >= 2 where a kind
    needs two: sharing, tying, placement)."""
    names, two = _names(n), max(n, 2)
    types = ["Linear"] * n
    ranks = [
        rules.RankValue((0,), 0.1, 1.0, 7),
        rules.RankValue(tuple(range(1, n + 1)), 0.2, 2.0, 9),
    ]
    out = [
        rules.unregistered_container(
            "module", "blocks", "blocks", "list", names, types, "Net", n, False
        ),
        rules.unregistered_container(
            "parameter", "ps", "ps", "dict", names, types, "Net", 0, False
        ),
        rules.unregistered_container("tensor", "ts", "ts", "tuple", names, types, None, 0, False),
        rules.unregistered_item("module", "xs[0]", "xs", "list", "Linear", None, "Net", n),
        rules.unregistered_item("parameter", "xs[1]", "xs", "list", "Parameter", [n], "Net", 0),
        rules.unregistered_item("tensor", "xs[2]", "xs", "list", "Tensor", [n], "Net", 0),
        rules.unregistered_item("tensor", "cache", "cache", None, "Tensor", [n], "Net", 0),
        rules.buffer_grad_history("norm.mean", "AddBackward0", True, 1),
        rules.buffer_grad_history("norm.mean", None, True, None),
        rules.unused_parameter("body.0", "Linear", names, 1),
        rules.unused_parameter("", "", names, 1),
        rules.not_in_optimizer("body.0", "Linear", names),
        rules.not_in_optimizer("body.0", "Linear", names, 3),
        rules.frozen_in_optimizer("body.0", "Linear", names),
        rules.stale_optimizer("optimizer.param_groups[0]['params'][0]", names, ["[2] float32"] * n),
        rules.stale_optimizer("optimizer.param_groups[0]['params'][0]", names, ["[2]"] * n, 2),
        rules.eval_nondeterministic("body.1", "Drop"),
        rules.eval_nondeterministic("", "Net"),
        rules.legacy_backward_hook("body", "Linear", [f"hook{i} (a.py:{i})" for i in range(n)]),
        rules.global_legacy_backward_hook([f"hook{i}" for i in range(n)]),
        rules.shared_parameter(_names(two)),
        rules.shared_module(["enc", "dec"], "Linear", ["weight", "bias"][:n] or ["weight"]),
        rules.reused_module("body", "Linear", 2, names, 1),
        rules.mode_mismatch("body.1", "BatchNorm1d", False, True, None),
        rules.mode_mismatch("body.1", "Dropout", True, False, 2),
        rules.device_mismatch("body", "Linear", ["weight cpu", "bias cuda:0"]),
        rules.dtype_mismatch("body", "Linear", ["weight float32", "bias float16"]),
        rules.exploding_gradient(2e6, 3),
        rules.exploding_gradient(5e3, 3, previous=2.0),
        rules.vanishing_gradient(1e-12, 2.5, 1),
        rules.nonfinite("loss", (), 1, "body.1", "Log", float("nan")),
        rules.nonfinite("output", (), None, None, None, float("-inf")),
        rules.rank_divergence(
            names[0],
            kind="buffer",
            step=1,
            values=ranks,
            world_size=n + 1,
            others=names[1:],
            wrapped=False,
        ),
        rules.rank_divergence(
            names[0], kind="parameter", step=0, values=ranks, world_size=n + 1, others=names[1:]
        ),
        rules.rank_divergence(
            names[0], kind="frozen parameter", step=2, values=ranks, world_size=n + 1
        ),
        rules.rank_layout_divergence(
            1, n + 1, [RankGroup((0,), 12), RankGroup(tuple(range(1, n + 1)), n)]
        ),
        rules.update_ratio(
            [rules.WeightRatio(name, "body.0", "Linear", (0.5, 0.4, 0.3), 0.5) for name in names], 3
        ),
        rules.update_ratio(
            [rules.WeightRatio(name, "body.0", "Linear", (1e-8,) * 3, None) for name in names], 3
        ),
        rules.training_in_eval([(f"body.{i}", "Dropout") for i in range(n)], 1),
        rules.grad_accumulation([1.0, 2.0, 3.0], 3),
        rules.torch_warning("UserWarning", "sizes differ", "model.py:3", "torch/nn/f.py:1", 2),
        rules.dead_units("body.1", "ReLU", n, 3),
        rules.saturated("body.2", "Sigmoid", 0.85, n, 3),
    ]
    out += [rules.nonfinite(what, names, 2) for what in ("parameters", "gradients", "buffers")]
    if n == 1:  # reported alone: one parameter whose module holds others
        out += [
            rules.unused_parameter(names[0], None, names, 1),
            rules.not_in_optimizer(names[0], None, names),
            rules.frozen_in_optimizer(names[0], None, names),
        ]
    return out


NOUN = r"(?:trainable |frozen |plain )?(?:module|parameter|Parameter|tensor|name|hook|buffer)"
EVERYWHERE = [
    re.compile(rf"\b1 {NOUN}s\b"),  # "1 parameters"
    re.compile(rf"\b(?:[2-9]|[1-9]\d+) {NOUN}\b(?!s)"),  # "2 parameter"
    re.compile(r"\bthem (?:never|is|are|train|trains)\b"),  # "so them never train"
    re.compile(r"\b(?:it|this \w+) (?:are|train|stay|receive|hold)\b"),
    re.compile(r"\b(?:they|these \w+) (?:is|trains|stays|receives|holds)\b"),
    re.compile(r"the model \(the model\)|  |\bthe the\b|\ba a\b"),
]
ONE = [re.compile(r"\b(?:they|them|their|these|are in)\b")]
# Kinds whose sentences count nothing (or always two or more things).
UNCOUNTED = {
    FindingKind.BUFFER_GRAD_HISTORY,
    FindingKind.EVAL_NONDETERMINISTIC,
    FindingKind.SHARED_PARAMETER,
    FindingKind.MODE_MISMATCH,
    FindingKind.DEVICE_MISMATCH,
    FindingKind.DTYPE_MISMATCH,
    FindingKind.EXPLODING_GRADIENT,
    FindingKind.VANISHING_GRADIENT,
    FindingKind.GRAD_ACCUMULATION,
    FindingKind.TORCH_WARNING,
}
TWO = [
    re.compile(r"\b(?:freeze|add|remove|use|leave|changes|unfreezing) it\b"),
    re.compile(r"\b(?:is in no|it never|it stays|a hook from|this legacy hook)\b"),
]


@pytest.mark.parametrize("n", [1, 2])
def test_every_finding_reads_right_for_one_and_for_two(n: int) -> None:
    found = _each_kind(n)
    assert {f.kind for f in found} == set(FindingKind)
    for f in found:
        text = f"{f.message} | {f.fix}"
        assert f.message.endswith("."), f.message
        counted = [] if f.kind in UNCOUNTED else ONE if n == 1 else TWO
        for pattern in EVERYWHERE + counted:
            assert not pattern.search(text), (f.kind, pattern.pattern, text)


def test_the_sentences_that_went_wrong_before() -> None:
    one, two = _names(1), _names(2)
    assert "so it never trains" in rules.unused_parameter("body.0", "Linear", one, 1).message
    assert "so they never train" in rules.unused_parameter("body.0", "Linear", two, 1).message
    assert "use them in forward" in rules.unused_parameter("body.0", "Linear", two, 1).fix
    assert "or add it:" in rules.not_in_optimizer(one[0], None, one).fix
    assert "it stays frozen" in rules.frozen_in_optimizer(one[0], None, one).message
    assert "is shared, and its gradient" in rules.shared_module(["a", "b"], "L", ["w"]).message
    grouped = rules.unused_parameter("", "", two, 1).message
    assert grouped.startswith("the model: its 2 trainable parameters")
    hooks = rules.legacy_backward_hook("body", "Linear", ["h1", "h2"]).message
    assert "carries 2 hooks from register_backward_hook (h1 and h2): these legacy hooks" in hooks
