"""The example scripts run with plain `python` and print the article's reference numbers.

Each example's main block runs as `__main__` in a subprocess and the article's printed values
must appear in its output, in order; the central ones also run as `python examples/X.py`. Each is
also loaded the way modscope loads it (module `__modscope__`): nothing runs or prints, and its
contract names make one default iteration.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import ARTICLE_TABLE, MODEL_SCRIPTS, ROOT, example

ALL_EXAMPLES = sorted(path.stem for path in MODEL_SCRIPTS)
TIMEOUT_S = 120

# Buffer Code 1-3: z, powBuff and logBuff after each of the 10 train-mode calls.
BUFFER_TABLE = [
    (1.1632, 2.0000, 3.2000),
    (2.7099, 3.2000, 15.0272),
    (3.4999, 3.9200, 33.1108),
    (3.9672, 4.3520, 52.8371),
    (4.2616, 4.6112, 70.9218),
    (4.4529, 4.7667, 85.8761),
    (4.5793, 4.8600, 97.4431),
    (4.6633, 4.9160, 105.9885),
    (4.7194, 4.9496, 112.0966),
    (4.7567, 4.9698, 116.3565),
]


def table(pow_name: str, log_name: str) -> list[str]:
    lines = []
    for i, (pow_value, log_value) in enumerate(ARTICLE_TABLE):
        lines += [f"{i} {pow_name} {pow_value:.4f}", f"{i} {log_name} {log_value:.4f}"]
    return lines


def buffer_table(prefix: str, history: str) -> list[str]:
    return [
        f"{prefix}{i} z {z:.4f} powBuff {pow_buff:.4f} logBuff {log_buff:.4f}{history}"
        for i, (z, pow_buff, log_buff) in enumerate(BUFFER_TABLE)
    ]


HISTORY = " grad_fn=AddBackward0"

# The lines each example must print, in this order (other lines may come between them).
EXPECTED: dict[str, list[str]] = {
    "powlog": ["z 4.8283", *table("powModel.powParam", "logModel.logParam"), "z 9.9982"],
    "ddp_buffers": ["rank 0 1.running_mean[:2] -0.0880 -0.0226"],
    "nan_origin": ["step 1 loss 1.1847", "step 2 loss 0.8784", "step 3 loss nan"],
    "nan_backward": [
        "step 1 loss 0.9596",
        "step 2 loss 0.9513",
        "step 3 loss 0.9803",
        "step 4 loss nan",
    ],
    "ddp_clean": ["rank 0 1.running_mean[:2] -0.0880 -0.0226"],
    "ddp_pipeline": ["rank 0 loss 0.1264"],
    "shared": ["z 4.8283", *table("powModel.powParam", "logModel.logParam"), "z 9.9982"],
    "separate": [
        "z 4.8283",
        "0 powModel1.powParam 1.0517",
        "0 logModel1.logParam 1.2497",
        "0 powModel2.powParam 1.0517",
        "0 logModel2.logParam 1.2497",
        "9 powModel1.powParam 1.2401",
        "9 logModel1.logParam 1.9373",
        "9 powModel2.powParam 1.2401",
        "9 logModel2.logParam 1.9373",
        "z 9.7706",
    ],
    "containers": [
        "z 4.8283",
        "named_children []",
        "parameters []",
        "state_dict []",
        "optimizer optimizer got an empty parameter list",
    ],
    "containers_fixed": [
        "named_children ['modelList']",
        "z 4.8283",
        *table("modelList.0.powParam", "modelList.1.logParam"),
        "z 9.9982",
    ],
    "param_dict": [
        "parameters ['logModel.logParam']",
        "z 4.8283",
        "0 powParam 1.0000 logParam 1.4994",
        "9 powParam 1.0000 logParam 2.0691",
        "z 9.9903",
    ],
    "param_dict_fixed": [
        "parameters ['powModel.powParamDict.powParam', 'logModel.logParam']",
        "z 4.8283",
        *table("powModel.powParamDict.powParam", "logModel.logParam"),
        "z 9.9982",
    ],
    "plain_tensor": [
        *buffer_table("", HISTORY),
        "state ['powModel.powParam', 'logModel.logParam']",
    ],
    "buffers": [
        *buffer_table("train ", HISTORY),
        *[f"eval {i} z 4.7567 powBuff 4.9698 logBuff 116.3565{HISTORY}" for i in range(10)],
        "state {'powModel.powParam': '1.0000', 'powModel.powBuff': '4.9698', "
        "'logModel.logParam': '1.0000', 'logModel.logBuff': '116.3565'}",
    ],
    "buffers_fixed": [
        *buffer_table("train ", ""),
        *[f"eval {i} z 4.7567 powBuff 4.9698 logBuff 116.3565" for i in range(10)],
    ],
    "hooks": [
        "no hook",
        "  z 4.8283 x.grad 0.6000 q.grad 1.6094 powParam.grad 1.0000 logParam.grad 4.8283",
        "logModel forward-pre hook, input * 2 (Hook Code 1)",
        "  input (125.0000,)",
        "  z 5.5215 x.grad 0.6000 q.grad 1.6094 powParam.grad 1.0000 logParam.grad 5.5215",
        "logModel forward hook, output * 2 (Hook Code 2)",
        "  input (125.0000,) output 4.8283",
        "  z 9.6566 x.grad 1.2000 q.grad 3.2189 powParam.grad 2.0000 logParam.grad 9.6566",
        "powModel legacy backward hook (Hook Code 3)",
        "  grad_input (1.0000, 0.0080) grad_output (0.0080,)",
        "  z 4.8283 x.grad 0.6000 q.grad 1.6094 powParam.grad 1.0000 logParam.grad 4.8283",
        "powModel full backward hook",
        "  grad_input (0.6000, 1.6094) grad_output (0.0080,)",
    ],
    "hooks_script_registered": [
        "grad_input (1.0000, 0.0080) grad_output (0.0080,)",
        "z 4.8283 x.grad 0.6000 q.grad 1.6094",
    ],
    "dropout": ["eval outputs equal: False"],
    "dropout_fixed": ["eval outputs equal: True"],
    "health": ["running_mean moved: False", "loss over (8, 8)"],
    "health_fixed": ["running_mean moved: True", "loss over (8, 1)"],
    "layer_health": ["dead hidden units: 16 of 16", "gate outputs at the rails: 0.85"],
    "layer_health_fixed": ["dead hidden units: 0 of 16", "gate outputs at the rails: 0.00"],
}

# The realistic models print a loss per step; the article gives no numbers for them.
LOSS_STEPS = {
    "cnn": 8,
    "tiny_lm": 10,
    "dropout": 5,
    "dropout_fixed": 5,
    "health": 5,
    "health_fixed": 5,
    "layer_health": 5,
    "layer_health_fixed": 5,
}


# Under `python examples/X.py` as well, in their own interpreter: the article's central ones.
# (Each interpreter pays about 4 s of CPU to import torch and, through the optimizer,
# torch._dynamo; all sixteen that way would take about a minute on a two-core machine.)
STANDALONE = ("powlog", "buffers", "hooks")

# One interpreter for every example: torch is imported once. For each example it (1) loads the
# script as modscope does (module `__modscope__`, so the main block does not run), records what it
# printed and makes one default iteration of docs/design.md section 1 from its names; then (2)
# runs it as `__main__`, as `python examples/X.py` would, and records its stdout.
DRIVER = r"""
import contextlib, importlib.util, io, json, runpy, sys, traceback
from collections.abc import Iterable, Mapping
import torch

