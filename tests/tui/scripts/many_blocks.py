"""300 identical blocks in a Sequential: the tree folds them and builds nodes lazily."""

import torch
from torch import nn

model = nn.Sequential(*[nn.Sequential(nn.Linear(2, 2), nn.ReLU()) for _ in range(300)])
inputs = torch.ones(1, 2)
