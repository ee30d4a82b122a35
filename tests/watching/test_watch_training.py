"""`modscope.watch()` on training as it is really written: a tiny GPT-2 with AdamW, a warm-up
schedule, bfloat16 autocast and gradient accumulation; a compiled model; a GradScaler that
skips a step. Watching changes nothing: the weights end bit for bit as without it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modscope

transformers = pytest.importorskip("transformers")

STEPS = 3
ACCUMULATE = 2


def tiny_gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=32)
    return transformers.GPT2LMHeadModel(config)


def train_gpt2(watch_options: dict | None) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    """STEPS optimizer steps of ACCUMULATE micro-batches each, under bf16 autocast on the CPU;
    watched with `watch_options` (None: not watched)."""
    model = tiny_gpt2()
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in model.named_parameters() if p.ndim >= 2]},
            {"params": [p for n, p in model.named_parameters() if p.ndim < 2], "weight_decay": 0},
        ],
        lr=1e-3,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 2))
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 100, (2, 16), generator=generator) for _ in range(STEPS * 2)]
    watch = modscope.watch(model, optimizer, **watch_options) if watch_options is not None else None
    try:
        for step in range(STEPS):
            optimizer.zero_grad(set_to_none=True)
            for micro in range(ACCUMULATE):
                tokens = batches[step * ACCUMULATE + micro]
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = model(input_ids=tokens, labels=tokens).loss / ACCUMULATE
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
    finally:
        if watch is not None:
            watch.close()
    return model, optimizer, watch


def test_a_watched_gpt2_with_adamw_amp_and_accumulation_ends_bit_identical(tmp_path):
    plain, plain_opt, _ = train_gpt2(None)
    options = {
        "breaks": ["nan", "loss>1e9", "grad-norm>1e9"],
        "record": tmp_path / "rec",
        "layers": True,
        "hooks": ["*:forward", "*:backward"],
    }
    watched, watched_opt, watch = train_gpt2(options)
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for a, b in zip(
        plain_opt.state_dict()["state"].values(),
        watched_opt.state_dict()["state"].values(),
        strict=True,
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(
            a["exp_avg_sq"], b["exp_avg_sq"]
        )
    assert watch is not None and watch.step_count == STEPS and not watch.breaks
    assert [r.lr for r in watch.records] == [(1e-3, 1e-3)] * STEPS  # the warm-up reached 1 at once
    assert all(r.loss is not None and 3.0 < r.loss < 6.0 for r in watch.records)
    assert len(watch.layers) == STEPS
    assert all(r.diff.changed for r in watch.records)


def test_a_compiled_model_is_watched_and_stays_bit_identical():
    def run(watched: bool) -> tuple[nn.Module, object]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        compiled = torch.compile(model, backend="eager")
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(4, 8)
        w = modscope.watch(compiled, opt, breaks=["nan"]) if watched else None
        for _ in range(3):
            opt.zero_grad()
            compiled(x).pow(2).mean().backward()
            opt.step()
        if w is not None:
            w.close()
        return model, w

    plain, _ = run(False)
    model, w = run(True)
    assert all(
        torch.equal(a, b) for a, b in zip(plain.parameters(), model.parameters(), strict=True)
    )
    assert w is not None and w.step_count == 3
    assert set(w.records[0].grads) == {
        "_orig_mod.0.weight",
        "_orig_mod.0.bias",
        "_orig_mod.2.weight",
        "_orig_mod.2.bias",
    } or set(w.records[0].grads) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_a_step_the_grad_scaler_skips_is_reported_as_skipped():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    x = torch.randn(8, 4)
    with modscope.watch(model, opt) as w:
        for i in range(3):
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            if i == 1:
                loss = loss * float("inf")  # the scaler finds inf gradients: no optimizer step
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    assert [r.step for r in w.records] == [1, 2, 3]
    assert [r.skipped for r in w.records] == [False, True, False]
    assert w.records[1].diff.changed == ()
