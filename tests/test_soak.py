"""A short soak: hundreds of iterations with every hook kind observing every module leave no
hook, tensor hook, thread or file descriptor behind, and histories and events stay bounded
(`benchmarks/soak.py` runs the long one and watches memory)."""

from __future__ import annotations

import os
import threading

import torch
from torch import nn

from modscope.core import session as session_module
from modscope.core.hooks.manager import all_hooks_specs
from modscope.core.session import Session, SessionOptions

STEPS = 200


def hook_counts(model: nn.Module) -> tuple[int, ...]:
    return tuple(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_many_iterations_with_every_hook_leak_nothing(monkeypatch):
    monkeypatch.setattr(session_module, "EVENT_LIMIT", 500)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(inplace=True), nn.Dropout(0.1), nn.Linear(16, 2)
    )
    s = Session.from_objects(
        model,
        inputs=torch.randn(4, 8),
        loss_fn=lambda out: out.square().mean(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        options=SessionOptions(history=50),
    )
    plain = hook_counts(model)
    for spec in all_hooks_specs():
        s.attach(spec)
    attached = hook_counts(model)
    threads = threading.active_count()
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for _ in range(STEPS):
        result = s.run_iteration()
        assert result.record is not None and result.error is None
        assert not s.hooks._transient and not s.hooks.calls  # tensor hooks gone each time
        assert hook_counts(model) == attached
    assert s.step == STEPS
    assert len(s.events) <= 500 and len(s.history) <= 50
    assert threading.active_count() == threads
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) == fds
    s.close()
    assert hook_counts(model) == plain
