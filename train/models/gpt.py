"""A modern GPT-style decoder-only Transformer (the "gpt" model family).

The shape follows the OpenAI Parameter Golf / modded-nanogpt baseline: pre-norm
blocks with parameter-free RMSNorm, rotary position embeddings on q and k,
grouped-query attention, a ReLU^2 MLP, zero-initialised output projections and
input/output embeddings tied together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    # Parameter-free, as in modded-nanogpt: a learnable gain right before a
    # linear layer is redundant with that layer's weights, and leaving it out
    # keeps the parameter count a clean formula (see tests).
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    """Rotary position embeddings (Su et al. 2021), half-split (GPT-NeoX) layout."""

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim (d_model / n_heads) must be even for rotary embeddings, got {head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)  # (T, head_dim/2)
        # Not persistent: the tables are a pure function of the config, so they
        # need not bloat or constrain checkpoints.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate x of shape (B, T, H, head_dim) by its positions 0..T-1."""
        t = x.size(1)
        # Cast the tables to x's dtype: under autocast x is bfloat16, and a
        # float32 table would silently promote q and k to float32 and leave them
        # in a different dtype from v, which scaled_dot_product_attention rejects.
        cos = self.cos[:t, None, :].to(x.dtype)
        sin = self.sin[:t, None, :].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, max_seq_len: int, dropout: float,
                 rope_base: float):
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        # Keys and values have only n_kv_heads heads (grouped-query attention,
        # Ainslie et al. 2023): fewer parameters and a smaller KV cache.
        self.kv = nn.Linear(d_model, 2 * n_kv_heads * self.head_dim, bias=False)
        self.proj = nn.Linear(n_heads * self.head_dim, d_model, bias=False)
        self.rotary = Rotary(self.head_dim, max_seq_len, rope_base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.n_heads, self.head_dim)
        k, v = self.kv(x).view(b, t, 2, self.n_kv_heads, self.head_dim).unbind(dim=2)
        q, k = self.rotary(q), self.rotary(k)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, H, T, head_dim)
        if self.n_kv_heads != self.n_heads:
            # Query head h reads kv head h // group, the same grouping as
            # enable_gqa=True. We expand explicitly because every SDPA backend
            # (flash, memory-efficient, math, CPU) accepts it; the copy is small.
            group = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        # Belt and braces for autocast: keep q, k, v in one dtype.
        q, k = q.to(v.dtype), k.to(v.dtype)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


MLP_KINDS = ("relu2", "gelu", "swiglu")


class MLP(nn.Module):
    """The feed-forward block. `relu2` (the default), ReLU^2: modded-nanogpt and
    the Parameter Golf baseline found it trains at least as well at this scale
    (So et al. 2021, "Primer") and it is cheaper than GELU. `gelu`: the classic
    GPT MLP. `swiglu` (Shazeer 2020): a gated MLP whose hidden width is 2/3 of
    the others', so that at one mlp_ratio the three have the same parameters
    (to rounding) and an MVE that compares them is scaled as it was measured."""

    def __init__(self, d_model: int, hidden: int, kind: str = "relu2"):
        super().__init__()
        if kind not in MLP_KINDS:
            raise ValueError(f"mlp must be one of {', '.join(MLP_KINDS)}, got {kind!r}")
        self.kind = kind
        if kind == "swiglu":
            hidden = max(1, round(hidden * 2 / 3))
            self.fc = nn.Linear(d_model, 2 * hidden, bias=False)  # gate and up, one matrix
        else:
            self.fc = nn.Linear(d_model, hidden, bias=False)
        self.proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            return self.proj(F.silu(gate) * up)
        return self.proj(F.gelu(h) if self.kind == "gelu" else F.relu(h).square())


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, hidden: int, max_seq_len: int,
                 dropout: float, rope_base: float, mlp: str = "relu2"):
        super().__init__()
        self.attn = CausalSelfAttention(d_model, n_heads, n_kv_heads, max_seq_len, dropout, rope_base)
        self.mlp = MLP(d_model, hidden, mlp)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(rms_norm(x)))
        return x + self.drop(self.mlp(rms_norm(x)))


class GPT(nn.Module):
    """Decoder-only Transformer: forward(idx[B, T]) -> logits[B, T, vocab_size] (float32)."""

    family = "gpt"

    def __init__(self, *, vocab_size: int, seq_len: int, d_model: int = 256, n_layers: int = 4,
                 n_heads: int = 4, n_kv_heads: int | None = None, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, rope_base: float = 10000.0, mlp: str = "relu2"):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        # These invariants would otherwise surface as an obscure reshape error.
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be divisible by n_kv_heads ({n_kv_heads})")
        hidden = int(mlp_ratio * d_model)
        if hidden < 1:
            raise ValueError(f"mlp_ratio ({mlp_ratio}) * d_model ({d_model}) gives an MLP with no hidden units")
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.mlp_hidden = hidden

        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, n_kv_heads, hidden, seq_len, dropout, rope_base, mlp) for _ in range(n_layers)
        )
        self.drop = nn.Dropout(dropout)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight  # tied: one tensor, counted once
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.embed.weight, std=0.02)
        for block in self.blocks:
            for layer in (block.attn.q, block.attn.kv, block.mlp.fc):
                nn.init.normal_(layer.weight, std=layer.in_features ** -0.5)
            # Zero output projections (modded-nanogpt, Parameter Golf): every
            # block starts as the identity on the residual stream, which makes
            # early training stable at any depth. Gradients still reach them.
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.mlp.proj.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (batch, time), got {tuple(idx.shape)}")
        if idx.size(1) > self.seq_len:
            raise ValueError(f"sequence length {idx.size(1)} exceeds the model's seq_len {self.seq_len}")
        x = self.drop(self.embed(idx))
        for block in self.blocks:
            x = block(x)
        # float32 logits: the cross-entropy over a large vocabulary is where
        # bfloat16 rounding hurts most, so the caller gets full precision.
        return self.lm_head(rms_norm(x)).float()
