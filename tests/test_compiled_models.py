"""`torch.compile`d models under every command: a compiled whole model (`OptimizedModule`, the
user's model as `_orig_mod`) and a compiled submodule, through `tree`, `check`, `run` with every
hook, a scaling hook, `--layers`, `--break nan` and `--record` + `replay --json`; a compiled tiny
GPT-2 through `run --hooks all`. Modules inside the compiled call are observed where they are
(modscope's hooks run eagerly between compiled graphs), and a run ends bit-identical to the same
plain compiled loop. Paths are the `state_dict`'s: `mlp._orig_mod.fc`."""

from __future__ import annotations

import os
import runpy
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from modscope.cli import main
from modscope.core.model.walk import compiled_region, module_at, sealed_note
from tests.helpers import strict

STEPS = 2

MODEL = """
import torch
from torch import nn

torch.manual_seed(0)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.act = nn.GELU()
        self.proj = nn.Linear(16, 8)

    def forward(self, x):
        return self.proj(self.act(self.fc(x)))


class Model(nn.Module):
    def __init__(self, mlp):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.mlp = mlp
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        return self.out(self.mlp(self.inp(x))).pow(2).mean()


inputs = torch.randn(5, 4)
"""

SCRIPTS = {
    # The common case (nanoGPT's train.py): the whole model, with inductor.
    "whole": MODEL + "model = torch.compile(Model(MLP()))\n",
    # The same through AOTAutograd alone, where inductor's compile time adds nothing.
    "whole_aot": MODEL + 'model = torch.compile(Model(MLP()), backend="aot_eager")\n',
    # A compiled block inside a plain model.
    "sub": MODEL + 'model = Model(torch.compile(MLP(), backend="aot_eager"))\n',
}
# A compiled forward method, the module itself left as it is.
SCRIPTS["forward"] = (
    MODEL
    + "model = Model(MLP())\n"
    + 'model.forward = torch.compile(model.forward, backend="aot_eager")\n'
)
SCRIPTS["fullgraph"] = SCRIPTS["sub"].replace(
    'backend="aot_eager"', 'backend="aot_eager", fullgraph=True'
)
LIGHT = ["whole_aot", "sub"]
"""The scripts for the commands whose compiled graphs are not what is checked."""
OPTIMIZER = "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"

# The paths of the MLP's Linear layers, inside the compiled call, as `state_dict` names them.
INNER = {
    "whole": "_orig_mod.mlp.fc",
    "whole_aot": "_orig_mod.mlp.fc",
    "sub": "mlp._orig_mod.fc",
    "forward": "mlp.fc",
}

NAN = """
import torch
from torch import nn

torch.manual_seed(0)


class Log(nn.Module):
    def forward(self, x):
        return torch.log(x)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.log = Log()

    def forward(self, x):
        return self.log(self.fc(x))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = torch.compile(Block(), backend="aot_eager")

    def forward(self, x):
        return self.block(x).sum()


model = Model()
inputs = torch.randn(3, 4)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""

GPT2 = """
import torch
import transformers

