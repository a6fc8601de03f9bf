"""Model families a training job can name, and the numbers we report about them.

    build_model("gpt", vocab_size=..., seq_len=..., d_model=..., ...)
    build_model("rnn", vocab_size=..., seq_len=..., d_model=..., n_layers=...)
    build_model("custom", vocab_size=..., seq_len=..., path="models/net.py", class_name=None, kwargs={...})

Every model maps idx LongTensor[B, T] to float32 logits [B, T, vocab_size], with
no loss inside, and the built-in ones expose family, vocab_size, seq_len,
d_model and n_layers.
"""

from __future__ import annotations

import inspect
from numbers import Integral, Real
from typing import Any

from torch import nn

from train.models.custom import ModelLoadError, load_custom_model
from train.models.gpt import GPT
from train.models.recurrent import LSTMLanguageModel

__all__ = [
    "MODEL_FAMILIES", "GPT", "LSTMLanguageModel", "ModelLoadError",
    "build_model", "count_parameters", "flops_per_token", "load_custom_model",
]

MODEL_FAMILIES = ("gpt", "rnn", "custom")


def _require_positive_int(field: str, value: Any) -> None:
    # bool is an int subclass; True as a layer count is a config mistake.
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{field} must be a positive integer, got {value!r}")


def build_model(family: str, *, vocab_size: int, seq_len: int, d_model: int = 256, n_layers: int = 4,
                n_heads: int = 4, n_kv_heads: int | None = None, mlp_ratio: float = 4.0, dropout: float = 0.0,
                path: str | None = None, class_name: str | None = None,
                kwargs: dict | None = None) -> nn.Module:
    """Build a model of `family` (one of MODEL_FAMILIES).

    gpt uses every size argument; rnn ignores n_heads, n_kv_heads and mlp_ratio;
    custom uses path, class_name and kwargs and passes only vocab_size and seq_len
    on (its other sizes belong in kwargs). For gpt and rnn, kwargs holds extra
    constructor options (gpt: rope_base, mlp). Bad values raise ValueError naming the
    field; a custom file that cannot be loaded raises ModelLoadError (a ValueError).
    """
    if family not in MODEL_FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(MODEL_FAMILIES)}")
    _require_positive_int("vocab_size", vocab_size)
    _require_positive_int("seq_len", seq_len)
    kwargs = dict(kwargs or {})

    if family == "custom":
        if path is None:
            raise ValueError("path is required for model family 'custom' (the Python file defining the model)")
        return load_custom_model(path, vocab_size=vocab_size, seq_len=seq_len, class_name=class_name, kwargs=kwargs)

    # Silently ignoring these would train a different model from the one asked for.
    for field, value in (("path", path), ("class_name", class_name)):
        if value is not None:
            raise ValueError(f"{field} is only used by model family 'custom', not {family!r}")
    _require_positive_int("d_model", d_model)
    _require_positive_int("n_layers", n_layers)
    if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")

    if family == "gpt":
        _require_positive_int("n_heads", n_heads)
        if n_kv_heads is not None:
            _require_positive_int("n_kv_heads", n_kv_heads)
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if n_kv_heads is not None and n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be divisible by n_kv_heads ({n_kv_heads})")
        if (d_model // n_heads) % 2:
            raise ValueError(f"d_model / n_heads (the head size, {d_model // n_heads}) must be even for "
                             f"rotary position embeddings")
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, Real) or int(mlp_ratio * d_model) < 1:
            raise ValueError(f"mlp_ratio must be positive and give at least one MLP unit, got {mlp_ratio!r}")
        sizes = dict(vocab_size=vocab_size, seq_len=seq_len, d_model=d_model, n_layers=n_layers,
                     n_heads=n_heads, n_kv_heads=n_kv_heads, mlp_ratio=float(mlp_ratio), dropout=float(dropout))
        return GPT(**sizes, **_extra_options(GPT, family, sizes, kwargs))

    sizes = dict(vocab_size=vocab_size, seq_len=seq_len, d_model=d_model, n_layers=n_layers, dropout=float(dropout))
    return LSTMLanguageModel(**sizes, **_extra_options(LSTMLanguageModel, family, sizes, kwargs))


def _extra_options(cls: type, family: str, sizes: dict, kwargs: dict) -> dict:
    accepted = set(inspect.signature(cls).parameters) - set(sizes) - {"n_heads", "n_kv_heads", "mlp_ratio"}
    for key in kwargs:
        if key in sizes or key in ("n_heads", "n_kv_heads", "mlp_ratio"):
            raise ValueError(f"kwargs sets {key!r}; pass it as the {key} argument of build_model instead")
        if key not in accepted:
            raise ValueError(f"kwargs has unknown option {key!r} for model family {family!r}; "
                             f"accepted: {', '.join(sorted(accepted)) or 'none'}")
    return kwargs


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters. Module.parameters() yields a shared tensor
    once, so tied input/output embeddings count once."""
    return sum(p.numel() for p in model.parameters())


def _embedding_parameters(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel()
    return total


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token at context length seq_len.

    6 * N, with N the non-embedding parameters (those outside nn.Embedding; a
    tied output head shares the embedding tensor and so is not counted either),
    following Kaplan et al. 2020: each parameter costs 2 FLOPs forward and 4
    backward. For the "gpt" family we add the attention score and value matmuls,
    12 * n_layers * d_model * seq_len: QK^T and AV cost 2 * 2 * d_model * seq_len
    per layer forward, times 3 for forward + backward, the convention of
    Hoffmann et al. 2022 (Chinchilla) and Chowdhery et al. 2022 (PaLM, App. B).
    As there, the causal mask is not credited (no halving).

    A custom model can supply its own count with a flops_per_token(seq_len) method.
    """
    _require_positive_int("seq_len", seq_len)
    own = getattr(model, "flops_per_token", None)
    if callable(own):
        return float(own(seq_len))
    n_non_embedding = count_parameters(model) - _embedding_parameters(model)
    flops = 6.0 * n_non_embedding
    n_layers, d_model = getattr(model, "n_layers", None), getattr(model, "d_model", None)
    if getattr(model, "family", None) == "gpt" and n_layers is not None and d_model is not None:
        flops += 12.0 * n_layers * d_model * seq_len
    return flops
