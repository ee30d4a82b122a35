"""examples/ddp_buffers.py's own training loop, watched under torchrun: each rank records to
DIR/rank<N> and the ranks' comparison names the BatchNorm buffers that drift apart."""

import json
import runpy
import sys

import torch.distributed as dist

import modscope

ns = runpy.run_path("examples/ddp_buffers.py", run_name="ddp_buffers")
# `overwrite`: the test's `torchrun` runs this again after a gloo teardown abort, and the
# second run's recording replaces the first's.
with modscope.watch(ns["model"], ns["optimizer"], record=sys.argv[1], overwrite=True) as watch:
    ns["train"](2)
found = [
    (f.kind.value, f.path, f.step) for f in watch.findings if f.kind.value == "rank-divergence"
]
# One file a rank: two ranks printing at once may interleave their lines on the shared stdout.
result = {"rank": dist.get_rank(), "steps": watch.step_count, "found": found}
with open(f"{sys.argv[2]}-rank{dist.get_rank()}.json", "w") as f:
    json.dump(result, f)
dist.destroy_process_group()
