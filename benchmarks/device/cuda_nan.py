"""`examples/nan_origin.py` on CUDA, for the device check: `--break nan` must stop at step 3, in
the forward phase, at `blocks.1.gate` (log of a negative value), as it does on the CPU. The
example builds its model and data on the CPU (the same initial weights); they are moved here."""

import runpy
from pathlib import Path

import torch
from torch import nn

device = "cuda" if torch.cuda.is_available() else "cpu"
example = runpy.run_path(
    str(Path(__file__).resolve().parents[2] / "examples" / "nan_origin.py"), run_name="cuda_nan"
)
# `Module.to` moves parameters in place, so the example's optimizer keeps stepping them.
model = example["model"].to(device)
inputs, target = example["inputs"].to(device), example["target"].to(device)
optimizer = example["optimizer"]


def loss_fn(output):
    return nn.functional.mse_loss(output, target)
