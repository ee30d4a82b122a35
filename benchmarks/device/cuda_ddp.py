"""Two ranks of a torchrun job sharing one GPU (gloo), for the device check's per-rank
recordings: `torchrun --nproc-per-node 2 -m modscope run cuda_ddp.py --record DIR`."""

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

if not dist.is_initialized():
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
rank = dist.get_rank()
device = "cuda" if torch.cuda.is_available() else "cpu"

torch.manual_seed(0)
net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)).to(device)
model = DistributedDataParallel(net)
shard = torch.Generator().manual_seed(rank)


def inputs():
    return (torch.randn(16, 4, generator=shard) + rank).to(device)


def loss_fn(output):
    return output.square().mean()


optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
