"""The trainers are optional: `import modscope` and `import modscope.integrations` import neither
Lightning nor transformers, and the Hugging Face callback does not drag Lightning in. (Lightning
imports transformers where it is installed, so the Lightning callback is not checked the other
way.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

TRAINERS = ("lightning", "pytorch_lightning", "transformers", "accelerate")

PROBE = r"""
import importlib, json, sys
seen = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    seen[name] = sorted(sys.modules)
print(json.dumps(seen))
"""


def imported_after(*names: str) -> dict[str, list[str]]:
    """Which trainer packages are in `sys.modules` after importing each of `names` in turn, in
    a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *names],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    return {name: [m for m in TRAINERS if m in modules] for name, modules in seen.items()}


def test_modscope_and_its_integrations_package_import_no_trainer():
    seen = imported_after(
        "modscope",
        "modscope.integrations",
        "modscope.integrations.options",
        "modscope.watching.handle",
    )
    assert seen == {name: [] for name in seen}


def test_the_transformers_callback_imports_transformers_and_not_lightning():
    pytest.importorskip("transformers")
    seen = imported_after("modscope.integrations", "modscope.integrations.transformers")
    assert seen["modscope.integrations"] == []
    assert "transformers" in seen["modscope.integrations.transformers"]
    assert "lightning" not in seen["modscope.integrations.transformers"]
