"""The app imports no torch (app.py included): it submits commands and renders updates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import modscope.tui

TUI = Path(modscope.tui.__file__).parent


def test_the_app_and_every_widget_import_no_torch():
    names = sorted(p.stem for p in TUI.glob("*.py") if p.stem != "__init__")
    assert {"app", "module_tree", "detail_pane", "labels", "model_view"} <= set(names)
    code = (
        "import sys\n"
        + "".join(f"import modscope.tui.{n}\n" for n in names)
        + "import modscope.control.commands, modscope.control.updates, modscope.control.thread\n"
        + "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        + "print(len(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0", out.stderr


def test_the_engine_still_imports_no_textual():
    code = (
        "import sys\nimport modscope.core.session, modscope.core.contract.steps\n"
        "print(any(m.startswith('textual') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
