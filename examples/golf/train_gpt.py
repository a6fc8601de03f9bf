"""Parameter-Golf style research file: a small byte-level GPT trained on CPU.

This is the file AutoResearch changes. Data loading, the metric and the
artifact belong to the protected harness `prepare.py`, which this file
imports: the score is the val_bpb `prepare.finish` prints on the
``final_int8_zlib_roundtrip_exact`` line after the int8+zlib round trip. The
artifact (this file + prepare.py + the compressed model) must stay under
16,000,000 bytes. Keep `build_model()`: the harness rebuilds the model with it
to re-score a kept artifact on the held-out split.
"""

import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import prepare

# ---------------------------------------------------------------- hyperparameters
SEED = int(os.environ.get("SEED", 1337))
ITERATIONS = int(os.environ.get("ITERATIONS", 600))
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
NUM_THREADS = int(os.environ.get("NUM_THREADS", 2))

# plain constants (edit directly)
WEIGHT_DECAY = 0.0
GRAD_CLIP_NORM = 1.0
BETAS = (0.9, 0.95)


def log0(msg):
    print(msg, flush=True)


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
        self.seq_len = SEQ_LEN  # the harness evaluates windows of this many bytes
        self.tok = nn.Embedding(prepare.VOCAB_SIZE, MODEL_DIM)
        self.pos = nn.Embedding(SEQ_LEN, MODEL_DIM)
        self.blocks = nn.ModuleList(Block(MODEL_DIM, NUM_HEADS, MLP_MULT) for _ in range(NUM_LAYERS))
        self.ln_f = nn.LayerNorm(MODEL_DIM)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return F.linear(self.ln_f(x), self.tok.weight)  # logits; tied embeddings


def build_model():
    return GPT()


# ---------------------------------------------------------------- main
def main():
    torch.set_num_threads(NUM_THREADS)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    train, val = prepare.load_splits()
    log0(f"train_bytes:{len(train)} val_bytes:{len(val)} seed:{SEED}")
    model = build_model()
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
            vl, vb = prepare.evaluate_bpb(model, val)
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
        loss = F.cross_entropy(model(x).reshape(-1, prepare.VOCAB_SIZE), y.reshape(-1))
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
        if stop_after_step is None and train_ms >= 1000.0 * prepare.MAX_WALLCLOCK_SECONDS:
            stop_after_step = step

    log0("peak memory allocated: 0 MiB reserved: 0 MiB")  # CPU run: no CUDA allocator
    prepare.finish(model)


if __name__ == "__main__":
    main()
