"""Two pipeline stages on two ranks: each rank builds and trains a different model.

Rank 0 holds the first stage (two Linear layers: 4 parameters), rank 1 the second (a Linear, a
LayerNorm and a Linear: 6 parameters). The script runs no collective of its own (a real pipeline
would send the activations between the stages; here each stage trains on its own batches). The
ranks' models cannot be compared tensor by tensor, so modscope says once that they differ and
compares checksums only among ranks that hold the same structure (here: none):

    torchrun --nproc-per-node 2 -m modscope run examples/ddp_pipeline.py --steps 2

Run alone (`python examples/ddp_pipeline.py`, or `modscope run` without torchrun), it is rank 0
of a one-process gloo group and holds the first stage.
"""

import os

import torch
import torch.distributed as dist
from torch import nn

if not dist.is_initialized():
    if "RANK" in os.environ:  # under torchrun: its environment says where to meet
        dist.init_process_group("gloo")
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
rank = dist.get_rank()

torch.manual_seed(rank)
if rank == 0:
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16))
    width = 4
else:
    model = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 1))
    width = 16

batches = torch.Generator().manual_seed(rank)


def inputs():
    return torch.randn(8, width, generator=batches)


def loss_fn(output):
    return output.square().mean()


optimizer = torch.optim.SGD(model.parameters(), lr=0.1)


if __name__ == "__main__":
    for _ in range(2):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs()))
        loss.backward()
        optimizer.step()
    print(f"rank {rank} loss {loss.item():.4f}")
    dist.destroy_process_group()  # before exit: gloo's threads are not left to the interpreter
