"""The read-only harness of the karpathy-style example: fixed constants, data,
tokenizer, data loader and evaluation. Do not modify: `evaluate_bpb` is the
ground truth metric, and the loop never edits this file (only train.py).

Laid out like karpathy/autoresearch's prepare.py, small enough for a CPU: the
data is this interpreter's Python standard library source (no download),
tokenised as bytes; every 10th file is validation.
"""

import math
import os
import sysconfig

import numpy as np
import torch

# Fixed by the harness. The environment may shorten a run (tests, a slow machine),
# never the model: the budget is the same for every experiment of one loop.
TIME_BUDGET = float(os.environ.get("TIME_BUDGET", 60))  # seconds of training
MAX_STEPS = int(os.environ.get("MAX_STEPS", 0))  # 0: as many as the budget allows
MAX_SEQ_LEN = 64
VOCAB_SIZE = 256  # bytes
DATA_BYTES = int(os.environ.get("DATA_BYTES", 400_000))
VAL_BYTES = 16_384
NUM_THREADS = int(os.environ.get("NUM_THREADS", 1))


class Tokenizer:
    """Bytes are tokens: bits per byte is bits per token."""

    vocab_size = VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def _load():
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        paths.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".py"))
    train, val, total = [], [], 0
    for i, path in enumerate(sorted(paths)):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        (val if i % 10 == 0 else train).append(data)
        total += len(data)
        if total >= DATA_BYTES:
            break
    as_tensor = lambda chunks: torch.from_numpy(np.frombuffer(b"".join(chunks), dtype=np.uint8).astype(np.int64))
    return as_tensor(train), as_tensor(val)[:VAL_BYTES]


_TRAIN, _VAL = _load()
torch.set_num_threads(NUM_THREADS)


def make_dataloader(batch_size: int, seed: int = 1337):
    """Endless (x, y) batches of MAX_SEQ_LEN bytes from the training split."""
    rng = np.random.default_rng(seed)
    while True:
        ix = rng.integers(0, len(_TRAIN) - MAX_SEQ_LEN - 1, size=batch_size)
        x = torch.stack([_TRAIN[i : i + MAX_SEQ_LEN] for i in ix])
        y = torch.stack([_TRAIN[i + 1 : i + 1 + MAX_SEQ_LEN] for i in ix])
        yield x, y


@torch.no_grad()
def evaluate_bpb(model) -> float:
    """Bits per byte on the validation split: mean cross-entropy over non-overlapping
    windows, in nats per byte, divided by ln 2. `model(x, y)` returns the mean loss."""
    was_training = model.training
    model.eval()
    n = (len(_VAL) - 1) // MAX_SEQ_LEN
    x = _VAL[: n * MAX_SEQ_LEN].view(n, MAX_SEQ_LEN)
    y = _VAL[1 : n * MAX_SEQ_LEN + 1].view(n, MAX_SEQ_LEN)
    total = 0.0
    for i in range(0, n, 64):
        total += model(x[i : i + 64], y[i : i + 64]).item() * x[i : i + 64].shape[0]
    model.train(was_training)
    return total / n / math.log(2)
