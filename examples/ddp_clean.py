"""`examples/ddp_buffers.py` done right: DDP broadcasts the BatchNorm buffers, the ranks agree.

The same small net with BatchNorm and the same per-rank data shards, wrapped in
DistributedDataParallel with its default `broadcast_buffers=True`: at the start of every forward
DDP copies rank 0's buffers to every rank, so the running statistics that a forward reads are
the same everywhere (between a step and the next forward they differ by design: each rank's
forward updated them from its own batch). The gradients are averaged, so the parameters agree.
In modscope, under torchrun, no `rank-divergence`:

    torchrun --nproc-per-node 2 -m modscope run examples/ddp_clean.py --steps 2

Run alone (`python examples/ddp_clean.py`, or `modscope run` without torchrun), it is one rank
of a one-process gloo group. Its main block trains like modscope's default iteration,
`DDP_EXAMPLE_STEPS` steps (2), and rank 0 saves `model.state_dict()` (the wrapper's: keys
`module.0.weight`, ...) to `DDP_EXAMPLE_STATE` when set; `modscope run examples/ddp_clean.py
--steps 2 --save-state PATH` under torchrun writes the same keys and bits:

    DDP_EXAMPLE_STATE=plain.pt torchrun --nproc-per-node 2 examples/ddp_clean.py
"""

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

if not dist.is_initialized():
    if "RANK" in os.environ:  # under torchrun: its environment says where to meet
        dist.init_process_group("gloo")
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
rank = dist.get_rank()

torch.manual_seed(0)  # the same initial weights on every rank (DDP broadcasts them too)
net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
model = DistributedDataParallel(net)  # broadcast_buffers (forward_sync_buffers) on: the default

shard = torch.Generator().manual_seed(rank)  # each rank its own batches


def inputs():
    return torch.randn(16, 4, generator=shard) + rank


def loss_fn(output):
    return output.square().mean()


optimizer = torch.optim.SGD(model.parameters(), lr=0.1)


def train(steps):
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs()))
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    train(int(os.environ.get("DDP_EXAMPLE_STEPS", "2")))
    state = net.state_dict()
    if os.environ.get("DDP_EXAMPLE_STATE") and rank == 0:
        torch.save(model.state_dict(), os.environ["DDP_EXAMPLE_STATE"])
    means = state["1.running_mean"]
    print(f"rank {rank} 1.running_mean[:2] {means[0].item():.4f} {means[1].item():.4f}")
    dist.destroy_process_group()  # before exit: gloo's threads are not left to the interpreter
