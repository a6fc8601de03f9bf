"""A learned sink token prepended to every sequence."""
import torch
from torch import nn


class SinkToken(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.sink = nn.Parameter(torch.zeros(1, 1, d_model))

    def forward(self, x):
        return torch.cat([self.sink.expand(x.shape[0], 1, -1), x], dim=1)
