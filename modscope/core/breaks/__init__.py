"""Break conditions at work: the hooks and checks that stop an iteration where a problem starts.

An `ArmedBreaks` exists only while some condition is armed (`Session.arm`); until then nothing is
attached to the model. Armed, it keeps the observer rule (docs/design.md section 5): its hooks
return None, every check runs under `torch.no_grad()` on detached tensors and draws no random
numbers.

- `finite`: the NaN/Inf checks, their flags (decided at once on the host, read back together
  elsewhere) and the per-tensor cache of their answers;
- `nan_origin`: the `nan` condition's hooks, locating where the first non-finite value starts;
- `places`: the module a condition names, and the names and source locations a break reports;
- `armed`: `ArmedBreaks`, which arms the conditions, runs the other ones (`step`, `loss`,
  `grad-norm`, `output-absmax`) and trips each at most once per iteration.
"""

from modscope.core.breaks.armed import ArmedBreaks
from modscope.core.breaks.places import forward_location, loss_source

__all__ = ["ArmedBreaks", "forward_location", "loss_source"]
