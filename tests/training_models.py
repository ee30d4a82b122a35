"""Small models and loops for the doctor's training kinds: the common architectures trained the
usual way, and train_steps that clear their gradients, or not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tests.doctor_models import TinyTransformerLM


class ResidualCNN(nn.Module):
    """A ResNet-style network: a stem, one residual block of conv-BatchNorm-ReLU, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = F.relu(h + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h))))))
        return self.fc(h.mean((2, 3)))


class LSTMRegressor(nn.Module):
    """A two-layer LSTM with dropout between its layers, read out from the last time step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 16, num_layers=2, dropout=0.1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x)[0][-1])


class Task:
    """A model, a batch and a loss for it, built the same way every time (seeded)."""

    def __init__(
        self,
        make: Callable[[], nn.Module],
        inputs: Callable[[], Any],
        loss: Callable[[Any, Any], torch.Tensor],
    ) -> None:
        self._make, self._inputs, self._loss = make, inputs, loss

    def build(self) -> tuple[nn.Module, Any, Callable[[Any], torch.Tensor]]:
        torch.manual_seed(0)
        model = self._make()
        batch = self._inputs()
        return model, batch, lambda out: self._loss(out, batch)


def _tokens() -> torch.Tensor:
    return torch.randint(0, 16, (2, 5))


def _lm_loss(out: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, 16), tokens.reshape(-1))


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))


def _sequences() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(5, 4, 4), torch.randn(4, 3)


TASKS: dict[str, Task] = {
    "transformer_lm": Task(TinyTransformerLM, _tokens, _lm_loss),
    "resnet_cnn": Task(ResidualCNN, _images, lambda out, b: F.cross_entropy(out, b[1])),
    "lstm": Task(LSTMRegressor, _sequences, lambda out, b: F.mse_loss(out, b[1])),
}
"""The common architectures of issue 13: a transformer LM, a ResNet-style CNN, an LSTM."""


def model_input(batch: Any) -> Any:
    """What the model takes from a task's batch (images and sequences come with targets)."""
    return batch[0] if isinstance(batch, tuple) else batch


def train_step_for(
    model: nn.Module,
    batch: Any,
    loss_of: Callable[[Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    clear: str,
    every: int = 4,
) -> Callable[[nn.Module], torch.Tensor]:
    """A `train_step(model)` clearing its gradients as `clear` says: "none" (never, the bug),
    "set_to_none" / "in_place" (every step, before backward), "accumulate" /
    "accumulate_in_place" (a deliberate accumulation: step and clear every `every` calls)."""
    calls = [0]

    def train_step(m: nn.Module) -> torch.Tensor:
        calls[0] += 1
        if clear in ("set_to_none", "in_place"):
            optimizer.zero_grad(set_to_none=clear == "set_to_none")
        loss = loss_of(m(model_input(batch)))
        loss.backward()
        if not clear.startswith("accumulate"):
            optimizer.step()
        elif calls[0] % every == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=clear == "accumulate")
        return loss

    return train_step