def default_iteration(names):
    model = names["model"]
    batch = names.get("inputs")
    if callable(batch) and not isinstance(batch, torch.nn.Module):
        batch = batch()
    if not isinstance(batch, (torch.Tensor, tuple, Mapping)) and isinstance(batch, Iterable):
        batch = next(iter(batch))
    optimizer = names.get("optimizer")
    if optimizer is not None:
        optimizer.zero_grad()
    if "compute_loss" in names:
        loss = names["compute_loss"](model, batch)
    else:
        if isinstance(batch, Mapping):
            output = model(**batch)
        else:
            output = model(*(batch if isinstance(batch, tuple) else (batch,)))
        if "loss_fn" not in names:
            loss = output if output.dim() == 0 else None
        else:
            loss = None if names["loss_fn"] is None else names["loss_fn"](output)
    if loss is not None:
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            if names.get("scheduler") is not None:
                names["scheduler"].step()

report = {}
for path in sys.argv[1:]:
    facts = report[path] = {"error": None}
    try:
        spec = importlib.util.spec_from_file_location("__modscope__", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["__modscope__"] = module
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            spec.loader.exec_module(module)
        names = vars(module)
        facts["printed_at_import"] = printed.getvalue()
        facts["is_module"] = isinstance(names.get("model"), torch.nn.Module)
        facts["names"] = sorted(n for n in ("model", "inputs", "loss_fn", "compute_loss",
                                            "optimizer", "scheduler", "train_step") if n in names)
        with contextlib.redirect_stdout(io.StringIO()):  # hooks may print
            default_iteration(names)
        del sys.modules["__modscope__"]
        stdout = io.StringIO()
        sys.argv[0] = path
        with contextlib.redirect_stdout(stdout):
            runpy.run_path(path, run_name="__main__")
        facts["stdout"] = stdout.getvalue()
    except BaseException:
        facts["error"] = traceback.format_exc()
print(json.dumps(report))
"""


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    # One thread per process: runs side by side with busy OpenMP threads competing for the same
    # cores are many times slower.
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
    )


def run_all_in_one_interpreter() -> dict[str, dict]:
    result = run_python("-c", DRIVER, *(example(f"{name}.py") for name in ALL_EXAMPLES))
    assert result.returncode == 0, result.stderr
    return {Path(path).stem: facts for path, facts in json.loads(result.stdout).items()}


class ExampleRuns:
    """Runs the driver and the standalone examples at most once each, side by side."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
        self._runs: dict[str, Future] = {}

    def _start(self, key: str, fn, *args) -> Future:
        if key not in self._runs:
            self._runs[key] = self._pool.submit(fn, *args)
        return self._runs[key]

    def start_driver(self) -> None:
        self._start("", run_all_in_one_interpreter)

    def start_all(self) -> None:
        self.start_driver()
        for name in STANDALONE:
            self._start(name, run_python, example(f"{name}.py"))

    def facts(self, name: str) -> dict:
        facts = self._start("", run_all_in_one_interpreter).result()[name]
        assert facts["error"] is None, facts["error"]
        return facts

    def standalone(self, name: str) -> subprocess.CompletedProcess[str]:
        return self._start(name, run_python, example(f"{name}.py")).result()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


@pytest.fixture(scope="module")
def runs():
    runs = ExampleRuns()
    # Start everything at once. Under pytest-xdist each worker that gets a test of this module
    # runs the one-interpreter driver (every test needs it), and the standalone runs are one test.
    if "PYTEST_XDIST_WORKER" in os.environ:
        runs.start_driver()
    else:
        runs.start_all()
    yield runs
    runs.close()


def assert_lines_in_order(stdout: str, expected: list[str]) -> None:
    lines = stdout.splitlines()
    position = 0
    for line in expected:
        try:
            position = lines.index(line, position) + 1
        except ValueError:
            pytest.fail(f"missing (or out of order): {line!r}\n--- stdout ---\n{stdout}")


def check_losses(name: str, stdout: str) -> None:
    losses = [float(line.split()[2]) for line in stdout.splitlines() if " loss " in line]
    assert len(losses) == LOSS_STEPS[name], stdout
    assert all(math.isfinite(loss) for loss in losses), stdout
    if name in ("cnn", "tiny_lm"):
        assert losses[-1] < losses[0], stdout


def test_every_example_has_expectations():
    assert set(ALL_EXAMPLES) == set(EXPECTED) | {"cnn", "tiny_lm"}


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_example_prints_its_reference_numbers(runs, name):
    stdout = runs.facts(name)["stdout"]
    assert_lines_in_order(stdout, EXPECTED.get(name, []))
    if name in LOSS_STEPS:
        check_losses(name, stdout)


def test_examples_run_with_python_print_the_same(runs):
    runs.start_all()
    for name in STANDALONE:
        result = runs.standalone(name)
        assert result.returncode == 0, result.stderr
        assert_lines_in_order(result.stdout, EXPECTED[name])
        assert result.stdout == runs.facts(name)["stdout"], name


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_example_follows_the_model_script_contract(runs, name):
    facts = runs.facts(name)
    assert facts["is_module"], f"{name}: `model` is not an nn.Module"
    assert facts["printed_at_import"] == "", f"{name} printed at import"
    assert "inputs" in facts["names"]
    if name == "containers":
        assert "optimizer" not in facts["names"]  # SGD would refuse its empty parameter list
    if name == "cnn":
        assert {"compute_loss", "scheduler"} <= set(facts["names"])
