"""The `model_snapshot` fixture, through real pytest runs of a generated test module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import EXAMPLES

pytest_plugins = ["pytester"]

pytest.importorskip("syrupy")

# Imported here, outside the in-process runs: pytester restores sys.modules after each test,
# and torch imported inside a run, dropped and imported again crashes the interpreter.
import torch  # noqa: E402, F401

import modscope.testing.snapshot  # noqa: E402, F401

# pytest-textual-snapshot keeps one temporary folder per process, which a nested run removes;
# hypothesis's plugin imports hypothesis afresh in each run (seconds); pytest-asyncio warns
# about its settings in a folder without them.
QUIET = (
    *("-p", "no:cacheprovider", "-p", "no:textual-snapshot"),
    *("-p", "no:hypothesispytest", "-p", "no:asyncio", "-vv"),
)

# The user's model file; each test rewrites it to make one change.
MODEL = """
import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, width, last):
        super().__init__()
        self.proj = nn.Linear(width, {proj_out} if last else width)


class Block(nn.Module):
    def __init__(self, width, last):
        super().__init__()
        self.attn = Attention(width, last)
        if last:
            {cache}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 64)
        self.blocks = nn.ModuleList([Block(64, i == 3) for i in range(4)])
        self.head = nn.Linear(64, 10, bias=False)
        {tie}
"""

TEST = """
from mymodel import Net


def test_net_structure(model_snapshot):
    assert model_snapshot == Net()
"""


def _write_model(
    pytester: pytest.Pytester,
    *,
    proj_out: str = "width",
    cache: str = "pass",
    tie: str = "self.head.weight = self.embed.weight",
) -> None:
    source = MODEL.format(proj_out=proj_out, cache=cache, tie=tie)
    pytester.makepyfile(mymodel=textwrap.dedent(source))


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # Each run imports the model module afresh.
    sys.modules.pop("mymodel", None)
    return pytester.runpytest_inprocess(*QUIET, *args)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.syspathinsert()
    _write_model(pytester)
    pytester.makepyfile(test_model=TEST)
    first = _run(pytester, "--snapshot-update")
    first.assert_outcomes(passed=1)
    return pytester


def test_the_snapshot_is_readable_text_beside_the_test(project: pytest.Pytester) -> None:
    stored = project.path / "__snapshots__" / "test_model" / "test_net_structure.txt"
    text = stored.read_text()
    assert "module blocks.3.attn.proj: torch.nn.modules.linear.Linear" in text
    assert "parameter blocks.3.attn.proj.weight: [64, 64] float32" in text
    assert "tied head.weight: embed.weight" in text
    _run(project).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("change", "expected", "stored"),
    [
        (
            {"proj_out": "128"},
            "blocks.3.attn.proj.weight: [64, 64] float32 -> [128, 64] float32",
            "parameter blocks.3.attn.proj.weight: [128, 64] float32",
        ),
        (
            {"cache": "self.cache = [nn.Linear(2, 2)]"},
            "new unregistered module blocks.3.cache[0]: Linear in list",
            "unregistered module blocks.3.cache[0]: Linear in list",
        ),
        ({"tie": ""}, "head.weight no longer tied to embed.weight", "module head:"),
    ],
)
def test_a_change_fails_with_a_readable_diff_and_update_accepts_it(
    project: pytest.Pytester, change: dict[str, str], expected: str, stored: str
) -> None:
    _write_model(project, **change)
    failed = _run(project)
    failed.assert_outcomes(failed=1)
    output = failed.stdout.str()
    assert expected in output
    assert "`pytest --snapshot-update` accepts it" in output
    _run(project, "--snapshot-update").assert_outcomes(passed=1)
    text = (project.path / "__snapshots__" / "test_model" / "test_net_structure.txt").read_text()
    assert stored in text
    assert ("tied head.weight" in text) is bool(change.get("tie", "tied"))


def test_the_plugin_imports_neither_torch_nor_syrupy() -> None:
    code = (
        "import sys, modscope.testing.plugin; "
        "print([m for m in ('torch', 'syrupy', 'rich') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_without_syrupy_the_fixture_says_what_to_install(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys
        sys.modules["syrupy"] = None  # an environment without syrupy
        """
    )
    pytester.makepyfile(
        """
        def test_it(model_snapshot):
            pass
        """
    )
    result = pytester.runpytest_inprocess(*QUIET, "-p", "no:syrupy")
    result.assert_outcomes(errors=1)
    assert "pip install syrupy" in result.stdout.str()


def test_the_example_test_file_passes_as_a_user_would_run_it(pytester: pytest.Pytester) -> None:
    # examples/ is outside our testpaths (its files are not model scripts' tests): run it here,
    # with its committed snapshot, as a copy in a user's project.
    for name in ("test_model_health.py", "tiny_lm.py"):
        shutil.copy(EXAMPLES / name, pytester.path / name)
    shutil.copytree(EXAMPLES / "__snapshots__", pytester.path / "__snapshots__")
    pytester.syspathinsert()
    sys.modules.pop("tiny_lm", None)
    result = pytester.runpytest_inprocess(*QUIET)
    result.assert_outcomes(passed=3)
