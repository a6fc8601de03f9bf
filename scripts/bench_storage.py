"""Benchmark what shared storage costs a training run: the upload of one
checkpoint of a spec, as a Ray Train worker makes it, to a local S3 server
(moto, on 127.0.0.1) and to a local folder.

The checkpoint is the loop's own (model.pt, optimizer.pt, state.json after one
optimiser step), persisted with Ray Train's StorageContext.persist_current_checkpoint,
the call a worker makes inside `ray.train.report`. No Ray cluster is started.

    python scripts/bench_storage.py [--spec examples/specs/tiny_cpu.yaml] [--repeats 20] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def write_checkpoint(spec_path: Path, folder: Path) -> int:
    """The loop's checkpoint of `spec` after one step, in `folder`; returns its bytes."""
    import torch
    import torch.nn.functional as F

    from train.data import build_dataset
    from train.estimate import build_model_for
    from train.loop import LoopState, _optimizer
    from train.spec import TrainSpec

    spec = TrainSpec.from_yaml(spec_path)
    model = build_model_for(spec, "cpu")
    optimizer = _optimizer(model, spec)
    data = build_dataset(spec.data.benchmark, seq_len=spec.data.seq_len, seed=0, **spec.data.params)
    x, y = data.train_batch(spec.optim.batch_size, torch.Generator().manual_seed(0))
    logits = model(x)
    F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)).backward()
    optimizer.step()
    torch.save(model.state_dict(), folder / "model.pt")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    (folder / "state.json").write_text(json.dumps(LoopState(step=1).__dict__, default=str))
    return sum(p.stat().st_size for p in folder.iterdir())


def time_uploads(storage_uri: str, checkpoint: Path, repeats: int) -> list[float]:
    from ray.train import Checkpoint
    from ray.train.v2._internal.execution.storage import StorageContext

    logging.getLogger("ray").setLevel(logging.WARNING)  # no line per checkpoint
    ctx = StorageContext(storage_path=storage_uri, experiment_dir_name="bench")
    source = Checkpoint.from_directory(str(checkpoint))
    ctx.persist_current_checkpoint(source, "warmup")  # connections, bucket region lookup
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        ctx.persist_current_checkpoint(source, f"checkpoint_{i:04d}")
        times.append(time.perf_counter() - t0)
    return times


def start_s3() -> tuple[object, str]:
    """moto's S3 server on loopback, found through the usual AWS_* environment."""
    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    pyarrow.fs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                            allow_bucket_creation=True).create_dir("bench")
    return server, "s3://bench/checkpoints"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=ROOT / "examples/specs/tiny_cpu.yaml")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="where bench_storage.json goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    server, s3_uri = start_s3()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        ckpt = Path(tmp) / "ckpt"
        ckpt.mkdir()
        size = write_checkpoint(args.spec, ckpt)
        for label, uri in (("local S3 (moto, 127.0.0.1)", s3_uri), ("local folder", str(Path(tmp) / "storage"))):
            times = time_uploads(uri, ckpt, args.repeats)
            rows.append({"storage": label, "checkpoint_bytes": size, "uploads": len(times),
                         "p50_ms": round(statistics.median(times) * 1e3, 1),
                         "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))] * 1e3, 1),
                         "max_ms": round(max(times) * 1e3, 1),
                         "MB_per_s": round(size / statistics.median(times) / 1e6, 1)})
    server.stop()

    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print(f"\nOne checkpoint of {args.spec.name} persisted as a Ray Train worker does "
          f"(StorageContext.persist_current_checkpoint)")
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r[c]).rjust(w) for c, w in zip(cols, widths)))
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "bench_storage.json"
    out.write_text(json.dumps({"spec": str(args.spec), "rows": rows, "loadavg": load}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
