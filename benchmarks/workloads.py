"""The model scripts `run_all.py` measures, each a model script that also runs as a plain loop.

`python SCRIPT` builds the model and runs `STEPS` plain iterations (environment, default 0);
`modscope run SCRIPT` runs the same iterations, so the two are comparable bit for bit. Each
script also defines `_noop_hooks(model)`: no-op hooks on every module, forward-pre, and a forward
hook that puts no-op tensor hooks on the module's output and inputs, the same machinery
modscope's observing hooks use (DESIGN section 5), doing nothing (`noop_hooks_on`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_LOOP = """
def _noop_hooks(module):
    def on_grad(grad):
        return None

    def forward_pre(module, args):
        return None

    def forward(module, args, output):
        for t in (*args, output):
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.register_hook(on_grad)

    for m in module.modules():
        m.register_forward_pre_hook(forward_pre)
        m.register_forward_hook(forward)


if __name__ == "__main__":
    import time

    built = time.perf_counter()
    for _ in range(int(os.environ.get("STEPS", "0"))):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs))
        loss.backward()
        optimizer.step()
    print(f"iterations {time.perf_counter() - built:.6f}")
"""

MLP = (
    '''
"""An MLP of 1.36 M parameters (Adam, batch 64)."""
import os
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(
    nn.Linear(640, 1024), nn.ReLU(inplace=True), nn.Dropout(0.1),
    nn.Linear(1024, 640), nn.LayerNorm(640), nn.ReLU(),
    nn.Linear(640, 64),
)
inputs = torch.randn(64, 640)
target = torch.randn(64, 64)


def loss_fn(output):
    return nn.functional.mse_loss(output, target)


optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
'''
    + _LOOP
)

MANY = '''
"""{blocks} blocks of Linear({width}, {width}) + LayerNorm + ReLU (SGD with momentum)."""
import os
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(
    *[
        nn.Sequential(nn.Linear({width}, {width}), nn.LayerNorm({width}), nn.ReLU())
        for _ in range({blocks})
    ]
)
inputs = torch.randn(8, {width})


def loss_fn(output):
    return output.pow(2).mean()


optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
'''
"""3,300 blocks of width 140: 13,201 modules and 66.1 M parameters (`many(3300, 140)`)."""


def many(blocks: int, width: int) -> str:
    """The many-modules script with `blocks` blocks of `width` features."""
    return MANY.format(blocks=blocks, width=width) + _LOOP


def parameters_of_many(blocks: int, width: int) -> int:
    """How many parameters `many(blocks, width)` holds."""
    return blocks * (width * width + width + 2 * width)


@contextmanager
def noop_hooks_on(model: Any, attach: Callable[[Any], None]) -> Iterator[None]:
    """A script's `_noop_hooks` (`attach`) on every module of `model` while the block runs, each
    module's forward hook dicts put back as they were after it."""
    saved = {m: (dict(m._forward_pre_hooks), dict(m._forward_hooks)) for m in model.modules()}
    attach(model)
    try:
        yield
    finally:
        for m, (pre, post) in saved.items():
            m._forward_pre_hooks.clear()
            m._forward_pre_hooks.update(pre)
            m._forward_hooks.clear()
            m._forward_hooks.update(post)
