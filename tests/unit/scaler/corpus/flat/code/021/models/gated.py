import torch
from torch import nn


class GatedResidual(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(d_model))

    def forward(self, x, branch):
        return x + torch.sigmoid(self.gate) * branch