transformers.logging.set_verbosity_error()
torch.manual_seed(0)
config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
model = torch.compile(transformers.GPT2LMHeadModel(config), backend="eager")
ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
inputs = {"input_ids": ids, "labels": ids}
loss_fn = lambda out: out.loss
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
"""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("compiled")
    out = {}
    for name, text in {**SCRIPTS, "nan": NAN, "gpt2": GPT2}.items():
        path = folder / f"{name}.py"
        path.write_text(textwrap.dedent(text) + (OPTIMIZER if name in SCRIPTS else ""))
        out[name] = str(path)
    return out


@pytest.fixture(autouse=True)
def fresh_dynamo() -> None:
    """Each test compiles afresh: a plain loop after a run compiles its own graphs (not the
    run's, hooks and all), and no test meets Dynamo's recompilation limit."""
    torch._dynamo.reset()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [strict(line) for line in text.splitlines() if line.strip()]


def plain_loop(script: str, steps: int = STEPS) -> dict[str, torch.Tensor]:
    """What the script trains to when run by hand: the default iteration, compiled as the
    script compiles it."""
    torch._dynamo.reset()
    ns = runpy.run_path(script, run_name="__plain__")
    model, optimizer, batch = ns["model"], ns["optimizer"], ns["inputs"]
    loss_fn = ns.get("loss_fn", lambda out: out)
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(**batch) if isinstance(batch, dict) else model(batch)
        loss_fn(out).backward()
        optimizer.step()
    return model.state_dict()


def assert_bit_identical(saved: Path, script: str) -> None:
    observed = torch.load(saved, weights_only=True)
    plain = plain_loop(script)
    assert observed.keys() == plain.keys()
    assert [k for k in plain if not torch.equal(observed[k], plain[k])] == []
    initial = runpy.run_path(script, run_name="__initial__")["model"].state_dict()
    assert any(not torch.equal(initial[k], plain[k]) for k in plain)  # it did train


@pytest.mark.parametrize("name", ["whole", "sub"])
def test_tree_names_the_modules_inside_the_compiled_call(
    name: str, scripts: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tree", scripts[name], "--json"]) == 0
    tree = strict(capsys.readouterr().out)
    modules = {m["path"]: m for m in tree["modules"]}
    assert tree["unregistered"] == []
    assert modules[INNER[name]]["type"] == "Linear"
    assert set(modules[INNER[name]]["parameters"]) == {"weight", "bias"}
    wrapper = "" if name == "whole" else "mlp"
    assert modules[wrapper]["type"] == "OptimizedModule"
    # The tree's paths are the state_dict's: `_orig_mod.` stays, as torch writes it.
    keys = runpy.run_path(scripts[name], run_name="__keys__")["model"].state_dict()
    assert f"{INNER[name]}.weight" in keys


@pytest.mark.parametrize("name", ["whole", "sub"])
def test_a_path_without_orig_mod_finds_the_module_at_its_real_path(
    name: str, scripts: dict[str, str]
) -> None:
    model = runpy.run_path(scripts[name], run_name="__paths__")["model"]
    found = module_at(model, "mlp.fc")
    assert found is not None and found[0] == INNER[name]
    assert found[1] is model.get_submodule(INNER[name])
    assert module_at(model, INNER[name]) == found
    assert module_at(model, "mlp.nothing") is None


@pytest.mark.parametrize("name", LIGHT)
def test_check_is_clean_and_its_eval_probe_runs(
    name: str, scripts: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", scripts[name], "--steps", "1"]) == 0
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert "(1 step run)" in text and "0 errors, 0 warnings, 0 info" in text
    # The doctor's probes run eagerly too: traced by Dynamo, the eval-mode one failed.
    assert "could not run" not in text


@pytest.mark.parametrize("name", ["whole", "sub", "forward"])
def test_run_with_every_hook_sees_inside_and_ends_bit_identical(
    name: str, scripts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "state.pt"
    argv = ["run", scripts[name], "--hooks", "all", "--steps", str(STEPS), "--json"]
    assert main([*argv, "--save-state", str(saved)]) == 0
    lines = json_lines(capsys.readouterr().out)
    assert [line["step"] for line in lines if line["event"] == "step"] == [1, 2]
    inner = [line for line in lines if line["event"] == "hook" and line["module"] == INNER[name]]
    # Each kind fires once a step on the Linear inside the compiled call, with real values.
    assert sorted(h["kind"] for h in inner) == sorted(
        ["forward-pre", "forward", "backward", "backward-pre"] * STEPS
    )
    forward = next(h for h in inner if h["kind"] == "forward")
    assert forward["output"][0]["shape"] == [5, 16] and forward["output"][0]["nan"] == 0
    backward = next(h for h in inner if h["kind"] == "backward-pre")
    assert backward["grad_output"][0]["shape"] == [5, 16] and backward["grad_output"][0]["norm"] > 0
    assert_bit_identical(saved, scripts[name])


def test_a_scaling_hook_inside_a_compiled_block_changes_what_follows(
    scripts: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    script = scripts["sub"]
    base = ["run", script, "--steps", "1", "--json"]
    assert main(base) == 0
    plain = json_lines(capsys.readouterr().out)[0]["loss"]
    assert main([*base, "--hook", "mlp._orig_mod.fc:forward:scale=2"]) == 0
    lines = json_lines(capsys.readouterr().out)
    hook = next(line for line in lines if line["event"] == "hook")
    assert (hook["module"], hook["action"]) == ("mlp._orig_mod.fc", "scale")
    scaled = next(line for line in lines if line["event"] == "step")["loss"]

    torch._dynamo.reset()
    ns = runpy.run_path(script, run_name="__scaled__")
    fc = ns["model"].mlp._orig_mod.fc
    fc.register_forward_hook(lambda module, args, output: output * 2)
    expected = ns["model"](ns["inputs"]).item()
    assert scaled == pytest.approx(expected, rel=1e-5) and scaled != pytest.approx(plain, rel=1e-3)


@pytest.mark.parametrize("name", LIGHT)
def test_layers_report_the_modules_inside_the_compiled_call(
    name: str, scripts: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", scripts[name], "--steps", "1", "--layers", "--json"]) == 0
    lines = json_lines(capsys.readouterr().out)
    layers = next(line for line in lines if line["event"] == "layers")
    rows = {row["path"]: row for row in layers["modules"]}
    assert rows[INNER[name]]["output"]["std"] > 0 and rows[INNER[name]]["output"]["calls"] == 1
    assert rows[INNER[name]]["grad_norm"] > 0


def test_break_nan_names_the_module_inside_the_compiled_block(
    scripts: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", scripts["nan"], "--steps", "3", "--break", "nan", "--json"]) == 1
    lines = json_lines(capsys.readouterr().out)
    brk = next(line for line in lines if line["event"] == "break")
    assert brk["step"] == 1 and brk["module"] == "block._orig_mod.log"
    assert "error" not in {line["event"] for line in lines}


def test_record_replays_a_compiled_run_exactly(
    scripts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", scripts["sub"], "--steps", str(STEPS), "--hooks", "all", "--json"]
    assert main([*args, "--record", str(tmp_path / "R")]) == 0
    recorded = capsys.readouterr().out
    assert any(line["module"] == INNER["sub"] for line in json_lines(recorded) if "module" in line)
    assert main(["replay", str(tmp_path / "R"), "--json"]) == 0
    assert capsys.readouterr().out == recorded


def test_a_fullgraph_block_is_observed_at_its_wrapper_and_said_so(
    scripts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script, saved = scripts["fullgraph"], tmp_path / "state.pt"
    argv = ["run", script, "--hooks", "all", "--steps", str(STEPS), "--json"]
    assert main([*argv, "--save-state", str(saved)]) == 0
    hooks = [line for line in json_lines(capsys.readouterr().out) if line["event"] == "hook"]
    # A graph break is an error under fullgraph: nothing inside is hooked, the wrapper is.
    assert not any(h["module"].startswith("mlp._orig_mod") for h in hooks)
    assert {h["kind"] for h in hooks if h["module"] == "mlp"} == {
        "forward-pre",
        "forward",
        "backward",
        "backward-pre",
    }
    # What the run's header (and the app's log) says about it.
    note = sealed_note(runpy.run_path(script, run_name="__note__")["model"])
    assert note is not None and "(mlp._orig_mod, and below)" in note
    assert_bit_identical(saved, script)
    assert main(["run", script, "--steps", "1", "--hook", "mlp._orig_mod.fc:forward"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "mlp._orig_mod.fc runs inside a torch.compile(fullgraph=True) call" in err


@pytest.mark.parametrize("fullgraph", [False, True])
def test_a_model_compiled_in_place_is_inside_its_own_compiled_call(fullgraph: bool) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    model.compile(backend="eager", fullgraph=fullgraph)  # compiles nothing before a forward
    assert compiled_region(model) == {id(m): fullgraph for m in model.modules()}
    note = sealed_note(model)
    assert (note is not None and "(the model, and below)" in note) if fullgraph else note is None


def test_compiled_gpt2_with_every_hook_ends_bit_identical(
    scripts: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    saved = tmp_path / "state.pt"
    argv = ["run", scripts["gpt2"], "--hooks", "all", "--steps", str(STEPS), "--json"]
    assert main([*argv, "--save-state", str(saved)]) == 0
    lines = json_lines(capsys.readouterr().out)
    assert [line["step"] for line in lines if line["event"] == "step"] == [1, 2]
    seen = {(h["module"], h["kind"]) for h in lines if h["event"] == "hook"}
    assert ("_orig_mod.transformer.h.0.attn.c_attn", "backward") in seen
    assert_bit_identical(saved, scripts["gpt2"])
