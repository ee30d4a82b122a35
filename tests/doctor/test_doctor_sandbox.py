"""`check` leaves the user's model bit-identical: copy, restore and no-step modes alike."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import types
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from modscope.core.doctor import run_checks, sandbox
from modscope.core.doctor.reachable import Reachable
from modscope.core.doctor.sandbox import CloneLevel, Snapshot
from modscope.core.hooks.manager import HookSpec
from tests import doctor_models as D
from tests import models as M
from tests.helpers import ROOT


def _bits(t: torch.Tensor | None) -> bytes | None:
    if t is None or t.device.type == "meta":
        return None
    return bytes(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def _ids(mapping: dict[Any, Any]) -> dict[Any, int]:
    return {k: id(v) for k, v in mapping.items()}


def freeze(model: nn.Module, optimizer: Any = None, scheduler: Any = None) -> dict[str, Any]:
    """Everything Python can see of a model, its optimizer, scheduler and the RNG states."""
    reach = Reachable(model)
    out: dict[str, Any] = {
        "modules": [
            (
                id(m),
                type(m),
                m.training,
                _ids(m.__dict__),
                _ids(m._parameters),
                _ids(m._buffers),
                _ids(m._modules),
                [(name, _ids(getattr(m, name))) for name in sorted(vars(m)) if "hooks" in name],
            )
            for m in reach.modules
        ],
        "tensors": [
            (
                id(t),
                type(t),
                t.requires_grad,
                t.grad_fn is not None,
                _bits(t),
                id(t.grad) if t.is_leaf else None,
                _bits(t.grad) if t.is_leaf else None,
            )
            for t in reach.tensors
        ],
        "containers": [
            [id(v) for v in (c.values() if isinstance(c, dict) else c)] for c in reach.containers
        ],
        "torch_rng": _bits(torch.get_rng_state()),
        "python_rng": random.getstate(),
        "numpy_rng": [
            _bits(torch.as_tensor(s)) if isinstance(s, np.ndarray) else s
            for s in np.random.get_state()
        ],
    }
    if optimizer is not None:
        out["optimizer_state"] = {
            id(p): {k: _bits(v) if isinstance(v, torch.Tensor) else v for k, v in s.items()}
            for p, s in optimizer.state.items()
        }
        out["param_groups"] = [
            {k: [id(p) for p in v] if k == "params" else v for k, v in g.items()}
            for g in optimizer.param_groups
        ]
        out["optimizer_attrs"] = _ids(optimizer.__dict__)
    if scheduler is not None:
        out["scheduler"] = scheduler.state_dict()
    return out


def prepared() -> tuple[nn.Module, Any, Any, types.ModuleType]:
    """A model with state of every sort, trained one step, with gradients left in place, and a
    script module whose globals name model, optimizer, scheduler and a generator."""
    torch.manual_seed(0)
    model = D.Everything()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    x = torch.randn(8, 3)
    model(x).sum().backward()
    optimizer.step()
    scheduler.step()
    model(x).sum().backward()  # gradients present when the check starts
    module = types.ModuleType("fake_script")
    module.model = model  # type: ignore[attr-defined]
    module.optimizer = optimizer  # type: ignore[attr-defined]
    module.scheduler = scheduler  # type: ignore[attr-defined]
    module.generator = torch.Generator().manual_seed(3)  # type: ignore[attr-defined]
    random.seed(5)
    np.random.seed(6)
    return model, optimizer, scheduler, module


def _session(model: nn.Module, optimizer: Any, scheduler: Any, module: Any, style: str) -> Any:
    def inputs() -> torch.Tensor:
        return torch.randn(8, 3, generator=module.generator)

    if style == "train_step":
        # Uses the script's globals, as user code does: they must name the copies meanwhile.
        def train_step(m: nn.Module) -> torch.Tensor:
            module.optimizer.zero_grad()
            loss = module.model(inputs()).sum()
            loss.backward()
            module.optimizer.step()
            module.scheduler.step()
            return loss

        return D.session_for(
            model,
            inputs=inputs,
            train_step=train_step,
            optimizer=optimizer,
            scheduler=scheduler,
            module=module,
        )
    return D.session_for(
        model,
        inputs=inputs,
        loss_fn=D.output_sum,
        optimizer=optimizer,
        scheduler=scheduler,
        module=module,
    )


def _force(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    if mode == "restore":
        monkeypatch.setattr(sandbox, "fits", lambda need, fraction: fraction > 0.3)
    elif mode == "restore-no-step":
        monkeypatch.setattr(sandbox, "fits", lambda need, fraction: False)


@pytest.mark.parametrize("style", ["default", "train_step"])
@pytest.mark.parametrize("mode", ["copy", "restore", "restore-no-step"])
def test_check_leaves_everything_bit_identical(
    mode: str, style: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _force(monkeypatch, mode)
    model, optimizer, scheduler, module = prepared()
    generator_state = module.generator.get_state()
    before = freeze(model, optimizer, scheduler)
    result = run_checks(_session(model, optimizer, scheduler, module, style), steps=3)
    assert result.error is None
    expected_steps = 0 if (mode, style) == ("restore-no-step", "train_step") else 3
    assert result.steps_run == expected_steps
    after = freeze(model, optimizer, scheduler)
    for key in before:
        assert after[key] == before[key], key
    assert torch.equal(module.generator.get_state(), generator_state)
    assert module.optimizer is optimizer and module.model is model
    assert result.where is not None
    assert ("copy" if mode == "copy" else "restored afterwards") in result.where


def test_copy_failure_falls_back_to_restoring() -> None:
    model = D.Locked()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 3)
    before = freeze(model, optimizer)
    session = D.session_for(model, inputs=x, loss_fn=D.output_sum, optimizer=optimizer)
    result = run_checks(session, steps=2)
    assert result.steps_run == 2
    assert [(f.kind, f.path) for f in result.findings] == [("unregistered-tensor", "calls")]
    assert any("could not be copied (TypeError)" in n for n in result.notes)
    assert freeze(model, optimizer) == before


def test_buffers_with_history_are_copied_and_kept() -> None:
    model = M.PowLogBufferModel()
    model(torch.tensor(5.0, requires_grad=True), torch.tensor(3.0))
    before = freeze(model)
    grad_fn = model.logModel.logBuff.grad_fn
    result = run_checks(D.session_for(model, inputs=M.article_inputs(), loss_fn=None))
    assert result.where is not None and "copy" in result.where
    assert freeze(model) == before
    assert model.logModel.logBuff.grad_fn is grad_fn


def test_old_weight_norm_is_copied() -> None:
    model = M.old_weight_norm()  # its derived `weight` is a non-leaf tensor
    x = torch.randn(2, 3)
    before = freeze(model)
    result = run_checks(D.session_for(model, inputs=x, loss_fn=D.output_sum))
    assert result.findings == () and result.where is not None and "copy" in result.where
    assert freeze(model) == before


def test_lazy_module_restored_to_uninitialized() -> None:
    model = nn.Sequential(nn.LazyLinear(3), nn.ReLU())
    weight = model[0].weight
    snapshot = Snapshot(model, clone=CloneLevel.ALL)
    model(torch.randn(2, 4))
    assert type(model[0]) is nn.Linear
    snapshot.restore()
    assert type(model[0]) is nn.LazyLinear
    assert model[0].weight is weight
    assert isinstance(weight, nn.parameter.UninitializedParameter)
    assert model(torch.randn(2, 5)).shape == (2, 3)  # initializes afresh, for 5 inputs


@pytest.mark.parametrize("mode", ["copy", "restore"])
def test_session_hooks_stay_attached_and_silent(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _force(monkeypatch, mode)
    model = M.PowLogModel()
    seen: list[str] = []
    model.logModel.register_forward_hook(lambda m, a, o: seen.append("user"))
    session = D.session_for(model, inputs=M.article_inputs(), loss_fn=lambda z: (z - 10) ** 2)
    session.attach(HookSpec.parse("powModel:forward"))
    session.attach(HookSpec.parse("logModel:backward"))
    try:
        before = freeze(model)
        result = run_checks(session, steps=2)
        assert result.error is None and result.findings == ()
        assert freeze(model) == before
        assert not session.events and session.step == 0
        assert seen  # the user's own hook ran on the copy
        assert len(session.hooks.attached) == 2
    finally:
        session.close()


def test_eval_mode_and_partly_frozen_flags_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    _force(monkeypatch, "restore")
    model = D.WithNorm()
    model.train()
    model.body[1].eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3)
    before = freeze(model, optimizer)
    session = D.session_for(model, inputs=x, loss_fn=D.output_sum, optimizer=optimizer)
    result = run_checks(session, steps=2)
    assert [(f.kind, f.path) for f in result.findings] == [("mode-mismatch", "body.1")]
    assert freeze(model, optimizer) == before
    assert model.training and not model.body[1].training


LOWERED = """
import resource

