"""Pilot test: the app on a `torch.compile`d model steps it and shows the hooks inside the
compiled call firing."""

from __future__ import annotations

import textwrap

from modscope.tui.hook_events_pane import HookEventsPane
from tests.tui.tui_helpers import press, status

SIZE = (100, 40)

COMPILED = """
import torch
from torch import nn

torch.manual_seed(0)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.proj = nn.Linear(8, 1)

    def forward(self, x):
        return self.proj(torch.relu(self.fc(x))).pow(2).mean()


model = torch.compile(MLP(), backend="aot_eager")
inputs = torch.randn(3, 4)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""


async def test_s_steps_a_compiled_model_with_hooks_inside_it(make_app, tmp_path):
    script = tmp_path / "compiled.py"
    script.write_text(textwrap.dedent(COMPILED))
    app = make_app(script, hooks=["*:forward", "*:backward"])
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", "s")
        assert "step 2" in status(app)
        fired = {(h.path, h.kind.value): h.fired for h in make_app.session.hooks.attached.values()}
        # The Linear inside the compiled call: its hooks run, once a step each.
        assert fired[("_orig_mod.fc", "forward")] == 2
        assert fired[("_orig_mod.fc", "backward")] == 2
        shown = app.query_one(HookEventsPane).entries
        assert any(getattr(e, "module", None) == "_orig_mod.fc" for e in shown)
