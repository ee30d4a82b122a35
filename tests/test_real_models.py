"""Real architectures from Hugging Face `transformers`: decoders (GPT-2, Llama, Mistral, Gemma 1-3),
state-space models (Mamba, Jamba), an encoder (BERT), encoder-decoders (T5, BART) and a vision
model (ViT).

Each is built from a small config with random weights (nothing downloaded: HF_HUB_OFFLINE=1) in
a model script, and goes through `tree`, `check`, `run --hooks all` and `--record`/`replay` by
`modscope.cli.main`: the commands succeed, `check` raises no false alarm (the modern decoders
keep parameterless kernel modules in a plain dict on purpose: info, never an error), a run with
every hook observing ends bit-identical to the same plain loop, and a recording replays the
run's JSON lines byte for byte. Skipped when transformers is missing. (timm is left out: it
imports torchvision, whose wheels for torch 2.13 are CUDA builds that fail to import on the CPU
torch.) `.ci/drift` runs this tier against the newest releases.
"""

from __future__ import annotations

import os
import runpy
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.helpers import strict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from modscope.cli import main  # noqa: E402

STEPS = 2

TOKENS = """
ids = torch.randint(1, 100, (2, 16), generator=torch.Generator().manual_seed(1))
inputs = {"input_ids": ids, "labels": ids}
"""
PIXELS = """
g = torch.Generator().manual_seed(1)
inputs = {"pixel_values": torch.randn(2, 3, 16, 16, generator=g),
          "labels": torch.randint(0, 5, (2,), generator=g)}
"""
TRAIN = """
loss_fn = lambda out: out.loss
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
"""
LOGITS = [2, 16, 100]
"""The step's output: the logits [batch, seq, vocab], not the loss the ModelOutput holds first."""

DECODER = (
    "vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, "
    "num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32, "
    "bos_token_id=0, eos_token_id=0, pad_token_id=0"
)


@dataclass(frozen=True)
class Architecture:
    imports: str
    build: str
    batch: str = TOKENS
    output_shape: tuple[int, ...] = tuple(LOGITS)


