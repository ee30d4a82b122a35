"""A realistic small CNN trained from a DataLoader, with a scheduler (the contract's full form).

Conv2d, BatchNorm2d, ReLU, MaxPool2d, Dropout and Linear on synthetic 1x16x16 images of 10
classes (a noisy prototype per class), fed by a DataLoader of (x, y) batches of 32; because the
batch is a pair, `compute_loss(model, batch)` does the forward with cross-entropy. SGD with
momentum and StepLR, stepped per iteration. In modscope: `modscope tree examples/cnn.py` shows the
BatchNorm buffers (running_mean, running_var, num_batches_tracked); `modscope run
examples/cnn.py --steps 8` matches this file's main block. Prints: step, loss and lr for 8 steps.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)


class SmallCNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.dropout = nn.Dropout(0.25)
        self.classifier = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x):
        h = self.features(x).flatten(1)
        return self.classifier(self.dropout(h))


def make_dataset(n=256, num_classes=10):
    prototypes = torch.randn(num_classes, 1, 16, 16)
    labels = torch.randint(0, num_classes, (n,))
    images = prototypes[labels] + 0.8 * torch.randn(n, 1, 16, 16)
    return TensorDataset(images, labels)


model = SmallCNN()
inputs = DataLoader(make_dataset(), batch_size=32, shuffle=False)


def compute_loss(model, batch):
    images, labels = batch
    return F.cross_entropy(model(images), labels)


optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)

if __name__ == "__main__":
    for step, batch in enumerate(inputs, start=1):
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad()
        loss = compute_loss(model, batch)
        loss.backward()
        optimizer.step()
        scheduler.step()
        print(step, "loss", f"{loss.item():.4f}", "lr", f"{lr:.4f}")
