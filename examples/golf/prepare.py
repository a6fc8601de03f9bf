"""The protected harness of the Parameter Golf (CPU edition) template: data, the
metric and the artifact. The research file (`train_gpt.py`) imports it; the
AutoResearch loop refuses every change to it and checks its hash before each
run, as karpathy/autoresearch keeps `prepare.py` read-only.

    import prepare
    train, val = prepare.load_splits()      # bytes as int64 tensors; the held-out split is not among them
    ...                                     # train a model whose forward(idx) returns logits (B, T, 256)
    prepare.finish(model)                   # size lines, int8+zlib round trip, the score lines

The score is computed here from the model's logits, never by the research file:
mean cross-entropy in nats per byte over non-overlapping windows of
`model.seq_len` bytes, divided by ln 2 (bits per byte, `val_bpb`).

    python prepare.py rescore final_model.int8.ptz [train_gpt.py]

re-scores a saved artifact on the held-out split, which selection never sees:
it rebuilds the model with the research file's `build_model()`, loads the
round-tripped weights and prints a `holdout_int8_zlib_roundtrip_exact` line.
The gap between the two scores is overfitting by selection.

Self-contained (torch, numpy, stdlib), like a Parameter Golf submission.
"""

import importlib.util
import io
import math
import os
import sys
import sysconfig
import zlib

import numpy as np
import torch
import torch.nn.functional as F

VOCAB_SIZE = 256  # bytes
DATA_MAX_BYTES = 4_000_000  # the corpus: this interpreter's stdlib sources, sorted by path
VAL_BYTES = 65_536  # selection split: what every experiment is scored on
HOLDOUT_BYTES = 65_536  # held-out split: re-scored only for kept models
ARTIFACT_PATH = "final_model.int8.ptz"
CAP_BYTES = 16_000_000
# The training budget is the operator's (`--set MAX_WALLCLOCK_SECONDS=300`), not the research file's.
MAX_WALLCLOCK_SECONDS = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 60))
HARNESS_FILE = os.path.abspath(__file__)


def log0(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- data
def _split_bytes():
    """{'train', 'val', 'holdout'}: whole files, by position in the sorted list
    (every 10th file is val, the 5th of every ten is held out)."""
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        paths.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".py"))
    paths.sort()
    parts = {"train": [], "val": [], "holdout": []}
    total = 0
    for i, p in enumerate(paths):
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            continue
        parts["val" if i % 10 == 0 else "holdout" if i % 10 == 5 else "train"].append(data)
        total += len(data)
        if total >= DATA_MAX_BYTES:
            break
    return {k: np.frombuffer(b"".join(v), dtype=np.uint8) for k, v in parts.items()}


def _tensor(arr):
    return torch.from_numpy(arr.astype(np.int64))


def load_splits():
    """(train, val): the bytes to train on, and the selection split every run is scored on."""
    parts = _split_bytes()
    return _tensor(parts["train"]), _tensor(parts["val"][:VAL_BYTES])


def load_holdout():
    return _tensor(_split_bytes()["holdout"][:HOLDOUT_BYTES])


# ---------------------------------------------------------------- the metric
@torch.no_grad()
def evaluate_bpb(model, data, seq_len=None):
    """(loss in nats per byte, bits per byte) of `model` on `data`, from its logits."""
    seq_len = int(seq_len or model.seq_len)
    was_training = model.training
    model.eval()
    n = (len(data) - 1) // seq_len
    if n < 1:
        raise ValueError(f"{len(data)} bytes hold no window of {seq_len}")
    x = data[: n * seq_len].view(n, seq_len)
    y = data[1 : n * seq_len + 1].view(n, seq_len)
    total = 0.0
    for i in range(0, n, 64):
        logits = model(x[i : i + 64])
        if tuple(logits.shape) != (x[i : i + 64].shape[0], seq_len, VOCAB_SIZE):
            raise ValueError(f"model(idx) must return logits of shape (batch, {seq_len}, {VOCAB_SIZE}); "
                             f"got {tuple(logits.shape)}")
        total += F.cross_entropy(logits.float().reshape(-1, VOCAB_SIZE), y[i : i + 64].reshape(-1),
                                 reduction="sum").item()
    model.train(was_training)
    loss = total / (n * seq_len)
    return loss, loss / math.log(2)


# ---------------------------------------------------------------- the artifact: int8 per row + zlib
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
    return {name: d["q"].float() * d["scale"].float() if "q" in d else d["w"].float() for name, d in obj.items()}


def load_artifact(path):
    with open(path, "rb") as f:
        return dequantize_state_dict_int8(torch.load(io.BytesIO(zlib.decompress(f.read())), map_location="cpu"))


def code_bytes(research_file):
    """What ships: the research file and this harness."""
    return sum(os.path.getsize(p) for p in {os.path.abspath(research_file), HARNESS_FILE})


def finish(model, research_file=None, artifact_path=ARTIFACT_PATH):
    """Export the model as the evaluator loads it and print the score lines."""
    research_file = research_file or sys.modules["__main__"].__file__
    code = code_bytes(research_file)
    raw = io.BytesIO()
    torch.save(model.state_dict(), raw)
    log0(f"Serialized model: {len(raw.getvalue())} bytes")
    log0(f"Code size: {code} bytes")
    log0(f"Total submission size: {len(raw.getvalue()) + code} bytes")
    qbuf = io.BytesIO()
    torch.save(quantize_state_dict_int8(model.state_dict()), qbuf)
    with open(artifact_path, "wb") as f:
        f.write(zlib.compress(qbuf.getvalue(), level=9))
    model_bytes = os.path.getsize(artifact_path)
    log0(f"Serialized model int8+zlib: {model_bytes} bytes (payload:{len(qbuf.getvalue())} "
         f"raw_torch:{len(raw.getvalue())})")
    log0(f"Total submission size int8+zlib: {model_bytes + code} bytes")
    model.load_state_dict(load_artifact(artifact_path), strict=True)
    _, val = load_splits()
    loss, bpb = evaluate_bpb(model, val)
    log0(f"final_int8_zlib_roundtrip val_loss:{loss:.4f} val_bpb:{bpb:.4f}")
    log0(f"final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}")


def rescore(artifact_path, research_file="train_gpt.py"):
    """The held-out score of a saved artifact, with the research file's `build_model()`."""
    spec = importlib.util.spec_from_file_location("research_module", research_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its training only runs under __main__
    model = module.build_model()
    model.load_state_dict(load_artifact(artifact_path), strict=True)
    loss, bpb = evaluate_bpb(model, load_holdout())
    log0(f"holdout_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "rescore":
        sys.exit("usage: python prepare.py rescore ARTIFACT [RESEARCH_FILE]")
    torch.set_num_threads(int(os.environ.get("NUM_THREADS", 2)))
    rescore(sys.argv[2], *sys.argv[3:4])
