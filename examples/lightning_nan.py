"""A NaN that starts in one module at a known step, under a Lightning Trainer: the forward case.

examples/nan_origin.py's model as a `LightningModule`: `blocks.1.gate` (a `LogGate`) computes
log(x + offset) over the ReLU's output, and its offset trains in a parameter group of its own
with lr=8. The update of step 2 pushes one entry below zero, so in step 3's forward log() of a
negative value gives NaN. `ModscopeCallback(breaks=["nan"])` watches the fit: it breaks at step 3,
in the forward phase, at blocks.1.gate (LogGate), as `modscope run` does on this file. In a
terminal the modscope app opens at the break (q returns); elsewhere `modscope.BreakError` leaves
`trainer.fit`, and this script prints it.
In modscope: the file is also a model script (`model`, `inputs`, `loss_fn`, `optimizer`):
`modscope run examples/lightning_nan.py --steps 5 --break nan` stops at the same place. The fix:
`torch.log((x + self.offset).clamp_min(1e-3))`, or a sane lr for the offset.
Prints: the loss of steps 1 and 2, then the break (step 3, forward phase, blocks.1.gate).
"""

import lightning.pytorch as pl
import torch
from torch import nn

import modscope
from modscope.integrations.lightning import ModscopeCallback

torch.manual_seed(0)


class LogGate(nn.Module):
    """log(x + offset) per feature: finite only while x + offset > 0."""

    def __init__(self, width):
        super().__init__()
        self.offset = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return torch.log(x + self.offset)


class Block(nn.Module):
    def __init__(self, width, gated=False):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.act = nn.ReLU(inplace=True)
        self.gate = LogGate(width) if gated else nn.Identity()

    def forward(self, x):
        return self.gate(self.act(self.linear(x)))


class Net(pl.LightningModule):
    def __init__(self, width=8, depth=3):
        super().__init__()
        self.blocks = nn.Sequential(*(Block(width, gated=i == 1) for i in range(depth)))
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        return self.head(self.blocks(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        # Through self(...): the watch sees the forward where the LightningModule is called.
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        gate = list(self.blocks[1].gate.parameters())
        rest = [p for name, p in self.named_parameters() if ".gate." not in name]
        return torch.optim.SGD([{"params": rest}, {"params": gate, "lr": 8.0}], lr=0.05)


model = Net()
inputs = torch.randn(16, 8)
target = torch.randn(16, 1)


def loss_fn(output):
    return nn.functional.mse_loss(output, target)


optimizer = model.configure_optimizers()

if __name__ == "__main__":
    # One batch of all 16 rows, so that every step sees the same data, as modscope run does.
    data = torch.utils.data.TensorDataset(inputs, target)
    watching = ModscopeCallback(breaks=["nan"])
    trainer = pl.Trainer(
        max_steps=5,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[watching],
    )
    try:
        trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=16))
    except modscope.BreakError as exc:
        for record in watching.watch.records:
            print("step", record.step, "loss", f"{record.loss:.4f}")
        print(exc)
