"""Parameter-Golf style template: a small byte-level GPT trained on CPU.

Self-contained (torch, numpy, stdlib only). Hyperparameters are module-level
constants read from the environment. The score is the val_bpb printed on the
``final_int8_zlib_roundtrip_exact`` line: the model is quantised to int8 per row,
compressed with zlib, decompressed, dequantised and evaluated again. The artifact
(this file's bytes + the compressed model bytes) must stay under 16,000,000 bytes.
"""

import io
import math
import os
import sysconfig
import time
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------- hyperparameters
SEED = int(os.environ.get("SEED", 1337))
ITERATIONS = int(os.environ.get("ITERATIONS", 600))
MAX_WALLCLOCK_SECONDS = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 60))
LEARNING_RATE = float(os.environ.get("LEARNING_RATE", 3e-3))
WARMUP_STEPS = int(os.environ.get("WARMUP_STEPS", 20))
MODEL_DIM = int(os.environ.get("MODEL_DIM", 128))
NUM_LAYERS = int(os.environ.get("NUM_LAYERS", 3))
NUM_HEADS = int(os.environ.get("NUM_HEADS", 4))
MLP_MULT = int(os.environ.get("MLP_MULT", 4))
SEQ_LEN = int(os.environ.get("SEQ_LEN", 128))
BATCH_SIZE = int(os.environ.get("BATCH_SIZE", 16))
VAL_EVERY = int(os.environ.get("VAL_EVERY", 200))
TRAIN_LOG_EVERY = int(os.environ.get("TRAIN_LOG_EVERY", 25))
VAL_BYTES = int(os.environ.get("VAL_BYTES", 65536))
DATA_MAX_BYTES = int(os.environ.get("DATA_MAX_BYTES", 4_000_000))
NUM_THREADS = int(os.environ.get("NUM_THREADS", 2))
ARTIFACT_PATH = os.environ.get("ARTIFACT_PATH", "final_model.int8.ptz")

# plain constants (edit directly)
VOCAB_SIZE = 256
WEIGHT_DECAY = 0.0
GRAD_CLIP_NORM = 1.0
BETAS = (0.9, 0.95)


def log0(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- data
def load_bytes():
    """Python stdlib source of this interpreter, sorted by path; every 10th file is val."""
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        paths.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".py"))
    paths.sort()
    train, val, total = [], [], 0
    for i, p in enumerate(paths):
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            continue
        (val if i % 10 == 0 else train).append(data)
        total += len(data)
        if total >= DATA_MAX_BYTES:
            break
    train_arr = np.frombuffer(b"".join(train), dtype=np.uint8)
    val_arr = np.frombuffer(b"".join(val), dtype=np.uint8)[: max(VAL_BYTES, SEQ_LEN + 1)]
    return torch.from_numpy(train_arr.astype(np.int64)), torch.from_numpy(val_arr.astype(np.int64))


def get_batch(data, rng):
    ix = rng.integers(0, len(data) - SEQ_LEN - 1, size=BATCH_SIZE)
    x = torch.stack([data[i : i + SEQ_LEN] for i in ix])
    y = torch.stack([data[i + 1 : i + 1 + SEQ_LEN] for i in ix])
    return x, y


# ---------------------------------------------------------------- model
class Block(nn.Module):
    def __init__(self, dim, heads, mlp_mult):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, mlp_mult * dim, bias=False)
        self.out = nn.Linear(mlp_mult * dim, dim, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB_SIZE, MODEL_DIM)
        self.pos = nn.Embedding(SEQ_LEN, MODEL_DIM)
        self.blocks = nn.ModuleList(Block(MODEL_DIM, NUM_HEADS, MLP_MULT) for _ in range(NUM_LAYERS))
        self.ln_f = nn.LayerNorm(MODEL_DIM)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        logits = F.linear(self.ln_f(x), self.tok.weight)  # tied embeddings
        return F.cross_entropy(logits.view(-1, VOCAB_SIZE), targets.reshape(-1))


@torch.no_grad()
def eval_val(model, val):
    """Mean loss (nats/byte) over non-overlapping SEQ_LEN windows; bpb = loss / ln 2."""
    model.eval()
    n = (len(val) - 1) // SEQ_LEN
    x = val[: n * SEQ_LEN].view(n, SEQ_LEN)
    y = val[1 : n * SEQ_LEN + 1].view(n, SEQ_LEN)
    total = 0.0
    for i in range(0, n, 64):
        total += model(x[i : i + 64], y[i : i + 64]).item() * x[i : i + 64].shape[0]
    model.train()
    loss = total / n
    return loss, loss / math.log(2)


