"""Rewind: checkpoints before each iteration, restored bit for bit, thinned to a budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from modscope.cli import main
from modscope.core.contract.hook_spec import HookAction, HookKind, HookSpec
from modscope.core.contract.sizes import SizeError, host_available, parse_size
from modscope.core.hooks.manager import IterationAbandoned, all_hooks_specs
from modscope.core.rewind.checkpoints import RewindError, keeps
from modscope.core.session import Session, SessionOptions
from tests.helpers import POWLOG


def state_of(session: Session) -> dict[str, torch.Tensor]:
    """Every tensor a re-run must reproduce: the state_dict, the grads, the optimizer state."""
    out = {f"state.{k}": v.detach().clone() for k, v in session.model.state_dict().items()}
    for name, p in session.model.named_parameters():
        if p.grad is not None:
            out[f"grad.{name}"] = p.grad.clone()
    if session.optimizer is not None:
        for i, per_param in session.optimizer.state_dict()["state"].items():
            for key, value in per_param.items():
                if isinstance(value, torch.Tensor):
                    out[f"optim.{i}.{key}"] = value.clone()
    return out


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def run(session: Session, n: int) -> list[float | None]:
    losses = []
    for _ in range(n):
        result = session.run_iteration()
        assert result.error is None, result.error
        losses.append(result.loss)
    return losses


def assert_rewind_reruns(session: Session, steps: int, back: int) -> None:
    """Run `steps` iterations, rewind to step `back` and run to `steps` again: the same losses
    and the same end state (model, grads, optimizer)."""
    losses = run(session, steps)
    final = state_of(session)
    session.rewind(back)
    assert run(session, steps - back) == losses[back:]
    assert_same(state_of(session), final)


def params(session: Session) -> tuple[str, str]:
    m = session.model
    return f"{m.powModel.powParam.item():.4f}", f"{m.logModel.logParam.item():.4f}"


def test_powlog_rewind_and_rerun() -> None:
    session = Session.load(POWLOG, options=SessionOptions(rewind=True))
    run(session, 10)
    assert params(session) == ("1.2430", "1.9815")
    first = state_of(session)
    session.rewind(5)
    assert session.step == 5
    assert params(session) == ("1.2367", "1.9618")
    assert [r.step for r in session.history] == [1, 2, 3, 4, 5]
    run(session, 5)
    assert params(session) == ("1.2430", "1.9815")
    assert_same(state_of(session), first)
    session.rewind(0)
    assert params(session) == ("1.0000", "1.0000")
    session.close()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3))
        self.norm = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(self.head(self.norm(self.body(x))), y)


def shuffled_session(
    *, budget: int | None = None, hooks: bool = True, seeded: bool = True
) -> Session:
    torch.manual_seed(0)
    model = Net()
    data = TensorDataset(torch.randn(40, 8), torch.randn(40, 1))
    # Without a generator the loader draws its order from torch's RNG at each epoch.
    generator = torch.Generator().manual_seed(1) if seeded else None
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    session = Session.from_objects(
        model,
        inputs=loader,
        optimizer=optimizer,
        scheduler=scheduler,
        options=SessionOptions(rewind=True, rewind_budget=budget),
    )
    if hooks:
        for spec in all_hooks_specs():
            session.attach(spec)
        session.attach(HookSpec("body.0", HookKind.FORWARD_PRE, HookAction.SCALE, 1.5))
    return session


@pytest.mark.parametrize("seeded", [True, False])
@pytest.mark.parametrize("back_to", [0, 3, 7])
def test_rerun_is_bit_identical(back_to: int, seeded: bool) -> None:
    session = shuffled_session(seeded=seeded)
    losses = run(session, 12)  # more than one epoch (5 batches an epoch)
    final = state_of(session)
    session.rewind(back_to)
    again = run(session, 12 - back_to)
    assert again == losses[back_to:]
    assert_same(state_of(session), final)
    assert session.optimizer.param_groups[0]["lr"] == 1e-2 * 0.5**4
    session.close()


def test_thinning_keeps_step_zero_and_newest() -> None:
    session = shuffled_session(hooks=False)
    run(session, 1)
    one = session._checkpoints.nbytes  # one checkpoint and one kept batch
    session.rewind(0)
    session = shuffled_session(budget=6 * one, hooks=False)
    losses = run(session, 30)
    final = state_of(session)
    steps = session.reachable_steps()
    assert steps[0] == 0 and steps[-1] == 30 and 29 in steps
    assert len(steps) < 12
    assert session._checkpoints.nbytes <= 6 * one
    assert session.rewind_note() is None
    # A thinned step: restored from the nearest earlier checkpoint, then re-run.
    missing = next(s for s in range(30) if s not in steps)
    session.rewind(missing)
    assert session.step == missing
    assert run(session, 30 - missing) == losses[missing:]
    assert_same(state_of(session), final)


def test_keeps_rule() -> None:
    kept = [s for s in range(101) if keeps(s, 100)]
    assert kept[0] == 0 and kept[-4:] == [97, 98, 99, 100]
    assert len(kept) < 20
    # once dropped, never wanted again
    for newest in range(1, 200):
        for s in range(newest):
            if not keeps(s, newest):
                assert not keeps(s, newest + 1)


def test_budget_too_small_disables_rewind() -> None:
    session = shuffled_session(budget=100, hooks=False)
    run(session, 3)
    note = session.rewind_note()
    assert note is not None and "rewind is off" in note and "budget" in note
    assert session.reachable_steps() == ()
    with pytest.raises(RewindError):
        session.rewind(1)


def test_rewind_off() -> None:
    session = Session.load(POWLOG)
    run(session, 2)
    assert session.reachable_steps() == ()
    assert "rewind=False" in (session.rewind_note() or "")
    with pytest.raises(RewindError):
        session.rewind(0)


def test_rewind_drops_partial_iteration() -> None:
    session = shuffled_session()
    run(session, 4)
    expected = run(session, 2)
    final = state_of(session)
    session.rewind(4)
    session.run_phase()  # forward
    session.run_phase()  # backward: grads written
    assert session.in_iteration
    session.rewind(4)
    assert not session.in_iteration and session.step == 4
    assert run(session, 2) == expected
    assert_same(state_of(session), final)


def test_rewind_out_of_range() -> None:
    session = Session.load(POWLOG, options=SessionOptions(rewind=True))
    run(session, 2)
    with pytest.raises(ValueError):
        session.rewind(3)
    with pytest.raises(ValueError):
        session.rewind(-1)


def test_list_inputs_and_function_inputs_replay() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    batches = [torch.randn(3, 4) for _ in range(3)]
    for inputs in (batches, lambda: torch.randn(3, 4)):
        session = Session.from_objects(
            model,
            inputs=inputs,
            loss_fn=lambda out: out.square().mean(),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            options=SessionOptions(rewind=True),
        )
        assert_rewind_reruns(session, 7, 2)
        session.rewind(0)
        session.close()


SCRIPT_WITH_A_GENERATOR = """
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))
data = torch.Generator().manual_seed(1)  # the script's own: no global RNG decides the batch


