"""Small models for the doctor's tests: each pitfall and a near-twin without it."""

from __future__ import annotations

import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from modscope.core.contract.script_names import MISSING
from modscope.core.script.loader import LoadedScript
from modscope.core.session import Session
from tests.models import LogModel, PowModel


def session_for(
    model: nn.Module,
    *,
    inputs: Any = MISSING,
    loss_fn: Any = MISSING,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    compute_loss: Any = None,
    train_step: Any = None,
    module: Any = None,
) -> Session:
    """A session on live objects, as a model script would define them."""
    script = LoadedScript(
        path="model_script.py",
        module=module,
        model=model,
        model_name="model",
        inputs=inputs,
        loss_fn=loss_fn,
        compute_loss=compute_loss,
        optimizer=optimizer,
        scheduler=scheduler,
        train_step=train_step,
    )
    return Session(script)


def output_sum(output: Any) -> torch.Tensor:
    """A loss for any model: the sum of its (first) output."""
    if isinstance(output, tuple):
        output = output[0]
    return output.float().sum()


# -- unregistered modules ------------------------------------------------------------------------


class ListOfLayers(nn.Module):
    """Layers in a plain list at the root: `blocks`."""

    def __init__(self, container: type = list) -> None:
        super().__init__()
        self.blocks = container([nn.Linear(2, 2), nn.Linear(2, 2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class DictOfLayers(nn.Module):
    """Layers in a plain dict: `heads`."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = {"q": nn.Linear(2, 2), "k": nn.Linear(2, 2)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads["q"](x) + self.heads["k"](x)


class NestedStages(nn.Module):
    """A dict of lists of layers, two levels deep in a child: `encoder.stages`."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.stages = {"low": [nn.Linear(2, 2)], "high": [nn.Linear(2, 2), nn.ReLU()]}


class SetOfLayers(nn.Module):
    """A layer in a plain set: `pool`."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = {nn.Linear(2, 2)}


class MixedDict(nn.Module):
    """A plain dict mixing a layer with a setting: only `heads['q']` is unregistered."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = {"q": nn.Linear(2, 2), "scale": 0.5}


class AliasAndNew(nn.Module):
    """A plain list of a registered layer (an alias) and a new one: only `extra[1]`."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.extra = [self.lin, nn.Linear(2, 2)]


class DeepList(nn.Module):
    """The plain list three levels down: `a.b.c.layers`."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Module()
        self.a.b = nn.Module()
        self.a.b.c = nn.Module()
        self.a.b.c.layers = [nn.Linear(2, 2)]


class RegisteredTwin(nn.Module):
    """ModuleList, ModuleDict, nested ModuleDict of ModuleLists, and aliases of them."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
        self.heads = nn.ModuleDict({"q": nn.Linear(2, 2), "k": nn.Linear(2, 2)})
        self.stages = nn.ModuleDict({"low": nn.ModuleList([nn.Linear(2, 2)])})
        self.block_list = list(self.blocks)
        self.by_name = {"q": self.heads["q"], "settings": {"scale": 0.5}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block_list:
            x = block(x)
        return self.heads["q"](x) + self.heads["k"](x) + self.stages["low"][0](x)


# -- unregistered parameters and tensors ---------------------------------------------------------


class ParamList(nn.Module):
    """Parameters in a plain list: `scales`."""

    def __init__(self) -> None:
        super().__init__()
        self.scales = [nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))]


class ParamInChild(nn.Module):
    """A Parameter in a plain dict beside a setting, in a child: `child.cfg['w']`."""

    def __init__(self) -> None:
        super().__init__()
        self.child = nn.Module()
        self.child.cfg = {"w": nn.Parameter(torch.ones(2)), "n": 3}


class RegisteredParams(nn.Module):
    """ParameterList, ParameterDict, register_parameter, and a dict aliasing a parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.scales = nn.ParameterList([nn.Parameter(torch.ones(2))])
        self.biases = nn.ParameterDict({"a": nn.Parameter(torch.zeros(2))})
        self.register_parameter("gain", nn.Parameter(torch.ones(())))
        self.views = {"gain": self.gain}


class PlainTensorDeep(nn.Module):
    """A plain tensor attribute in a grandchild (`body.stats.count`) and a plain list of tensors
    at the root (`history`)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Module()
        self.body.stats = nn.Module()
        self.body.stats.count = torch.zeros(3)
        self.history = [torch.zeros(2), torch.ones(2)]


class BufferTwin(nn.Module):
    """Persistent and non-persistent buffers, and a plain alias of a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros(3))
        self.register_buffer("mask", torch.ones(2), persistent=False)
        self.count_alias = self.count


# -- buffers, modes, devices, dtypes -------------------------------------------------------------


class BufferRequiresGrad(nn.Module):
    """A buffer registered with a tensor that requires grad."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.lin.register_buffer("running", torch.ones(2, requires_grad=True))


class RunningMean(nn.Module):
    """A running mean kept in a buffer; `detach=False` keeps the input's autograd history."""

    def __init__(self, detach: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.register_buffer("mean", torch.zeros(2))
        self.detach = detach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        new = self.mean * 0.9 + y.mean(0) * 0.1
        self.mean = new.detach() if self.detach else new
        return y


class WithNorm(nn.Module):
    """Linear -> BatchNorm1d -> Linear, in `body`."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def mixed_dtype_linear() -> nn.Module:
    """A Linear whose weight is float64 and bias float32."""
    lin = nn.Linear(2, 2)
    lin.weight = nn.Parameter(lin.weight.detach().double())
    return nn.Sequential(nn.Identity(), lin)


def mixed_device_linear() -> nn.Module:
    """A Linear whose bias is on the meta device (the CPU-only stand-in for a second device)."""
    lin = nn.Linear(2, 2)
    lin.bias = nn.Parameter(torch.empty(2, device="meta"))
    return nn.Sequential(lin)


# -- iterations ----------------------------------------------------------------------------------


class UnusedLayer(nn.Module):
    """`body.extra` is defined but never called (beside `body.used`); `frozen` is unused but
    frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.body = nn.Module()
        self.body.used = nn.Linear(2, 2)
        self.body.extra = nn.Linear(2, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.used(self.lin(x))


class UnusedBias(nn.Module):
    """Uses its own weight but not its own bias: only `bias` has no gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))
        self.bias = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class LogOfNegative(nn.Module):
    """`body.log` takes the log of a negative number: NaN starts there."""

    class Log(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(x)

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.body = nn.Sequential(nn.Identity(), self.Log())
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.lin(x) - self.shift).mean()


class MaskedAttention(nn.Module):
    """A causal mask buffer holding -inf by design."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = x @ x.transpose(-1, -2) + self.mask
        return torch.softmax(scores, -1) @ self.lin(x)


class Scaled(nn.Module):
    """`scale * lin(x).sum() + offset`: steep, flat or ordinary gradients on demand."""

    def __init__(self, scale: float, offset: float = 0.0) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.scale = scale
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.lin(x).sum() + self.offset


class DropoutIn(nn.Module):
    """Dropout in `body.drop`'s forward: `F.dropout` with or without `training=`, or a module."""

    class Drop(nn.Module):
        def __init__(self, style: str) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.style = style
            self.dropout = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.lin(x)
            if self.style == "functional":
                return F.dropout(h, 0.5)
            if self.style == "functional-training":
                return F.dropout(h, 0.5, training=self.training)
            return self.dropout(h)

    def __init__(self, style: str) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), self.Drop(style))
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class StochasticLayers(nn.Module):
    """torch's training-aware stochastic layers: deterministic in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 8)
        self.layers = nn.Sequential(
            nn.Dropout(0.3), nn.AlphaDropout(0.2), nn.RReLU(), nn.Dropout1d(0.2)
        )
        self.gru = nn.GRU(8, 8, num_layers=2, dropout=0.5, batch_first=True)
        self.attn = nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.lin(x))
        h, _ = self.gru(h)
        out, _ = self.attn(h, h, h)
        return out


class TwiceCalled(nn.Module):
    """`block` (a Linear inside a Sequential) runs twice per forward; `act` too, without
    parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(2, 2))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.block(self.act(self.block(x))))


