"""The doctor's finding kinds, thresholds, and the words of each message and fix, by family.

Detection lives in `static.py`, `after_step.py`, `training_signs.py` and `dynamic.py`;
everything a person reads is written here, so that the wording stays consistent and each fix
names the exact call. Callers use the package (`rules.nonfinite(...)`); the families are
`registration` (what nn.Module registers), `optimizer`, `numerics` (NaN/Inf, gradient scale),
`module_state` (mode, placement, behaviour) and `distributed` (ranks that disagree), on the
shared `wording`.
"""

from modscope.core.doctor.rules.distributed import (
    RankValue,
    rank_divergence,
    rank_layout_divergence,
)
from modscope.core.doctor.rules.layer_health import (
    MIN_OUTPUTS,
    SATURATED_FRACTION,
    dead_units,
    saturated,
)
from modscope.core.doctor.rules.module_state import (
    device_mismatch,
    dtype_mismatch,
    eval_nondeterministic,
    mode_mismatch,
    reused_module,
)
from modscope.core.doctor.rules.numerics import (
    EXPLODING_GRAD_GROWTH,
    EXPLODING_GRAD_NORM,
    EXPLODING_GROWTH_FLOOR,
    VANISHING_GRAD_NORM,
    VANISHING_MIN_LOSS,
    exploding_gradient,
    nonfinite,
    vanishing_gradient,
)
from modscope.core.doctor.rules.optimizer import (
    frozen_in_optimizer,
    not_in_optimizer,
    stale_optimizer,
    unused_parameter,
)
from modscope.core.doctor.rules.registration import (
    buffer_grad_history,
    global_legacy_backward_hook,
    legacy_backward_hook,
    shared_module,
    shared_parameter,
    unregistered_container,
    unregistered_item,
    unregistered_stateless,
)
from modscope.core.doctor.rules.training import (
    GRAD_GROWTH_FACTOR,
    GRAD_GROWTH_SHARE,
    GRAD_GROWTH_STEPS,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
    UPDATE_RATIO_STEPS,
    WeightRatio,
    grad_accumulation,
    torch_warning,
    training_in_eval,
    update_ratio,
)
from modscope.core.doctor.rules.wording import (
    LISTED,
    accessor,
    dedup_key,
    finding,
    listing,
    where,
)

__all__ = [
    "EXPLODING_GRAD_GROWTH",
    "EXPLODING_GRAD_NORM",
    "EXPLODING_GROWTH_FLOOR",
    "GRAD_GROWTH_FACTOR",
    "GRAD_GROWTH_SHARE",
    "GRAD_GROWTH_STEPS",
    "LISTED",
    "MIN_OUTPUTS",
    "SATURATED_FRACTION",
    "UPDATE_RATIO_HIGH",
    "UPDATE_RATIO_LOW",
    "UPDATE_RATIO_STEPS",
    "VANISHING_GRAD_NORM",
    "VANISHING_MIN_LOSS",
    "RankValue",
    "WeightRatio",
    "accessor",
    "buffer_grad_history",
    "dead_units",
    "dedup_key",
    "device_mismatch",
    "dtype_mismatch",
    "eval_nondeterministic",
    "exploding_gradient",
    "finding",
    "frozen_in_optimizer",
    "global_legacy_backward_hook",
    "grad_accumulation",
    "legacy_backward_hook",
    "listing",
    "mode_mismatch",
    "nonfinite",
    "not_in_optimizer",
    "rank_divergence",
    "rank_layout_divergence",
    "reused_module",
    "saturated",
    "shared_module",
    "shared_parameter",
    "stale_optimizer",
    "torch_warning",
    "training_in_eval",
    "unregistered_container",
    "unregistered_item",
    "unregistered_stateless",
    "unused_parameter",
    "update_ratio",
    "vanishing_gradient",
    "where",
]