import torch
from torch import nn

from modscope.core.doctor import sandbox
from tests import doctor_models as D

torch.manual_seed(0)
model = nn.Linear(1024, 1024)  # 4 MiB of parameters, 8 MiB with their gradients
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model(torch.randn(2, 1024)).sum().backward()
need = sandbox.state_bytes(model, optimizer)["cpu"]


def decided():
    session = D.session_for(
        model, inputs=torch.randn(2, 1024), loss_fn=D.output_sum, optimizer=optimizer
    )
    box = sandbox.Sandbox(session)
    with box:
        pass
    return box.mode.value


print(decided())
with open("/proc/self/status") as f:
    data = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmData:"))
# Room for three copies above what the process holds: a copy is not under a quarter of it,
# a snapshot is under a half, so the sandbox restores instead of copying.
_, hard = resource.getrlimit(resource.RLIMIT_DATA)
resource.setrlimit(resource.RLIMIT_DATA, (data + 3 * need, hard))
print(decided())
"""


def test_the_sandbox_copies_only_what_fits_under_the_process_memory_limit(tmp_path) -> None:
    """The copy decision counts the memory this process may still use, as `--memory-budget`
    does: an rlimit lowered under a copy's need turns the copy into a restore."""
    (tmp_path / "lowered.py").write_text(LOWERED)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "lowered.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["copy", "restore"]
