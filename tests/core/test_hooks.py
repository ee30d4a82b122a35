"""modscope's hooks: specs, what they see, bit-identical observation, and leaving no trace."""

from __future__ import annotations

import copy
import textwrap

import pytest
import torch
from torch import nn

from modscope.core.contract.hook_notes import (
    FULL_BESIDE_LEGACY,
    LEGACY_BESIDE_FULL,
    backward_conflict,
)
from modscope.core.contract.hook_spec import HookAction, HookKind
from modscope.core.contract.steps import Phase
from modscope.core.hooks.listing import detach_foreign, list_hooks
from modscope.core.hooks.manager import HookManager, HookSpec, HookSpecError, all_hooks_specs
from modscope.core.session import Session
from tests.helpers import ROOT, hook_state


class Mixed(nn.Module):
    """Dropout, MultiheadAttention (self-attention: query is key) and an in-place ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 4, dropout=0.1, batch_first=True)
        self.block = nn.Sequential(
            nn.Linear(16, 16), nn.ReLU(inplace=True), nn.Dropout(0.2), nn.Linear(16, 4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        a, _ = self.attn(h, h, h)
        return self.block(a + h)


def loss_of(out: torch.Tensor) -> torch.Tensor:
    return out.pow(2).mean()


def make_session(model: nn.Module, optimizer, inputs) -> Session:
    return Session.from_objects(
        model, inputs=inputs, loss_fn=loss_of, optimizer=optimizer, origin=__file__
    )


def test_spec_parsing():
    assert HookSpec.parse("logModel:forward-pre:scale=2") == HookSpec(
        "logModel", HookKind.FORWARD_PRE, HookAction.SCALE, 2.0
    )
    assert HookSpec.parse(".:forward") == HookSpec("", HookKind.FORWARD)
    assert HookSpec.parse("a:b:backward:zero") == HookSpec(
        "a:b", HookKind.BACKWARD, HookAction.ZERO
    )
    assert str(HookSpec.parse("m:backward-pre:scale=0.5")) == "m:backward-pre:scale=0.5"
    for bad in (
        "logModel",
        "logModel:sideways",
        "m:forward:scale",
        "m:forward:explode",
        "m:forward:zero=3",
    ):
        with pytest.raises(HookSpecError):
            HookSpec.parse(bad)


def test_unknown_module_is_a_clear_error():
    session = make_session(Mixed(), None, torch.ones(2, 3, 8))
    with pytest.raises(HookSpecError, match="no module 'blok'"):
        session.attach(HookSpec.parse("blok:forward"))


def test_all_hooks_run_is_bit_identical_to_the_plain_loop():
    torch.manual_seed(0)
    plain = Mixed()
    observed = copy.deepcopy(plain)
    x = torch.randn(2, 5, 8, requires_grad=True)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    observed_opt = torch.optim.SGD(observed.parameters(), lr=0.1, momentum=0.9)

    torch.manual_seed(1)
    for _ in range(3):
        plain_opt.zero_grad()
        loss = loss_of(plain(x))
        loss.backward()
        plain_opt.step()
    plain_rng = torch.get_rng_state()

    session = make_session(observed, observed_opt, x)
    before = hook_state(observed)
    for spec in all_hooks_specs():
        session.attach(spec)
    torch.manual_seed(1)
    kinds = set()
    for _ in range(3):
        result = session.run_iteration()
        assert result.error is None, result.error
        kinds |= {(e.module, e.kind) for e in result.events}
    assert torch.equal(plain_rng, torch.get_rng_state())
    for (name, a), b in zip(
        plain.state_dict().items(), observed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    # the in-place ReLU after block.0 and the attention's inputs were observed without a failure
    assert ("block.0", HookKind.BACKWARD) in kinds and ("attn", HookKind.BACKWARD_PRE) in kinds
    session.close()
    assert hook_state(observed) == before


def test_observing_hooks_of_a_module_share_one_forward_pre_and_one_forward_hook():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    session = make_session(model, None, torch.randn(5, 3))
    before = hook_state(model)
    for spec in all_hooks_specs():
        session.attach(spec)
    # Four modscope hooks a module, two registrations: the cheapest way to see the same values.
    for _, m in model.named_modules():
        assert (len(m._forward_pre_hooks), len(m._forward_hooks)) == (1, 1)
    rows = list_hooks(model, "1", manager=session.hooks)
    assert sorted((h.kind, h.owner) for h in rows) == [
        ("backward", "modscope"),
        ("backward-pre", "modscope"),
        ("forward", "modscope"),
        ("forward-pre", "modscope"),
    ]
    assert {h.kind: h.flags for h in rows}["backward"] == ("via tensor hooks",)
    assert len({h.hook_id for h in rows}) == 4
    session.run_phase()  # the forward: one tensor hook per activation, not one per observer
    assert len(session.hooks._transient) == 3  # the outputs of 0, 1 and 2 (2's is the root's)
    session.run_phase()
    events = session.run_phase().events + session.run_iteration().events
    seen = [(e.module, e.kind) for e in events if e.phase is Phase.BACKWARD]
    # Each gradient once to each observer; a module's backward-pre before its backward.
    assert (
        seen.count(("1", HookKind.BACKWARD_PRE)) == 1 and seen.count(("1", HookKind.BACKWARD)) == 1
    )
    assert seen.index(("1", HookKind.BACKWARD_PRE)) < seen.index(("1", HookKind.BACKWARD))
    tanh_back = next(e for e in events if (e.module, e.kind) == ("1", HookKind.BACKWARD))
    linear_out = next(e for e in events if (e.module, e.kind) == ("0", HookKind.BACKWARD_PRE))
    assert tanh_back.grad_input == linear_out.grad_output  # one gradient, captured once
    # Detaching one leaves the others firing; detaching all leaves the module as it was.
    forward_of_1 = next(h for h in rows if h.kind == "forward")
    session.detach(forward_of_1.hook_id)
    assert len(model[1]._forward_hooks) == 1
    kinds = {(e.module, e.kind) for e in session.run_iteration().events}
    assert ("1", HookKind.FORWARD) not in kinds and ("1", HookKind.BACKWARD) in kinds
    session.close()
    assert hook_state(model) == before


def test_an_observing_hook_after_anothers_hook_gets_its_own_registration():
    model = nn.Sequential(nn.Linear(2, 2))
    session = make_session(model, None, torch.ones(1, 2))

    def doubles(module, args, output):
        return output * 2

    session.attach(HookSpec.parse("0:forward"))
    handle = model[0].register_forward_hook(doubles)
    session.attach(HookSpec.parse("0:backward-pre"))
    # Sharing the first registration would run before `doubles`; a hook of its own runs after.
    assert len(model[0]._forward_hooks) == 3
    events = session.run_iteration().events
    output = next(e for e in events if e.kind is HookKind.FORWARD).output[0]  # before doubling
    grad = next(e for e in events if e.kind is HookKind.BACKWARD_PRE).grad_output[0]
    # loss = mean(y^2) of y = 2 * output over 2 elements: dL/dy = y, and dL/doutput = 2y.
    assert grad.norm == pytest.approx(2 * output.norm, rel=1e-6)
    session.close()
    assert list(model[0]._forward_hooks.values()) == [doubles]
    handle.remove()


def test_changing_a_gradient_uses_a_full_hook_and_detach_restores_the_flag():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    session = make_session(model, None, torch.ones(1, 2))
    target = model[1]
    assert target._is_full_backward_hook is None
    [hook] = session.attach(HookSpec.parse("1:backward:zero"))
    assert target._is_full_backward_hook is True
    result = session.run_iteration()
    # layer 1's grad_input is zeroed: nothing reaches layer 0; layer 1's own grads stay
    assert result.record.grads["0.weight"].all_zero
    assert result.record.grads["1.weight"].norm > 0
    event = next(e for e in result.events if e.kind is HookKind.BACKWARD)
    assert "full backward hook" in event.note
    session.detach(hook.hook_id)
    assert target._is_full_backward_hook is None
    # a legacy hook is now allowed on the same module (PyTorch refuses it beside a full one)
    session.attach(HookSpec.parse("1:legacy-backward"))


def test_a_legacy_hook_beside_a_full_one_is_refused_in_the_dialogs_words():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    session = make_session(model, None, torch.ones(1, 2))
    session.attach(HookSpec.parse("1:backward:zero"))
    with pytest.raises(HookSpecError) as info:
        session.attach(HookSpec.parse("1:legacy-backward"))
    assert str(info.value) == backward_conflict(HookKind.LEGACY_BACKWARD, "1")
    assert LEGACY_BESIDE_FULL in str(info.value)
    other = make_session(nn.Sequential(nn.Linear(2, 1)), None, torch.ones(1, 2))
    other.attach(HookSpec.parse(":legacy-backward"))
    with pytest.raises(HookSpecError) as info:
        other.attach(HookSpec.parse(":backward:zero"))
    assert str(info.value) == backward_conflict(HookKind.BACKWARD, "the root")
    assert FULL_BESIDE_LEGACY in str(info.value)


def test_zero_on_backward_pre_zeroes_upstream_gradients():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    session = make_session(model, None, torch.ones(1, 2))
    session.attach(HookSpec.parse("1:backward-pre:zero"))
    record = session.run_iteration().record
    assert record.grads["0.weight"].all_zero and record.grads["1.weight"].all_zero


def test_foreign_hooks_are_listed_with_name_and_line_and_detached_on_request():
    model = nn.Sequential(nn.Linear(2, 2))

    def tap(module, args, output):
        return None

    handle = model[0].register_forward_hook(tap, always_call=True)
    session = make_session(model, None, torch.ones(1, 2))
    session.attach(HookSpec.parse("0:backward"))
    hooks = list_hooks(model, "0", manager=session.hooks, script=__file__)
    foreign = next(h for h in hooks if h.qualname.endswith("tap"))
    assert foreign.owner == "script" and "always_call" in foreign.flags
    assert foreign.location.endswith(f"test_hooks.py:{tap.__code__.co_firstlineno}")
    ours = next(h for h in hooks if h.owner == "modscope")
    assert ours.kind == "backward" and "via tensor hooks" in ours.flags
    session.close()
    assert list(model[0]._forward_hooks.values()) == [tap]  # foreign hooks stay unless asked
    detach_foreign(model, foreign)
    assert not model[0]._forward_hooks and not model[0]._forward_hooks_always_called
    handle.remove()


def test_global_hooks_are_listed():
    model = nn.Linear(2, 2)

    def global_tap(module, args):
        return None

    handle = nn.modules.module.register_module_forward_pre_hook(global_tap)
    try:
        hooks = list_hooks(model, "")
        assert any(h.owner == "global" and h.qualname.endswith("global_tap") for h in hooks)
    finally:
        handle.remove()


def test_error_mid_backward_leaves_no_tensor_hook_behind():
    model = nn.Linear(2, 1)
    x = torch.ones(1, 2, requires_grad=True)

    def bad_loss(out):
        return out.sum() * float("nan")

    session = Session.from_objects(model, inputs=x, loss_fn=bad_loss, origin=__file__)
    session.attach(HookSpec.parse(".:backward"))
    session.run_phase()
    assert session.hooks._transient  # tensor hooks live during the iteration
    session.run_phase()
    assert not session.hooks._transient
    assert x._backward_hooks in (None, {}) or not x._backward_hooks


def test_pause_needs_the_app():
    session = make_session(nn.Linear(2, 1), None, torch.ones(2))
    with pytest.raises(HookSpecError, match="app"):
        session.attach(HookSpec.parse(".:forward:pause"))


def test_headless_run_does_not_import_textual(tmp_path):
    import subprocess
    import sys

    code = textwrap.dedent("""
        import contextlib, io, sys
        from modscope.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            for argv in (["run", "examples/powlog.py", "--steps", "2", "--hooks", "all"],
                         ["tree", "examples/tiny_lm.py"], ["run", "examples/hooks.py", "--json"]):
                assert main(argv) == 0, argv
        leaked = sorted(m for m in sys.modules if m.split(".")[0] == "textual")
        assert not leaked, leaked
        assert "modscope.tui" not in sys.modules
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_a_module_named_with_control_characters_is_found_by_its_escaped_name() -> None:
    model = nn.Sequential()
    model.add_module("bad\x1b[31mred", nn.Linear(2, 2))
    manager = HookManager(model, emit=lambda draft: None, context=lambda: (1, Phase.FORWARD))
    # Every screen shows the name escaped; that form, copied from the screen, names it.
    [(path, module)] = manager.resolve_modules("bad\\x1b[31mred")
    assert path == "bad\x1b[31mred" and module is model[0]
    with pytest.raises(HookSpecError) as refused:
        manager.resolve_modules("bad\\x1b[31mrde")
    assert "did you mean bad\\x1b[31mred?" in str(refused.value)
