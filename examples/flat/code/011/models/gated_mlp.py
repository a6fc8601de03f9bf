"""The MVE's MLP: a GLU whose gate is a sigmoid of a second projection."""

import torch
from torch import nn


class GatedMLP(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.up(x) * torch.sigmoid(self.gate(x)))