MODELS: dict[str, Architecture] = {
    "gpt2": Architecture(
        "from transformers import GPT2Config, GPT2LMHeadModel",
        "GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, "
        "n_positions=32, bos_token_id=0, eos_token_id=0))",
    ),
    "bert": Architecture(
        "from transformers import BertConfig, BertForMaskedLM",
        "BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, "
        "num_attention_heads=2, intermediate_size=64, max_position_embeddings=32))",
    ),
    "llama": Architecture(
        "from transformers import LlamaConfig, LlamaForCausalLM",
        f"LlamaForCausalLM(LlamaConfig({DECODER}))",
    ),
    "mistral": Architecture(
        "from transformers import MistralConfig, MistralForCausalLM",
        f"MistralForCausalLM(MistralConfig({DECODER}))",
    ),
    "gemma": Architecture(
        "from transformers import GemmaConfig, GemmaForCausalLM",
        f"GemmaForCausalLM(GemmaConfig({DECODER}, head_dim=16))",
    ),
    "gemma2": Architecture(
        "from transformers import Gemma2Config, Gemma2ForCausalLM",
        f"Gemma2ForCausalLM(Gemma2Config({DECODER}, head_dim=16))",
    ),
    "gemma3": Architecture(
        "from transformers import Gemma3ForCausalLM, Gemma3TextConfig",
        f"Gemma3ForCausalLM(Gemma3TextConfig({DECODER}, head_dim=16))",
    ),
    "mamba": Architecture(
        "from transformers import MambaConfig, MambaForCausalLM",
        "MambaForCausalLM(MambaConfig(vocab_size=100, hidden_size=32, state_size=8, "
        "num_hidden_layers=2, expand=2, conv_kernel=4, bos_token_id=0, eos_token_id=0, "
        "pad_token_id=0))",
    ),
    "jamba": Architecture(
        "from transformers import JambaConfig, JambaForCausalLM",
        f"JambaForCausalLM(JambaConfig({DECODER}, num_experts=2, num_experts_per_tok=1, "
        "expert_layer_period=2, expert_layer_offset=1, attn_layer_period=2, "
        "attn_layer_offset=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, "
        "mamba_dt_rank=4))",
    ),
    "t5": Architecture(
        "from transformers import T5Config, T5ForConditionalGeneration",
        "T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, "
        "num_layers=2, num_heads=2, decoder_start_token_id=0, pad_token_id=0, "
        "eos_token_id=1))",
    ),
    "bart": Architecture(
        "from transformers import BartConfig, BartForConditionalGeneration",
        "BartForConditionalGeneration(BartConfig(vocab_size=100, d_model=32, encoder_layers=2, "
        "decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, "
        "encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32, pad_token_id=0, "
        "bos_token_id=0, eos_token_id=1, decoder_start_token_id=0))",
    ),
    "vit": Architecture(
        "from transformers import ViTConfig, ViTForImageClassification",
        "ViTForImageClassification(ViTConfig(image_size=16, patch_size=4, num_channels=3, "
        "hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, "
        "num_labels=5))",
        batch=PIXELS,
        output_shape=(2, 5),
    ),
}
KERNEL_TABLES = {"llama", "mistral", "gemma", "gemma2", "gemma3", "mamba", "jamba"}
"""The families whose attention or mixer keeps `_kernel_funcs`, a plain dict of parameterless
kernel modules, out of `named_children()` on purpose (transformers 5.25)."""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("real_models")
    out = {}
    for name, a in MODELS.items():
        path = folder / f"tiny_{name}.py"
        path.write_text(
            f"import torch\n{a.imports}\n\ntorch.manual_seed(0)\nmodel = {a.build}\n"
            + textwrap.dedent(a.batch)
            + textwrap.dedent(TRAIN)
        )
        out[name] = str(path)
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_tree(name: str, scripts: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tree", scripts[name], "--json"]) == 0
    tree = strict(capsys.readouterr().out)
    assert len(tree["modules"]) > 10 and tree["modules"][0]["totals"]["parameters"] > 10_000
    # Nothing unregistered holds state; what is there loses only the mode, and not one of
    # them behaves differently in eval mode.
    unregistered = tree["unregistered"]
    assert [u for u in unregistered if u["holds_state"] or u["mode_dependent"]] == []
    assert bool(unregistered) == (name in KERNEL_TABLES)
    assert all("._kernel_funcs[" in u["path"] and u["what"] == "module" for u in unregistered)


@pytest.mark.parametrize("name", list(MODELS))
def test_check_raises_no_false_alarm(
    name: str, scripts: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", scripts[name], "--json", "--steps", str(STEPS)]) == 0
    report = strict(capsys.readouterr().out)
    assert report["steps_run"] == STEPS and "error" not in report
    # Weight tying (embeddings and the LM head) and the kernel tables are all there is to say.
    assert {(f["kind"], f["severity"]) for f in report["findings"]} <= {
        ("shared-parameter", "info"),
        ("unregistered-module", "info"),
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
    output = next(line for line in lines if line["event"] == "step")["output"]
    assert tuple(output["shape"]) == MODELS[name].output_shape
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


@pytest.mark.parametrize("name", list(MODELS))
def test_a_recording_replays_the_runs_json_lines_byte_for_byte(
    name: str, scripts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "recording"
    argv = ["run", scripts[name], "--steps", str(STEPS), "--json", "--record", str(folder)]
    assert main(argv) == 0
    ran = capsys.readouterr().out
    assert main(["replay", str(folder), "--json"]) == 0
    replayed = capsys.readouterr().out
    assert replayed == ran
    lines = [strict(line) for line in ran.splitlines()]
    assert [line["step"] for line in lines if line["event"] == "step"] == list(range(1, STEPS + 1))
