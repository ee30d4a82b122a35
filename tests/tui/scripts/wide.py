"""A layer with more values than fit on one page of the values view (40 x 40 = 1,600)."""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(40, 40), nn.Tanh(), nn.Linear(40, 1))
inputs = torch.ones(4, 40)


def loss_fn(out):
    return out.pow(2).mean()


optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
