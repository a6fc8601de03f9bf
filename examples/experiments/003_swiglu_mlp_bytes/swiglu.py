import torch.nn as nn
import torch.nn.functional as F


class SwiGLU(nn.Module):
    """Gated MLP: hidden = 8/3 * d so it matches a 4d GELU MLP in parameters."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False), nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))
