"""Real architectures: tiny GPT-2, BERT, Llama and T5 from Hugging Face `transformers`.

Each is built from a small config with random weights (nothing downloaded: HF_HUB_OFFLINE=1) in
a model script, and goes through `tree`, `check` and `run --hooks all` by `modscope.cli.main`:
the commands succeed, `check` raises no error-level false alarm, and a run with every hook
observing ends bit-identical to the same plain loop. Skipped when transformers is missing.
(timm is left out: it imports torchvision, whose wheels for torch 2.13 are CUDA builds that
fail to import on the CPU torch.)
"""

from __future__ import annotations

import json
import os
import runpy
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from modscope.cli import main  # noqa: E402

STEPS = 2

COMMON = """
ids = torch.randint(1, 100, (2, 16), generator=torch.Generator().manual_seed(1))
inputs = {"input_ids": ids, "labels": ids}
loss_fn = lambda out: out.loss
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
"""

# name: (import line, the model built from a small config)
MODELS: dict[str, tuple[str, str]] = {
    "gpt2": (
        "from transformers import GPT2Config, GPT2LMHeadModel",
        "GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, "
        "n_positions=32, bos_token_id=0, eos_token_id=0))",
    ),
    "bert": (
        "from transformers import BertConfig, BertForMaskedLM",
        "BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, "
        "num_attention_heads=2, intermediate_size=64, max_position_embeddings=32))",
    ),
    "llama": (
        "from transformers import LlamaConfig, LlamaForCausalLM",
        "LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, "
        "num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, "
        "max_position_embeddings=32, bos_token_id=0, eos_token_id=0))",
    ),
    "t5": (
        "from transformers import T5Config, T5ForConditionalGeneration",
        "T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, "
        "num_layers=2, num_heads=2, decoder_start_token_id=0, pad_token_id=0, "
        "eos_token_id=1))",
    ),
}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("real_models")
    out = {}
    for name, (imports, build) in MODELS.items():
        path = folder / f"tiny_{name}.py"
        path.write_text(
            f"import torch\n{imports}\n\ntorch.manual_seed(0)\nmodel = {build}\n"
            + textwrap.dedent(COMMON)
        )
        out[name] = str(path)
    return out


def strict(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("name", list(MODELS))
def test_tree(name: str, scripts: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", scripts[name], "--json"]) == 0
    tree = strict(capsys.readouterr().out)
    assert len(tree["modules"]) > 10 and tree["modules"][0]["totals"]["parameters"] > 10_000
    assert tree["unregistered"] == []


@pytest.mark.parametrize("name", list(MODELS))
def test_check_raises_no_false_alarm(
    name: str, scripts: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", scripts[name], "--json", "--steps", str(STEPS)]) == 0
    report = strict(capsys.readouterr().out)
    assert report["steps_run"] == STEPS and "error" not in report
    # Weight tying (embeddings and the LM head) is all there is to say.
    assert {(f["kind"], f["severity"]) for f in report["findings"]} <= {
        ("shared-parameter", "info")
    }


def _plain_loop(script: str) -> dict[str, torch.Tensor]:
    """What the script trains to when run by hand: the default iteration of docs/design.md
    section 1, `STEPS` times, on a fresh copy of the script's objects."""
    ns = runpy.run_path(script, run_name="__plain__")
    model, optimizer, batch = ns["model"], ns["optimizer"], ns["inputs"]
    for _ in range(STEPS):
        optimizer.zero_grad()
        ns["loss_fn"](model(**batch)).backward()
        optimizer.step()
    return model.state_dict()


@pytest.mark.parametrize("name", list(MODELS))
def test_run_with_every_hook_ends_bit_identical_to_the_plain_loop(
    name: str, scripts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "state.pt"
    argv = ["run", scripts[name], "--hooks", "all", "--steps", str(STEPS), "--json"]
    assert main([*argv, "--save-state", str(saved)]) == 0
    lines = [strict(line) for line in capsys.readouterr().out.splitlines()]
    events = {line["event"] for line in lines}
    assert "error" not in events
    assert [line["step"] for line in lines if line["event"] == "step"] == list(range(1, STEPS + 1))
    # The step's output is the logits, not the loss the ModelOutput holds first.
    output = next(line for line in lines if line["event"] == "step")["output"]
    assert len(output["shape"]) == 3 and output["shape"][-1] == 100  # [batch, seq, vocab]
    hooks = [line for line in lines if line["event"] == "hook"]
    assert {h["kind"] for h in hooks} == {"forward-pre", "forward", "backward", "backward-pre"}
    assert all(line["loss"] is not None for line in lines if line["event"] == "step")

    observed = torch.load(saved, weights_only=True)
    plain = _plain_loop(scripts[name])
    assert observed.keys() == plain.keys()
    different = [k for k in plain if not torch.equal(observed[k], plain[k])]
    assert different == []
    initial = runpy.run_path(scripts[name], run_name="__initial__")["model"].state_dict()
    assert any(not torch.equal(initial[k], plain[k]) for k in plain)  # it did train
