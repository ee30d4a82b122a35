"""The app's widgets and screens import no torch: only app.py and worker.py touch the Session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import modscope.tui

TUI = Path(modscope.tui.__file__).parent
BRIDGES = {"app", "worker", "launch"}


def test_widgets_and_screens_do_not_import_torch():
    names = sorted(p.stem for p in TUI.glob("*.py") if p.stem not in BRIDGES | {"__init__"})
    assert {"module_tree", "detail_pane", "diff_screen", "labels", "model_view"} <= set(names)
    code = (
        "import sys\n"
        + "".join(f"import modscope.tui.{n}\n" for n in names)
        + "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        + "print(len(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0", out.stderr


def test_the_engine_still_imports_no_textual():
    code = (
        "import sys\nimport modscope.core.session, modscope.core.types\n"
        "print(any(m.startswith('textual') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
