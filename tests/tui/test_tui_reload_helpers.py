"""`r` reloads what the user edited: a helper module beside the script runs its new code."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from modscope.tui.log_pane import LogPane
from tests.tui.tui_helpers import press, settle

SIZE = (120, 40)

SCRIPT = """\
import torch
from {helper} import Net, words
print(words())
model = Net()
inputs = torch.ones(2)
"""

HELPER = """\
import torch
def words():
    return "helper says {version}"
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
"""


async def test_r_runs_the_edited_helper_module(make_app, tmp_path: Path):
    helper = f"helper_{uuid.uuid4().hex[:8]}"
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(helper=helper))
    (tmp_path / f"{helper}.py").write_text(HELPER.format(version="one"))
    app = make_app(script)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            log = app.query_one(LogPane)
            assert "helper says one" in log.plain_lines
            (tmp_path / f"{helper}.py").write_text(HELPER.format(version="two"))
            await press(app, pilot, "r")
            assert len(make_app.sessions) == 2
            lines = list(log.plain_lines)
            since = next(i for i, line in enumerate(lines) if line.startswith("reloading"))
            assert "helper says two" in lines[since:] and "helper says one" not in lines[since:]
            assert make_app.session.script.module.words() == "helper says two"
    finally:
        sys.modules.pop(helper, None)