class OnceEach(nn.Module):
    """Each module once; `act` (no parameters) twice."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(2, 2)
        self.second = nn.Linear(2, 2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.second(self.act(self.first(x))))


class Checkpointed(nn.Module):
    """Activation checkpointing re-runs `block` in backward: not a second call."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2))
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.requires_grad_(True) if self.reentrant else x
        return checkpoint(self.block, x, use_reentrant=self.reentrant)


class Locked(nn.Module):
    """A module holding a lock: `copy.deepcopy` fails, so the doctor restores instead."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)
        self.lock = threading.Lock()
        self.calls = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls = self.calls + 1
        return F.dropout(self.bn(self.lin(x)), 0.2, training=self.training)


class Everything(nn.Module):
    """State of every sort for the restore tests: BatchNorm statistics, dropout, a plain tensor
    counter reassigned and one changed in place, a plain list that grows, a frozen layer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(4, 1)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)
        self.steps = torch.zeros(())
        self.total = torch.zeros(4)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps = self.steps + 1
        with torch.no_grad():
            self.total += x.sum(0).mean()
        self.seen.append(len(self.seen))
        h = self.drop(self.bn(self.lin(x))) + 0.0 * torch.rand(1, device=x.device)
        return self.head(self.frozen(h))


def powlog_twice() -> nn.Module:
    """The article's Parameter Code 4: powModel and logModel each run twice."""

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.powModel = PowModel()
            self.logModel = LogModel()

        def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
            z1 = self.logModel(self.powModel(x, q))
            z2 = self.logModel(self.powModel(x, q))
            return (z1 + z2) / 2

    return Shared()


# -- clean models with a forward ----------------------------------------------------------------


class TinyTransformerLM(nn.Module):
    """Embedding with tied output weights, a TransformerEncoder with dropout, a causal mask."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 16, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer(
            "mask", nn.Transformer.generate_square_subsequent_mask(5), persistent=False
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(tokens), mask=self.mask, is_causal=True)
        return self.head(h)


class FrozenBackbone(nn.Module):
    """A frozen backbone under a trainable head, both used."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.backbone.requires_grad_(False)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class Containers(nn.Module):
    """ModuleList, ModuleDict, ParameterList and ParameterDict, all used."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.ReLU()])
        self.heads = nn.ModuleDict({"q": nn.Linear(2, 2)})
        self.scales = nn.ParameterList([nn.Parameter(torch.ones(2))])
        self.biases = nn.ParameterDict({"a": nn.Parameter(torch.zeros(2))})
        self.register_buffer("mask", torch.ones(2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.heads["q"](x) * self.scales[0] + self.biases["a"] * self.mask
