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


EMBEDDING = '''
"""One Embedding({rows}, {dim}) under {blocks} blocks of Linear(4, 4) + LayerNorm + ReLU (SGD)."""
import os
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(
    nn.Embedding({rows}, {dim}),
    nn.Linear({dim}, 4),
    *[nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU()) for _ in range({blocks})],
)
inputs = torch.randint({rows}, (8, 16))


def loss_fn(output):
    return output.pow(2).mean()


optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
'''
"""An LLM-shaped bulk: one table of 125,000 x 512 (64 M elements, 97% of the parameters) and
3,300 tiny blocks: 13,204 modules (`embedding(125_000, 512, 3300)`)."""


def embedding(rows: int, dim: int, blocks: int) -> str:
    """The big-embedding script: a `rows` x `dim` table under `blocks` tiny blocks."""
    return EMBEDDING.format(rows=rows, dim=dim, blocks=blocks) + _LOOP


GPT = '''
"""A GPT-2-shaped language model: {layers} blocks of width {width}, vocabulary {vocab}, the output
matrix tied to the token table (AdamW, batch 4 x 64 tokens)."""
import os
import torch
from torch import nn
from torch.nn import functional as F

torch.manual_seed(0)


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.c_fc = nn.Linear(width, 4 * width)
        self.mlp_proj = nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocab, context, width, layers, heads):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList([Block(width, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        # GPT-2's initialisation: with torch's defaults (an N(0, 1) table) the tied logits
        # are huge, and the softmax's gradients fill with subnormal floats, slow on the CPU.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


model = GPT({vocab}, 64, {width}, {layers}, {heads})
tokens = torch.randint({vocab}, (4, 65))
inputs = tokens[:, :-1]


def loss_fn(output):
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), tokens[:, 1:].reshape(-1))


optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
'''
"""GPT-2's vocabulary and shape at width 320, 6 blocks of 5 heads: 23.5 M parameters, 16.1 M
of them in the tied token table (`gpt(50_257, 320, 6, 5)`)."""


def gpt(vocab: int, width: int, layers: int, heads: int) -> str:
    """The GPT-2-shaped script."""
    return GPT.format(vocab=vocab, width=width, layers=layers, heads=heads) + _LOOP


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
