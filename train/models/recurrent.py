"""A recurrent baseline (the "rnn" model family): a multi-layer LSTM language model.

An LSTM is the reference point a new architecture has to beat at equal parameters
or FLOPs, and torch.nn.LSTM runs on cuDNN on GPU and on a fused kernel on CPU, so
it is fast enough for laptop-scale runs without custom code.
"""

from __future__ import annotations

import torch
from torch import nn


class LSTMLanguageModel(nn.Module):
    """Embedding -> n_layers LSTM (hidden size d_model) -> RMSNorm -> tied output head.

    forward(idx[B, T]) -> logits[B, T, vocab_size] (float32). The hidden size equals
    d_model, so the output head can always share the embedding matrix.
    seq_len is recorded for the training code; the LSTM itself accepts any T.
    """

    family = "rnn"

    def __init__(self, *, vocab_size: int, seq_len: int, d_model: int = 256, n_layers: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.d_model = d_model
        self.n_layers = n_layers

        self.embed = nn.Embedding(vocab_size, d_model)
        self.drop = nn.Dropout(dropout)
        # nn.LSTM applies its dropout between layers only, and warns if asked to
        # with a single layer, hence the condition.
        self.lstm = nn.LSTM(d_model, d_model, num_layers=n_layers, batch_first=True,
                            dropout=dropout if n_layers > 1 else 0.0)
        self.norm = nn.RMSNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight  # tied: one tensor, counted once
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.embed.weight, std=0.02)
        # Forget-gate bias 1 (Jozefowicz et al. 2015): the cell starts by keeping
        # its memory, which helps gradients flow through long sequences.
        # PyTorch orders the gates (input, forget, cell, output).
        h = self.d_model
        for name, param in self.lstm.named_parameters():
            if name.startswith("bias_"):
                with torch.no_grad():
                    param.zero_()
                    if name.startswith("bias_ih"):
                        param[h:2 * h].fill_(1.0)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (batch, time), got {tuple(idx.shape)}")
        x, _ = self.lstm(self.drop(self.embed(idx)))
        # Normalise in float32: under autocast the LSTM output is bfloat16 and
        # the norm's weight float32, a mix that falls off the fused kernel.
        x = self.drop(self.norm(x.float()))
        # float32 logits, for the same reason as in the GPT: the loss over the
        # vocabulary is the most precision-sensitive step under autocast.
        return self.lm_head(x).float()
