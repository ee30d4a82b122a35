"""Ten thousand tiny modules: a hook on every one (`*:forward`) fires 10,001 times a forward."""

import torch

model = torch.nn.Sequential(*[torch.nn.Identity() for _ in range(10_000)])
inputs = torch.ones(1, 2)
loss_fn = None