def inputs():
    return torch.randn(16, 4, generator=data)


loss_fn = lambda out: out.square().mean()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
"""


class Batches:
    """A callable object that holds its generator."""

    def __init__(self) -> None:
        self.g = torch.Generator().manual_seed(2)

    def __call__(self) -> torch.Tensor:
        return torch.randn(16, 4, generator=self.g)


def closure_inputs() -> object:
    g = torch.Generator().manual_seed(3)
    return lambda: torch.randn(16, 4, generator=g)


def test_a_script_s_own_generator_is_put_back_with_the_checkpoint(tmp_path: Path) -> None:
    """A batch drawn from the script's own `torch.Generator` (not the global RNG) is the same
    batch after a rewind: the generator's state is part of the checkpoint."""
    script = tmp_path / "own_generator.py"
    script.write_text(SCRIPT_WITH_A_GENERATOR)
    session = Session.load(str(script), options=SessionOptions(rewind=True))
    assert_rewind_reruns(session, 6, 2)
    session.close()


@pytest.mark.parametrize("make", [Batches, closure_inputs], ids=["object", "closure"])
def test_a_generator_held_by_the_inputs_function_is_put_back(make) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    session = Session.from_objects(
        model,
        inputs=make(),
        loss_fn=lambda out: out.square().mean(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        options=SessionOptions(rewind=True),
    )
    assert_rewind_reruns(session, 5, 1)
    session.close()


def test_a_rewind_budget_of_zero_turns_rewind_off() -> None:
    session = Session.load(POWLOG, options=SessionOptions(rewind=True, rewind_budget=0))
    run(session, 2)
    assert session.rewind_note() == "rewind is off: its memory budget is 0 (--rewind-budget)"
    with pytest.raises(RewindError, match="budget is 0"):
        session.rewind(1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512MiB", 512 << 20), ("2G", 2 << 30), ("1.5GB", 1_500_000_000), ("4096", 4096), ("0", 0)],
)
def test_sizes_parse(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_a_share_is_of_the_memory_available_when_the_session_starts() -> None:
    assert parse_size("10%") == 0.1
    available = host_available()
    assert available is not None
    session = Session.load(POWLOG, options=SessionOptions(rewind=True, rewind_budget=0.1))
    assert session._checkpoints.budget == pytest.approx(available / 10, rel=0.05)
    for bad in ("lots", "-1G", "12 parsecs", "150%"):
        with pytest.raises(SizeError, match="expected"):
            parse_size(bad)


def test_the_command_line_hands_the_rewind_budget_to_the_app(monkeypatch, capsys) -> None:
    import modscope.launch
    import modscope.live

    seen: dict[str, object] = {}
    monkeypatch.setattr(modscope.launch, "make_app", lambda script, **kw: seen.update(kw))
    monkeypatch.setattr(modscope.launch, "run_app", lambda app: 0)
    monkeypatch.setattr(modscope.live, "why_no_terminal", lambda: None)  # as in a terminal
    assert main([POWLOG, "--rewind-budget", "64MiB"]) == 0
    assert seen["rewind_budget"] == 64 << 20
    with pytest.raises(SystemExit) as exit_:
        main([POWLOG, "--rewind-budget", "lots"])
    assert exit_.value.code == 2
    assert "--rewind-budget: expected a size such as 512MiB" in capsys.readouterr().err


def test_rewind_to_the_step_it_stands_at_undoes_an_iteration_dropped_halfway() -> None:
    session = shuffled_session()
    run(session, 3)
    expected = run(session, 1)
    final = state_of(session)
    session.rewind(3)
    session.arm(["loss>-1"])  # trips after every forward: BatchNorm's statistics have moved

    def drop(event: object) -> None:
        raise IterationAbandoned()

    session.on_break = drop
    assert session.run_iteration().abandoned
    assert session.partial and not session.in_iteration and session.step == 3
    moved = state_of(session)["state.norm.running_mean"]
    session.rewind(3)
    assert not session.partial
    assert not torch.equal(state_of(session)["state.norm.running_mean"], moved)
    session.disarm()
    assert run(session, 1) == expected
    assert_same(state_of(session), final)
