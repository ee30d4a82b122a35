"""`modscope compat SCRIPT CHECKPOINT` and `assert_loads`: whether a saved state_dict loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from modscope.cli import main
from modscope.core.model.checkpoint_compat import check_checkpoint
from modscope.core.script.loader import load_script
from modscope.testing import assert_loads
from tests.helpers import EXAMPLES

TINY_LM = EXAMPLES / "tiny_lm.py"


@pytest.fixture(scope="module")
def tiny_lm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny_lm.pt"
    torch.save(load_script(str(TINY_LM)).model.state_dict(), path)
    return path


def _edited(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """tiny_lm.py with each (old, new) replaced once: the model after a refactor."""
    text = TINY_LM.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    script = tmp_path / "tiny_lm.py"
    script.write_text(text)
    return script


def _compat(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main(["compat", *argv, "--json"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return code, json.loads(out)


def test_the_checkpoint_of_the_same_model_loads(tiny_lm_checkpoint, capsys):
    code, report = _compat(capsys, str(TINY_LM), str(tiny_lm_checkpoint))
    assert code == 0
    assert report["loads"] is True
    assert report["missing"] == report["unexpected"] == report["shape_mismatches"] == []
    assert report["checkpoint_keys"] == report["model_keys"] == 29


def test_a_renamed_layer_is_mapped_back(tiny_lm_checkpoint, tmp_path, capsys):
    script = _edited(
        tmp_path,
        ("self.norm = nn.LayerNorm", "self.final_norm = nn.LayerNorm"),
        ("self.head(self.norm(h))", "self.head(self.final_norm(h))"),
    )
    code, report = _compat(capsys, str(script), str(tiny_lm_checkpoint))
    assert code == 1
    assert report["missing"] == ["final_norm.weight", "final_norm.bias"]
    assert report["unexpected"] == ["norm.weight", "norm.bias"]
    assert report["renames"] == {"norm.weight": "final_norm.weight", "norm.bias": "final_norm.bias"}


def test_a_reshaped_layer_is_a_shape_mismatch(tiny_lm_checkpoint, tmp_path, capsys):
    script = _edited(tmp_path, ("dim_feedforward=64", "dim_feedforward=128"))
    code, report = _compat(capsys, str(script), str(tiny_lm_checkpoint))
    assert code == 1
    first = report["shape_mismatches"][0]
    assert first == {
        "key": "encoder.layers.0.linear1.weight",
        "checkpoint": {"shape": [64, 32], "dtype": "float32"},
        "model": {"shape": [128, 32], "dtype": "float32"},
    }
    assert len(report["shape_mismatches"]) == 6  # linear1 weight and bias, linear2 weight; x2
    assert report["renames"] == {}


def test_a_removed_layer_leaves_unexpected_keys(tiny_lm_checkpoint, tmp_path, capsys):
    script = _edited(tmp_path, ("num_layers=2", "num_layers=1"))
    code, report = _compat(capsys, str(script), str(tiny_lm_checkpoint))
    assert code == 1
    assert report["missing"] == []
    assert len(report["unexpected"]) == 12
    assert all(k.startswith("encoder.layers.1.") for k in report["unexpected"])
    assert report["renames"] == {}


def test_an_added_buffer_is_missing_from_the_checkpoint(tiny_lm_checkpoint, tmp_path, capsys):
    script = _edited(
        tmp_path,
        (
            'self.register_buffer("causal_mask", mask, persistent=False)',
            'self.register_buffer("causal_mask", mask, persistent=False)\n'
            '        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))',
        ),
    )
    code, report = _compat(capsys, str(script), str(tiny_lm_checkpoint))
    assert code == 1
    assert report["missing"] == ["step_count"]
    assert report["unexpected"] == []


def test_the_text_report_shows_the_mapping_to_paste(tiny_lm_checkpoint, tmp_path, capsys):
    script = _edited(
        tmp_path,
        ("self.norm = nn.LayerNorm", "self.final_norm = nn.LayerNorm"),
        ("self.head(self.norm(h))", "self.head(self.final_norm(h))"),
    )
    assert main(["compat", str(script), str(tiny_lm_checkpoint)]) == 1
    out = capsys.readouterr().out
    assert "it does not load" in out
    assert "with the checkpoint's keys renamed so, it loads" in out
    mapping = out[out.index("mapping = ") + len("mapping = ") : out.index("}") + 1]
    assert json.loads(mapping) == {
        "norm.weight": "final_norm.weight",
        "norm.bias": "final_norm.bias",
    }


def test_a_pickle_with_code_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": Payload()}, path)
    code, report = _compat(capsys, str(TINY_LM), str(path))
    assert code == 2
    assert "cannot be read safely" in report["error"]["message"]
    assert "refused posix.mkdir" in report["error"]["message"]
    assert not marker.exists()
    with pytest.raises(AssertionError, match="cannot be read safely"):
        assert_loads(nn.Linear(1, 1), path)
    assert not marker.exists()


def test_an_unreadable_checkpoint_exits_2_and_says_so(tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    code, report = _compat(capsys, str(TINY_LM), str(garbage))
    assert code == 2
    assert "is not a checkpoint torch.load can read" in report["error"]["message"]
    code, report = _compat(capsys, str(TINY_LM), str(tmp_path / "absent.pt"))
    assert code == 2
    assert "no such file" in report["error"]["message"]


def test_a_state_dict_nested_under_model_is_found(tmp_path):
    model = nn.Linear(2, 3)
    path = tmp_path / "trainer.pt"
    torch.save({"model": model.state_dict(), "epoch": 4}, path)
    result = check_checkpoint(model, path)
    assert result.loads
    assert result.note == "the state_dict is the checkpoint's 'model' entry"


def test_safetensors_headers_are_read(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    path = tmp_path / "m.safetensors"
    safetensors.save_file({"weight": torch.zeros(3, 2, dtype=torch.bfloat16)}, str(path))
    result = check_checkpoint(nn.Linear(2, 3), path)
    assert result.missing == ("bias",)
    assert [(m.key, m.checkpoint.dtype, m.model.dtype) for m in result.dtype_mismatches] == [
        ("weight", "bfloat16", "float32")
    ]
    with pytest.raises(AssertionError, match="missing"):
        assert_loads(nn.Linear(2, 3), path)


def test_assert_loads_passes_on_a_loadable_state_dict():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert_loads(model, model.state_dict())


def test_a_tiny_gpt2_with_a_renamed_attention_projection_is_mapped_back():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=3, n_head=2, n_embd=32, vocab_size=100, n_positions=16)
    model = transformers.GPT2LMHeadModel(config)
    saved = model.state_dict()
    for block in model.transformer.h:  # a refactor renames c_proj to o_proj in every block
        block.attn.o_proj = block.attn.c_proj
        del block.attn.c_proj
    result = check_checkpoint(model, saved)
    assert not result.loads
    assert result.renames == {
        f"transformer.h.{i}.attn.c_proj.{p}": f"transformer.h.{i}.attn.o_proj.{p}"
        for i in range(3)
        for p in ("weight", "bias")
    }
    assert not result.shape_mismatches


def test_a_dataparallel_prefix_is_mapped_back_and_a_lone_suffix_is_no_rename():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}
    assert check_checkpoint(model, wrapped).renames == {
        f"module.{k}": k for k in model.state_dict()
    }
    # `0.weight` ends both `a.0.weight` and `b.0.weight`: no guess between them.
    pair = nn.ModuleDict({"a": nn.Sequential(nn.Linear(3, 3)), "b": nn.Sequential(nn.Linear(3, 3))})
    result = check_checkpoint(pair, {"0.weight": torch.zeros(3, 3)})
    assert "0.weight" not in result.renames


def test_compat_imports_neither_textual_nor_the_doctor(tiny_lm_checkpoint):
    code = (
        "import contextlib, io, sys\n"
        "from modscope.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['compat', {str(TINY_LM)!r}, {str(tiny_lm_checkpoint)!r}]) == 0\n"
        "print(sorted({m.split('.')[0] if m.startswith('textual') else m for m in sys.modules\n"
        "    if m.startswith(('textual', 'modscope.core.doctor', 'syrupy'))}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
