"""Constants and plain functions the test files share: paths, strict JSON, the article's table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from tests import doctor_models as D
from tests import models as M

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# Programs with a training loop of their own, watched (docs/watch.md): run with `python`.
OWN_LOOPS = frozenset({"own_loop.py", "lightning_nan.py", "hf_trainer_nan.py"})
# Model scripts; examples/test_*.py are pytest files (docs/testing.md), not model scripts.
MODEL_SCRIPTS = sorted(
    path
    for path in EXAMPLES.glob("*.py")
    if not path.stem.startswith("test_") and path.name not in OWN_LOOPS
)


def example(name: str) -> str:
    """The path of `examples/<name>` as a string, the form modscope's entry points take."""
    return str(EXAMPLES / name)


POWLOG = example("powlog.py")

# Parameter Code 3 (and 4): powParam and logParam after each of the 10 iterations of powlog.
ARTICLE_TABLE = [
    (1.1034, 1.4994),
    (1.1744, 1.7569),
    (1.2114, 1.8801),
    (1.2288, 1.9365),
    (1.2367, 1.9618),
    (1.2403, 1.9730),
    (1.2418, 1.9779),
    (1.2425, 1.9801),
    (1.2428, 1.9811),
    (1.2430, 1.9815),
]


# -- strict JSON: a bare NaN or Infinity is not JSON ----------------------------------------------


def strict(text: str) -> Any:
    """One JSON document; a bare `NaN`/`Infinity` token fails the test."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def strict_lines(text: str) -> list[dict]:
    """Each non-blank line as JSON; a bare `NaN`/`Infinity` token raises ValueError."""

    def refuse(token: str) -> Any:
        raise ValueError(f"bare {token} in JSON")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines() if line.strip()]


def json_lines(text: str) -> list[dict]:
    """Each non-blank line as JSON."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- hooks: every dict torch keeps them in, to compare before and after ----------------------------

MODULE_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
GLOBAL_DICTS = (
    "_global_forward_pre_hooks",
    "_global_forward_hooks",
    "_global_forward_hooks_always_called",
    "_global_backward_pre_hooks",
    "_global_backward_hooks",
)


def hook_state(model: nn.Module) -> dict[str, Any]:
    """Hook ids and functions (by identity) of each dict, the full-backward flags, and the
    post-accumulate-grad hooks of every parameter."""
    state: dict[str, Any] = {}
    for path, m in model.named_modules():
        for name in MODULE_DICTS:
            state[f"{path}.{name}"] = [(k, id(v)) for k, v in getattr(m, name).items()]
        state[f"{path}._is_full_backward_hook"] = m._is_full_backward_hook
    for name, p in model.named_parameters():
        hooks = getattr(p, "_post_accumulate_grad_hooks", None) or {}
        state[f"{name}._post_accumulate_grad_hooks"] = [(k, id(v)) for k, v in hooks.items()]
        state[f"{name}._backward_hooks"] = [
            (k, id(v)) for k, v in (p._backward_hooks or {}).items()
        ]
    for name in GLOBAL_DICTS:
        state[name] = [(k, id(v)) for k, v in getattr(torch_module, name).items()]
    state["_global_is_full_backward_hook"] = torch_module._global_is_full_backward_hook
    return state


# -- models the doctor must stay quiet on ---------------------------------------------------------


def _tokens() -> torch.Tensor:
    return torch.randint(0, 10, (2, 5), generator=torch.Generator().manual_seed(0))


# name: (model, inputs, the findings expected); the doctor finds no pitfall in any of them.
CLEAN_RUNS: dict[str, tuple[Callable[[], nn.Module], Any, list[tuple[str, str]]]] = {
    "powlog": (M.PowLogModel, M.article_inputs(), []),
    "powlog_modulelist": (M.PowLogModuleListModel, M.article_inputs(), []),
    "powlog_moduledict": (M.PowLogModuleDictModel, M.article_inputs(), []),
    "tied": (M.TiedLanguageModel, _tokens(), [("shared-parameter", "embedding.weight")]),
    "lstm": (M.lstm, torch.randn(4, 2, 3), []),
    "multihead_attention": (M.multihead_attention, (torch.randn(2, 3, 8),) * 3, []),
    "transformer_encoder": (M.transformer_encoder, torch.randn(2, 3, 8), []),
    "batchnorm_dropout": (M.batchnorm_dropout, torch.randn(4, 4), []),
    "embedding": (lambda: nn.Embedding(10, 4, padding_idx=0), torch.tensor([0, 1, 2]), []),
    "old_weight_norm": (M.old_weight_norm, torch.randn(2, 3), []),
    "old_spectral_norm": (M.old_spectral_norm, torch.randn(2, 3), []),
    "parametrized_weight_norm": (M.parametrized_weight_norm, torch.randn(2, 3), []),
    "parametrized_spectral_norm": (M.parametrized_spectral_norm, torch.randn(2, 3), []),
    "parametrized_lstm": (M.parametrized_lstm, torch.randn(4, 2, 3), []),
    "pruned_linear": (M.pruned_linear, torch.randn(2, 3), []),
    "tiny_transformer_lm": (
        D.TinyTransformerLM,
        torch.randint(0, 16, (2, 5), generator=torch.Generator().manual_seed(1)),
        [("shared-parameter", "embed.weight")],
    ),
    "frozen_backbone": (D.FrozenBackbone, torch.randn(4, 4), []),
    "containers": (D.Containers, torch.ones(4, 2), []),
    "stochastic_layers": (D.StochasticLayers, torch.randn(2, 3, 4), []),
    "with_norm": (D.WithNorm, torch.randn(4, 3), []),
}
