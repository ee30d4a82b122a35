"""Small toy models shared by the test suite: the article's running example and torch's traps."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrizations, prune

# --- The article's running example (DIGEST.md): z = logParam * log(powParam * x ** q). ---


class PowModel(nn.Module):
    """`powParam * x ** q`, powParam a scalar Parameter initialised to 1.0."""

    def __init__(self) -> None:
        super().__init__()
        self.powParam = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.powParam * x**q


class LogModel(nn.Module):
    """`logParam * log(x)`, logParam a scalar Parameter initialised to 1.0."""

    def __init__(self) -> None:
        super().__init__()
        self.logParam = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logParam * torch.log(x)


class PowLogModel(nn.Module):
    """The article's model: powModel feeding logModel (z = 4.8283 at x = 5, q = 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.powModel = PowModel()
        self.logModel = LogModel()

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.logModel(self.powModel(x, q))


def article_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The article's batch: x = 5.0 and q = 3.0."""
    return torch.tensor(5.0), torch.tensor(3.0)


# --- Lessons 1-3: state that `nn.Module.__setattr__` never registers. ---


class PowLogListModel(nn.Module):
    """Module Code 3: children in a plain list, invisible to `named_children()`."""

    def __init__(self) -> None:
        super().__init__()
        self.modelList = [PowModel(), LogModel()]

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.modelList[1](self.modelList[0](x, q))


class PowLogDictModel(nn.Module):
    """Module Code 6: children in a plain dict."""

    def __init__(self) -> None:
        super().__init__()
        self.modelDict = {"powModel": PowModel(), "logModel": LogModel()}

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.modelDict["logModel"](self.modelDict["powModel"](x, q))


class PowLogModuleListModel(nn.Module):
    """Module Code 4: the plain list fixed with ModuleList."""

    def __init__(self) -> None:
        super().__init__()
        self.modelList = nn.ModuleList([PowModel(), LogModel()])

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.modelList[1](self.modelList[0](x, q))


class PowLogModuleDictModel(nn.Module):
    """Module Code 7: the plain dict fixed with ModuleDict."""

    def __init__(self) -> None:
        super().__init__()
        self.modelDict = nn.ModuleDict({"powModel": PowModel(), "logModel": LogModel()})

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.modelDict["logModel"](self.modelDict["powModel"](x, q))


class PowParamDictModel(nn.Module):
    """Parameter Code 2: powParam kept in a plain dict, so it is not a parameter of the model."""

    def __init__(self) -> None:
        super().__init__()
        self.powParamDict = {"powParam": nn.Parameter(torch.tensor(1.0))}

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.powParamDict["powParam"] * x**q


class PowLogParamDictModel(nn.Module):
    """Parameter Code 2's whole model: only logModel.logParam is registered."""

    def __init__(self) -> None:
        super().__init__()
        self.powModel = PowParamDictModel()
        self.logModel = LogModel()

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.logModel(self.powModel(x, q))


class PowBuffModel(nn.Module):
    """Buffer Code 1: a running average in a plain tensor attribute (not in `state_dict`)."""

    def __init__(self) -> None:
        super().__init__()
        self.powParam = nn.Parameter(torch.tensor(1.0))
        self.powBuff = torch.tensor(0.0)

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        self.powBuff = self.powBuff * 0.6 + x * 0.4
        return self.powParam * self.powBuff**q


