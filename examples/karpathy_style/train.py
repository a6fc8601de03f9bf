"""The file the research loop edits: model, optimiser, training loop. Its knobs are
the constants at the top. Data, tokenizer, time budget and evaluation live in
prepare.py, which is read-only.

Run: python train.py > run.log 2>&1. It ends with a summary block after `---`,
as karpathy/autoresearch's train.py does; the score is its `val_bpb:` line.
"""

import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from prepare import MAX_SEQ_LEN, MAX_STEPS, TIME_BUDGET, VOCAB_SIZE, evaluate_bpb, make_dataloader

# ---------------------------------------------------------------- hyperparameters
DEPTH = 2
MODEL_DIM = 64
NUM_HEADS = 2
MLP_MULT = 4
BATCH_SIZE = 16
LEARNING_RATE = 1e-3
WARMUP_STEPS = 5
WEIGHT_DECAY = 0.0
SEED = 1337


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.fc = nn.Linear(dim, MLP_MULT * dim, bias=False)
        self.out = nn.Linear(MLP_MULT * dim, dim, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB_SIZE, MODEL_DIM)
        self.pos = nn.Embedding(MAX_SEQ_LEN, MODEL_DIM)
        self.blocks = nn.ModuleList(Block(MODEL_DIM, NUM_HEADS) for _ in range(DEPTH))
        self.ln_f = nn.LayerNorm(MODEL_DIM)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx, targets):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.tok.weight)  # tied embeddings
        return F.cross_entropy(logits.view(-1, VOCAB_SIZE), targets.reshape(-1))


t_start = time.time()
torch.manual_seed(SEED)
model = GPT()
num_params = sum(p.numel() for p in model.parameters())
optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.95))
loader = make_dataloader(BATCH_SIZE, seed=SEED)
print(f"Model: depth {DEPTH}, dim {MODEL_DIM}, {num_params:,} parameters")
print(f"Time budget: {TIME_BUDGET}s" + (f", at most {MAX_STEPS} steps" if MAX_STEPS else ""))

step, training_time, smooth = 0, 0.0, 0.0
while training_time < TIME_BUDGET and (not MAX_STEPS or step < MAX_STEPS):
    t0 = time.time()
    lr = LEARNING_RATE * min(1.0, (step + 1) / max(1, WARMUP_STEPS))
    for group in optimizer.param_groups:
        group["lr"] = lr
    x, y = next(loader)
    loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    value = loss.item()
    if not math.isfinite(value) or value > 100:
        print()
        print("FAIL")
        sys.exit(1)
    step += 1
    training_time += time.time() - t0
    smooth = 0.9 * smooth + 0.1 * value
    debiased = smooth / (1 - 0.9**step)
    pct = 100 * (step / MAX_STEPS if MAX_STEPS else training_time / TIME_BUDGET)
    print(f"\rstep {step:05d} ({pct:.1f}%) | loss: {debiased:.6f} | lr: {lr:.2e} | "
          f"dt: {1000 * (time.time() - t0):.0f}ms | remaining: {max(0, TIME_BUDGET - training_time):.0f}s    ",
          end="", flush=True)
print()  # newline after the "\r" progress line

val_bpb = evaluate_bpb(model)
# karpathy's script reports CUDA's peak; on CPU the process's peak resident memory
peak_mb = (torch.cuda.max_memory_allocated() / 1024**2 if torch.cuda.is_available()
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {training_time:.1f}")
print(f"total_seconds:    {time.time() - t_start:.1f}")
print(f"peak_vram_mb:     {peak_mb:.1f}")
print(f"mfu_percent:      {0.0:.2f}")
print(f"total_tokens_M:   {step * BATCH_SIZE * MAX_SEQ_LEN / 1e6:.1f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {num_params / 1e6:.1f}")
print(f"depth:            {DEPTH}")