# ---------------------------------------------------------------- int8 quantisation
def quantize_state_dict_int8(sd):
    out = {}
    for name, t in sd.items():
        t = t.detach().float().cpu()
        if t.ndim == 2:
            scale = (t.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
            q = torch.clamp(torch.round(t / scale), -127, 127).to(torch.int8)
            out[name] = {"q": q, "scale": scale.to(torch.float16)}
        else:
            out[name] = {"w": t.to(torch.float16)}
    return out


def dequantize_state_dict_int8(obj):
    sd = {}
    for name, d in obj.items():
        if "q" in d:
            sd[name] = d["q"].float() * d["scale"].float()
        else:
            sd[name] = d["w"].float()
    return sd


# ---------------------------------------------------------------- main
def main():
    torch.set_num_threads(NUM_THREADS)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    with open(__file__, "rb") as f:
        code_bytes = len(f.read())

    train, val = load_bytes()
    log0(f"train_bytes:{len(train)} val_bytes:{len(val)} seed:{SEED}")
    model = GPT()
    log0(f"model_params:{sum(p.numel() for p in model.parameters())}")
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=BETAS, weight_decay=WEIGHT_DECAY)

    def lr_at(step):
        if step < WARMUP_STEPS:
            return LEARNING_RATE * (step + 1) / WARMUP_STEPS
        frac = (step - WARMUP_STEPS) / max(1, ITERATIONS - WARMUP_STEPS)
        return LEARNING_RATE * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))

    train_ms = 0.0
    step = 0
    stop_after_step = None
    while True:
        last_step = step == ITERATIONS or (stop_after_step is not None and step >= stop_after_step)
        if last_step or (VAL_EVERY > 0 and step % VAL_EVERY == 0):
            vl, vb = eval_val(model, val)
            log0(f"step:{step}/{ITERATIONS} val_loss:{vl:.4f} val_bpb:{vb:.4f} "
                 f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms")
        if last_step:
            if stop_after_step is not None and step < ITERATIONS:
                log0(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{ITERATIONS}")
            break
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = get_batch(train, rng)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if GRAD_CLIP_NORM > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
        opt.step()
        train_ms += 1000.0 * (time.perf_counter() - t0)
        step += 1
        if TRAIN_LOG_EVERY > 0 and (step <= 10 or step % TRAIN_LOG_EVERY == 0):
            log0(f"step:{step}/{ITERATIONS} train_loss:{loss.item():.4f} "
                 f"train_time:{train_ms:.0f}ms step_avg:{train_ms / step:.2f}ms")
        if stop_after_step is None and train_ms >= 1000.0 * MAX_WALLCLOCK_SECONDS:
            stop_after_step = step

    log0("peak memory allocated: 0 MiB reserved: 0 MiB")  # CPU run: no CUDA allocator

    raw = io.BytesIO()
    torch.save(model.state_dict(), raw)
    log0(f"Serialized model: {len(raw.getvalue())} bytes")
    log0(f"Code size: {code_bytes} bytes")
    log0(f"Total submission size: {len(raw.getvalue()) + code_bytes} bytes")

    quant = quantize_state_dict_int8(model.state_dict())
    qbuf = io.BytesIO()
    torch.save(quant, qbuf)
    payload = qbuf.getvalue()
    blob = zlib.compress(payload, level=9)
    with open(ARTIFACT_PATH, "wb") as f:
        f.write(blob)
    model_bytes = os.path.getsize(ARTIFACT_PATH)
    log0(f"Serialized model int8+zlib: {model_bytes} bytes (payload:{len(payload)} "
         f"raw_torch:{len(raw.getvalue())} payload_ratio:{len(raw.getvalue()) / max(len(payload), 1):.2f}x)")
    log0(f"Total submission size int8+zlib: {model_bytes + code_bytes} bytes")

    with open(ARTIFACT_PATH, "rb") as f:
        state = torch.load(io.BytesIO(zlib.decompress(f.read())), map_location="cpu")
    model.load_state_dict(dequantize_state_dict_int8(state), strict=True)
    t_q = time.perf_counter()
    qvl, qvb = eval_val(model, val)
    log0(f"final_int8_zlib_roundtrip val_loss:{qvl:.4f} val_bpb:{qvb:.4f} "
         f"eval_time:{1000.0 * (time.perf_counter() - t_q):.0f}ms")
    log0(f"final_int8_zlib_roundtrip_exact val_loss:{qvl:.8f} val_bpb:{qvb:.8f}")


if __name__ == "__main__":
    main()
