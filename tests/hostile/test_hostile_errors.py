"""Hostile errors: an exception whose `__str__` raises and `sys.exit(obj)` whose `repr` raises,
at import and in forward, are located user errors (the user's file and line, exit 2) that say
`<unprintable ...>`; modscope's own traceback never shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modscope.cli import main
from modscope.core.errors import exception_text

HEADER = """\
import sys
import torch
from torch import nn


class Bad(Exception):
    def __str__(self):
        raise RuntimeError("__str__ fails")


class Code:
    def __repr__(self):
        raise RuntimeError("__repr__ fails")

    __str__ = __repr__


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x):
        {forward}
        return self.lin(x).sum()


model = M()
inputs = torch.ones(3, 2)
{top}
"""

RAISE_BAD = 'raise Bad("x")'
EXIT_CODE = "sys.exit(Code())"
FORWARD_LINE = 24
TOP_LINE = 30


def script(tmp_path: Path, *, forward: str = "pass", top: str = "") -> str:
    path = tmp_path / "hostile.py"
    path.write_text(HEADER.format(forward=forward, top=top))
    lines = path.read_text().splitlines()
    assert lines[FORWARD_LINE - 1].strip() == forward
    if top:
        assert lines[TOP_LINE - 1] == top
    return str(path)


@pytest.mark.parametrize(
    ("where", "statement", "words", "exc_type"),
    [
        ("top", RAISE_BAD, "<unprintable Bad>", "Bad"),
        ("top", EXIT_CODE, "sys.exit(<unprintable Code>) was called", "SystemExit"),
        ("forward", RAISE_BAD, "<unprintable Bad>", "Bad"),
        ("forward", EXIT_CODE, "sys.exit(<unprintable Code>) was called", "SystemExit"),
    ],
)
def test_an_unprintable_error_is_located_at_the_users_line_with_exit_2(
    tmp_path, capsys, where, statement, words, exc_type
):
    path = script(tmp_path, **{where: statement})
    assert main(["run", path, "--steps", "2", "--json"]) == 2
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    error = lines[-1]
    assert error["event"] == "error"
    assert error["file"] == path
    assert error["line"] == (TOP_LINE if where == "top" else FORWARD_LINE)
    assert error["type"] == exc_type
    assert words in error["message"]
    assert error["step"] == (None if where == "top" else 1)
    assert "Traceback" not in captured.err


def test_the_readable_error_names_the_line_and_the_unprintable_exception(tmp_path, capsys):
    path = script(tmp_path, forward=RAISE_BAD)
    assert main(["run", path, "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert f"Bad in {path}, line {FORWARD_LINE} (at step 1, forward)" in " ".join(err.split())
    assert "<unprintable Bad>" in err
    assert "__str__ fails" not in err


def test_exception_text_never_raises():
    class Weird(Exception):
        def __str__(self):
            return 42  # not a str: str(exc) raises TypeError

    assert exception_text(Weird()) == "<unprintable Weird>"
    assert exception_text(ValueError("plain")) == "plain"
    assert exception_text(ValueError()) == "ValueError"