class LogBuffModel(nn.Module):
    """Buffer Code 1: logBuff averages an input that carries autograd history."""

    def __init__(self) -> None:
        super().__init__()
        self.logParam = nn.Parameter(torch.tensor(1.0))
        self.logBuff = torch.tensor(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.logBuff = self.logBuff * 0.6 + x * 0.4
        return self.logParam * torch.log(self.logBuff)


class PowLogPlainTensorModel(nn.Module):
    """Buffer Code 1's whole model: powBuff 4.9698, logBuff 116.3565 after ten calls."""

    def __init__(self) -> None:
        super().__init__()
        self.powModel = PowBuffModel()
        self.logModel = LogBuffModel()

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.logModel(self.powModel(x, q))


class PowRegisteredBuffModel(PowBuffModel):
    """Buffer Code 2: powBuff registered as a buffer."""

    def __init__(self) -> None:
        super().__init__()
        del self.powBuff
        self.register_buffer("powBuff", torch.tensor(0.0))


class LogRegisteredBuffModel(LogBuffModel):
    """Buffer Code 2: logBuff registered; after a forward it holds a tensor with a grad_fn."""

    def __init__(self) -> None:
        super().__init__()
        del self.logBuff
        self.register_buffer("logBuff", torch.tensor(0.0))


class PowLogBufferModel(nn.Module):
    """Buffer Code 2's whole model: both averages are buffers (logBuff gains grad history)."""

    def __init__(self) -> None:
        super().__init__()
        self.powModel = PowRegisteredBuffModel()
        self.logModel = LogRegisteredBuffModel()

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.logModel(self.powModel(x, q))


class NestedCacheModel(nn.Module):
    """A module hidden two containers deep: `encoder.cache[1]['k']`."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.cache = [None, {"k": nn.Linear(2, 2), "scale": 0.5}]


class PrivateListModel(nn.Module):
    """A user attribute that starts with an underscore still holds user state."""

    def __init__(self) -> None:
        super().__init__()
        self._heads = [nn.Linear(2, 2), nn.Linear(2, 2)]


class SetOfModulesModel(nn.Module):
    """A module in a plain set: no subscript exists, so its path is `pool{0}`."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = {nn.Linear(2, 2)}


class CyclicContainerModel(nn.Module):
    """A plain list that contains itself, beside a plain tensor inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[object] = [torch.zeros(2)]
        self.history.append(self.history)
        self.linear = nn.Linear(2, 2)


class CyclicModuleModel(nn.Module):
    """A module registered as its own child (`named_modules(remove_duplicate=False)` recurses)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.again = self


# --- Models with nothing unregistered, including torch's own machinery. ---


class TiedLanguageModel(nn.Module):
    """Embedding and output projection share one weight (weight tying)."""

    def __init__(self, vocab: int = 10, dim: int = 4) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.decoder = nn.Linear(dim, vocab)
        self.decoder.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.embedding(tokens))


class ReusedBlockModel(nn.Module):
    """One Linear instance registered under two names (the article's Parameter Code 4 shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.second = self.first


class AliasedModel(nn.Module):
    """Registered modules and tensors also kept in plain containers: aliases, not leaks."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
        self.register_buffer("scale", torch.ones(2))
        self.layer_list = list(self.layers)
        self.by_name = {"w0": self.layers[0].weight, "scale": self.scale}
        self.scale_alias = self.scale


class ContainersModel(nn.Module):
    """ModuleList, ModuleDict, ParameterList and ParameterDict."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.ReLU()])
        self.heads = nn.ModuleDict({"q": nn.Linear(2, 2), "k": nn.Linear(2, 2)})
        self.scales = nn.ParameterList([nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))])
        self.biases = nn.ParameterDict({"a": nn.Parameter(torch.zeros(2))})


class NonPersistentBufferModel(nn.Module):
    """A persistent and a non-persistent buffer (the latter is not in `state_dict`)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.register_buffer("mask", torch.ones(2), persistent=False)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


class FrozenBackboneModel(nn.Module):
    """A frozen backbone (requires_grad False) under a trainable head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)
        self.backbone.requires_grad_(False)


class BrokenExtraReprModule(nn.Module):
    """A module whose `extra_repr` raises: the inventory must still be built."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))

    def extra_repr(self) -> str:
        raise ValueError("broken on purpose")


