"""A reload runs what the user edited: the modules that the script imported from its own files
are imported afresh, while the standard library, installed packages and modscope stay."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from modscope.core.script.loader import load_script
from tests import models as M

SCRIPT = """\
import torch
from {helper} import VALUE, scale
from {package}.inner import WORDS
model = torch.nn.Linear(2, 1)
inputs = torch.ones(2)
"""


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """A helper module's and a helper package's names, unique to the test; gone after it."""
    suffix = uuid.uuid4().hex[:8]
    helper, package = f"helper_{suffix}", f"package_{suffix}"
    yield helper, package
    for name in list(sys.modules):
        if name.split(".")[0] in (helper, package):
            del sys.modules[name]


def write_helpers(folder: Path, helper: str, package: str, value: int, words: str) -> None:
    source = f"VALUE = {value}\ndef scale(x):\n    return x * {value}\n"
    (folder / f"{helper}.py").write_text(source)
    (folder / package).mkdir(exist_ok=True)
    (folder / package / "__init__.py").write_text("")
    (folder / package / "inner.py").write_text(f"WORDS = {words!r}\n")


def test_a_reload_imports_the_scripts_own_modules_afresh(tmp_path, names):
    helper, package = names
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(helper=helper, package=package))
    # The edit keeps every file's size, within the same second: what an mtime check misses.
    write_helpers(tmp_path, helper, package, 1, "old")
    first = load_script(str(script))
    assert (first.module.VALUE, first.module.WORDS) == (1, "old")

    write_helpers(tmp_path, helper, package, 2, "new")
    second = load_script(str(script))
    assert (second.module.VALUE, second.module.WORDS) == (2, "new")
    assert second.module.scale(torch.ones(1)).item() == 2.0
    assert first.module.VALUE == 1  # the old session's objects are left as they were


def test_a_reload_keeps_modules_the_script_did_not_import_first(tmp_path, names):
    helper, package = names
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(helper=helper, package=package) + "from tests import models\n")
    write_helpers(tmp_path, helper, package, 1, "old")
    load_script(str(script))
    torch_module, models_module = sys.modules["torch"], sys.modules["tests.models"]
    load_script(str(script))
    # torch is an installed package; tests.models was imported before the script was loaded.
    assert sys.modules["torch"] is torch_module
    assert sys.modules["tests.models"] is models_module is M
