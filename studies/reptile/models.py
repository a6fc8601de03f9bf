"""The classifiers Reptile meta-learns, and LoRA on them through `peft`.

- "small" (`SmallClassifier`): Linear -> LayerNorm -> GELU -> head, optionally
  with LoRA on the feature layer;
- "hf" (`HFClassifier`): a Hugging Face causal LM such as TinyLlama-1.1B, LoRA
  on its attention projections, a linear head on the mean-pooled last hidden
  state.

Only the trainable parameters are meta-learned; with LoRA that is the adapters
and the head. LoRA comes from `peft` (pip install -e '.[hf]'), injected in
place so parameter names stay the module's own (`features.lora_A.default.weight`,
`head.weight`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from studies.reptile.config import ReptileConfig, ReptileUnavailable
from studies.reptile.tasks import build_family, load_banking77

HF_EXTRA = "pip install -e '.[hf]'"
ADAPTER = "default"  # peft's adapter name; the parameters are <layer>.lora_A.default.weight


def add_lora(model: nn.Module, targets: Sequence[str], rank: int, alpha: float = 16.0,
             trainable: Sequence[str] = ()) -> list[str]:
    """LoRA (Hu et al. 2021) through peft on every nn.Linear whose name is or ends
    with one of `targets`: y = base(x) + (alpha / rank) * B A x, A initialised like
    a Linear weight and B at zero, so the model starts as it was. Every other
    parameter is frozen except those under `trainable` (e.g. the head). The
    adapters are kept in float32 when the base runs in bf16. Returns the adapted
    layers' names; ValueError when none matches."""
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)]
    if not names:
        raise ValueError(f"no nn.Linear layer is named like {', '.join(targets)}")
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise ReptileUnavailable(f"LoRA needs the `peft` package ({HF_EXTRA})") from exc
    # In place rather than get_peft_model's wrapper: the names Reptile reads
    # (head.*, the small model's batched forward) stay the module's own.
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=names),
                            model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        if "lora_" in name and p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()  # what get_peft_model's autocast_adapter_dtype does
        p.requires_grad_("lora_" in name or any(name == k or name.startswith(k + ".") for k in trainable))
    return names


class SmallClassifier(nn.Module):
    """Linear features, LayerNorm (no affine), GELU, linear head."""

    def __init__(self, in_dim: int, hidden: int, ways: int):
        super().__init__()
        self.features = nn.Linear(in_dim, hidden)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.head = nn.Linear(hidden, ways)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.gelu(self.norm(self.features(x))))

    def batched_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """`forward` for T parameter sets at once: every tensor in `params` (the
        trainable ones; frozen ones come from the module) has a leading task
        dimension, and x is [T, n, in_dim]. Batched matmuls instead of vmap: the
        same numbers, about twice as fast on a CPU."""
        f = self.features
        if hasattr(f, "base_layer"):  # LoRA (add_lora): the frozen base plus the adapters of each task
            base = f.base_layer
            w = params.get("features.base_layer.weight", base.weight)
            b = params.get("features.base_layer.bias", base.bias)
            a_, b_ = (params[f"features.lora_{m}.{ADAPTER}.weight"].transpose(1, 2) for m in "AB")
            h = x @ w.transpose(-1, -2) + b.unsqueeze(-2)
            h = h + f.scaling[ADAPTER] * (x @ a_) @ b_
        else:
            h = torch.baddbmm(params["features.bias"].unsqueeze(1), x, params["features.weight"].transpose(1, 2))
        h = F.gelu(F.layer_norm(h, (h.shape[-1],)))
        return torch.baddbmm(params["head.bias"].unsqueeze(1), h, params["head.weight"].transpose(1, 2))


class HFClassifier(nn.Module):
    """A Hugging Face language model as an N-way classifier: the mean of its last
    hidden states over the real tokens, then a linear head."""

    def __init__(self, backbone: nn.Module, hidden_size: int, ways: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, ways)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1)
        return self.head(pooled.float())


def load_hf(name: str, device: torch.device):
    """(backbone, tokenizer) of a Hugging Face model, from the local cache or the Hub."""
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ReptileUnavailable(f"model 'hf' needs the `transformers` package ({HF_EXTRA})") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        backbone = AutoModel.from_pretrained(name, dtype=dtype).to(device)
    except Exception as exc:
        raise ReptileUnavailable(f"could not load {name}: {exc}. Download it once with network access "
                                 f"(huggingface-cli download {name}) or name a local folder") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return backbone, tokenizer


def preflight(cfg: ReptileConfig) -> None:
    """Raise ReptileUnavailable now, before any trial starts, when the model or the
    data `cfg` names cannot be had here. The default (synthetic, small) needs nothing."""
    if (cfg.model == "hf" or cfg.lora_rank) and importlib.util.find_spec("peft") is None:
        raise ReptileUnavailable(f"LoRA needs the `peft` package ({HF_EXTRA})")
    if cfg.model == "hf":
        try:
            from transformers import AutoConfig
        except ImportError as exc:
            raise ReptileUnavailable(f"model 'hf' needs the `transformers` package ({HF_EXTRA})") from exc
        try:
            AutoConfig.from_pretrained(cfg.hf_model)
        except Exception as exc:
            raise ReptileUnavailable(f"could not find the model {cfg.hf_model} locally or on the Hub: {exc}") from exc
    if cfg.task_family == "banking77":
        load_banking77(cfg.banking77_path)


def resolve_device(cfg: ReptileConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and cfg.model == "hf"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cpu")


def build_model_and_family(cfg: ReptileConfig, seed: int, device: torch.device):
    """(model, family) for `cfg`; the model's initial weights depend on `seed` only."""
    if cfg.model == "hf":
        backbone, tokenizer = load_hf(cfg.hf_model, device)
        family = build_family(cfg, tokenizer)
        with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's RNG untouched
            torch.manual_seed(seed)
            model = HFClassifier(backbone, backbone.config.hidden_size, cfg.ways).to(device)
            add_lora(model, cfg.lora_targets, cfg.lora_rank or 8, cfg.lora_alpha, trainable=("head",))
        return model, family
    family = build_family(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallClassifier(family.input_dim, cfg.hidden, cfg.ways)
        if cfg.lora_rank:
            add_lora(model, ("features",), cfg.lora_rank, cfg.lora_alpha, trainable=("head",))
    return model.to(device), family