class BracketNameModel(nn.Module):
    """A child named `blocks[attn]` (legal through `add_module`), which looks like markup."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module("blocks[attn]", nn.Linear(2, 2))


def lstm() -> nn.Module:
    """LSTM: `_flat_weights` is a plain list of its registered parameters."""
    return nn.LSTM(input_size=3, hidden_size=4, num_layers=2)


def multihead_attention() -> nn.Module:
    """MultiheadAttention with a packed in-projection and NonDynamicallyQuantizableLinear."""
    return nn.MultiheadAttention(embed_dim=8, num_heads=2, batch_first=True)


def transformer_encoder() -> nn.Module:
    """A two-layer TransformerEncoder (deep-copied layers, a function-valued activation)."""
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def batchnorm_dropout() -> nn.Module:
    """BatchNorm (with its `num_batches_tracked` buffer) and Dropout."""
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5))


def lazy_linear() -> nn.Module:
    """LazyLinear before its first forward: an UninitializedParameter, shape unknown."""
    return nn.Sequential(nn.LazyLinear(3), nn.ReLU())


def old_weight_norm() -> nn.Module:
    """`torch.nn.utils.weight_norm`: weight_g/weight_v registered, `weight` a plain attribute."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice
        return nn.Sequential(nn.utils.weight_norm(nn.Linear(3, 4)))


def old_spectral_norm() -> nn.Module:
    """`torch.nn.utils.spectral_norm`: weight_orig, weight_u/_v buffers, plain `weight`."""
    return nn.Sequential(nn.utils.spectral_norm(nn.Linear(3, 4)))


def parametrized_weight_norm() -> nn.Module:
    """`parametrizations.weight_norm`: original0/original1 under `parametrizations.weight`."""
    return nn.Sequential(parametrizations.weight_norm(nn.Linear(3, 4)))


def parametrized_spectral_norm() -> nn.Module:
    """`parametrizations.spectral_norm`: `_u`/`_v` buffers inside the parametrization."""
    return nn.Sequential(parametrizations.spectral_norm(nn.Linear(3, 4)))


def parametrized_lstm() -> nn.Module:
    """A parametrized LSTM weight: `_flat_weights` then caches a tensor nobody registered."""
    return parametrizations.weight_norm(nn.LSTM(3, 3), "weight_hh_l0")


def pruned_linear() -> nn.Module:
    """`prune.l1_unstructured`: weight_orig and weight_mask registered, `weight` plain."""
    return prune.l1_unstructured(nn.Linear(3, 4), "weight", amount=0.5)


def compiled_powlog() -> nn.Module:
    """`torch.compile(PowLogModel())`: an OptimizedModule holding the model as `_orig_mod`.

    Nothing is compiled until the first forward, which tests never run; the eager backend
    avoids importing inductor (about a second).
    """
    return torch.compile(PowLogModel(), backend="eager")


def many_blocks(n: int = 3300) -> nn.Sequential:
    """`n` identical blocks of Linear(4, 4) + LayerNorm + ReLU: 4n + 1 modules."""
    return nn.Sequential(
        *[nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU()) for _ in range(n)]
    )


# Every model here registers everything it holds: the doctor must find nothing unregistered.
CLEAN_MODELS: dict[str, Callable[[], nn.Module]] = {
    "powlog": PowLogModel,
    "powlog_modulelist": PowLogModuleListModel,
    "powlog_moduledict": PowLogModuleDictModel,
    "powlog_buffers": PowLogBufferModel,
    "tied": TiedLanguageModel,
    "reused_block": ReusedBlockModel,
    "aliased": AliasedModel,
    "containers": ContainersModel,
    "non_persistent_buffer": NonPersistentBufferModel,
    "frozen_backbone": FrozenBackboneModel,
    "broken_extra_repr": BrokenExtraReprModule,
    "bracket_name": BracketNameModel,
    "lstm": lstm,
    "multihead_attention": multihead_attention,
    "transformer_encoder": transformer_encoder,
    "batchnorm_dropout": batchnorm_dropout,
    "embedding": lambda: nn.Embedding(10, 4, padding_idx=0),
    "lazy_linear": lazy_linear,
    "old_weight_norm": old_weight_norm,
    "old_spectral_norm": old_spectral_norm,
    "parametrized_weight_norm": parametrized_weight_norm,
    "parametrized_spectral_norm": parametrized_spectral_norm,
    "parametrized_lstm": parametrized_lstm,
    "pruned_linear": pruned_linear,
    "cyclic_module": CyclicModuleModel,
    "compiled": compiled_powlog,
}
