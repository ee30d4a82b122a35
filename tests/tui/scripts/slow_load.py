"""A script whose import waits until the file named by MODSCOPE_TEST_GO exists (a long load:
data prepared at import), so keys pressed while it loads can be seen queued."""

import os
import time

import torch

deadline = time.monotonic() + 30
while not os.path.exists(os.environ.get("MODSCOPE_TEST_GO", "")) and time.monotonic() < deadline:
    time.sleep(0.01)

model = torch.nn.Linear(2, 1)
inputs = torch.ones(3, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
