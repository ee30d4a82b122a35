"""The doctor: finds the `nn.Module` pitfalls of docs/design.md section 4, each with its fix.

Kinds (severity; where found: S static, W the iterations a session runs, C `check` only,
R `run` under torchrun):

- unregistered-module (error, S): a Module in a plain list/tuple/dict/set attribute
- unregistered-parameter (error, S): a Parameter kept the same way
- unregistered-tensor (warning, S): a plain tensor attribute, not in state_dict, not moved
- buffer-grad-history (error, S W): a buffer holding a tensor with grad_fn / requires_grad
- unused-parameter (warning, W): a trainable parameter without .grad after the first backward
  (only when other parameters got one)
- not-in-optimizer (error, S W): a trainable parameter in no param_group (again after each
  step: a forward may replace a parameter)
- frozen-in-optimizer (info, S W): a frozen parameter in a param_group
- stale-optimizer (error, S W): the optimizer holds tensors the model does not
- eval-nondeterministic (error, C): eval passes differ with the seed, and only with it
- legacy-backward-hook (warning, S): a non-full `register_backward_hook` hook
- nonfinite (error, S W): NaN/Inf in the loss (or output), parameters, gradients, buffers
- shared-parameter (info, S): one Parameter under several names (carries `paths`)
- reused-module (info, C): a module holding parameters run twice in one forward
- mode-mismatch (warning, S W): a submodule in the other train/eval mode than the root
- device-mismatch (warning, S): one module's tensors on different devices
- dtype-mismatch (warning, S): one module's floating parameters of different dtypes
- exploding-gradient (warning, W): global gradient norm above 1e6, or over 10 times the step
  before's while the loss did not fall
- vanishing-gradient (warning, W): global gradient norm below 1e-10 while abs(loss) > 1e-6
- rank-divergence (error, R: `run` under torchrun): a parameter or buffer whose bits differ
  across ranks after a step (buffers DDP broadcasts at the next forward left out)
- update-ratio (warning, W): a layer weight whose |Δw|/|w| stayed above 0.2 (the loss not
  falling) or below 1e-6 for 3 steps: its learning rate is mismatched to it
- training-in-eval (warning, W): a step trained the model in eval mode; the modules that compute
  differently in training are listed
- grad-accumulation (error, W): gradients never cleared, growing step over step
- torch-warning (warning, W): a warning PyTorch showed during an iteration, at the user's line
- dead-units (warning, C): a ReLU-like module whose every output is zero in each step checked
- saturated (warning, C): a sigmoid/tanh-like module with most outputs at its rails, each step

`static.static_findings` reads the module tree; `after_step.AfterStepRules` reads the iterations a
session runs anyway (`modscope run`, the app); `dynamic.run_checks` adds iterations and probes
of its own in a `sandbox.Sandbox` (a deep copy where memory allows and the copy does not run
the original's code, else the originals, restored); `modscope.core.doctor.ranks.RankCheck`
compares the ranks of a torchrun job. docs/doctor.md has the same table with each fix.
"""

from modscope.core.contract.findings import SEVERITIES, FindingKind
from modscope.core.doctor.after_step import AfterStepRules
from modscope.core.doctor.dynamic import CheckResult, run_checks
from modscope.core.doctor.static import static_findings

__all__ = [
    "SEVERITIES",
    "AfterStepRules",
    "CheckResult",
    "FindingKind",
    "run_checks",
    "static_findings",
]
