"""examples/lightning_nan.py and examples/hf_trainer_nan.py: run with `python` they print the
losses before the break and the break at its origin; as model scripts, `modscope run --break nan`
stops at the same module, phase and step."""

from __future__ import annotations

import runpy

import pytest

from modscope.cli import main
from tests.helpers import example, strict_lines

# lightning 2.6.6 warns from its own pytree helper under torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")

# name: (the library it needs, the module at fault, its class, the losses of steps 1 and 2)
EXAMPLES = {
    "lightning_nan": ("lightning", "blocks.1.gate", "LogGate", ("1.1847", "0.8784")),
    "hf_trainer_nan": ("transformers", "transformer.h.1.mlp.act", "LogGELU", ("4.3123", "4.3395")),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_example_breaks_at_its_origin_under_its_trainer(name, tmp_path, monkeypatch, capsys):
    library, module, class_name, losses = EXAMPLES[name]
    pytest.importorskip(library)
    monkeypatch.chdir(tmp_path)  # whatever the trainer writes stays out of the checkout
    # As `python examples/X.py` runs it, in this interpreter (the trainers are imported once).
    runpy.run_path(example(f"{name}.py"), run_name="__main__")
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(("step ", "break "))]
    assert lines[:2] == [f"step 1 loss {losses[0]}", f"step 2 loss {losses[1]}"]
    assert lines[2].startswith(
        f"break nan at step 3, forward phase: {module} ({class_name}) at {example(name + '.py')}:"
    )
    assert "NaN!" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_example_is_a_model_script_that_breaks_at_the_same_place(name, capsys):
    library, module, class_name, _ = EXAMPLES[name]
    pytest.importorskip(library)
    assert main(["run", example(f"{name}.py"), "--steps", "5", "--break", "nan", "--json"]) == 1
    events = strict_lines(capsys.readouterr().out)
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    [hit] = [e for e in events if e["event"] == "break"]
    assert (hit["step"], hit["phase"], hit["module"], hit["class"]) == (
        3,
        "forward",
        module,
        class_name,
    )
