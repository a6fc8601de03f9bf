"""Run one TrainSpec on Ray Train: `python -m train.run SPEC.yaml`.

    python -m train.run SPEC.yaml [--set key.path=value ...] [--out DIR]
                                  [--ledger PATH | --no-ledger] [--scaled] [--storage URI]

With --scaled (`run(spec, limits=True)`), the job is a scaled experiment: the
spec is checked against the hard limits (2 GPUs, 6 hours, 80 GB per GPU)
before anything starts, and refused with one message naming each field and
limit it breaks. Without it any spec runs as it says (a sweep may use 8 GPUs).
The job is a Ray Train (V2) TorchTrainer whose ScalingConfig asks for exactly
the spec's GPUs (one worker per GPU, so the dashboard shows them in use), or
for `resources.cpu_workers` CPU workers where the spec asks for none. It joins
the running Ray cluster, or starts a local one. When it ends, DIR/results.json
holds the final metrics and a ledger entry is appended.

Checkpoints go to the storage (train.storage: --storage, else
$RAY_AUTORESEARCH_STORAGE, else DIR/ray_results on this machine), under
STORAGE/runs/<a key of DIR>/NAME with a storage set; results.json points at the
experiment (`storage`) and at the last checkpoint with weights (`checkpoint`,
a path or a URI that `python -m train.evaluate` reads). Ray Train resumes from
there after a worker fails, and a run started again into the same DIR resumes
from its last checkpoint. A cluster of several nodes needs a storage every node
reaches; without one the run is refused before any worker is requested.

A custom model's file, and the .py files beside it, travel to the workers with
the job (train.models.custom.pack_model_files): they run in a directory of their
own, maybe on another node.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from analysis.files import atomic_write_json
from train.estimate import check_fits, estimate
from train.limits import LimitExceeded
from train.spec import SpecError, TrainSpec
from train.storage import Storage, StorageError, check_every_node_reaches, resolve_storage, run_key

logger = logging.getLogger(__name__)

DEFAULT_LEDGER = Path("experiments/EXPERIMENTS.md")

# What results.json always holds (the loop's final report adds more).
RESULT_KEYS = (
    "val_loss", "val_loss_at_start", "steps", "tokens", "tokens_per_s", "peak_memory_mb",
    "wall_s", "gpu_hours", "cost_usd", "stop_reason",
)


class TrainingFailed(RuntimeError):
    """The training job ended in an error it could not recover from."""


def run(
    spec: TrainSpec,
    out_dir: str | Path | None = None,
    ledger: str | Path | None = DEFAULT_LEDGER,
    command: str | None = None,
    limits: bool = False,
    storage: str | Storage | None = None,
) -> dict[str, Any]:
    """Train `spec` on Ray Train; return the results (also in out_dir/results.json).
    With `limits`, a spec over the hard limits of a scaled experiment raises
    LimitExceeded before anything is written or started. `storage`: where
    checkpoints go (default $RAY_AUTORESEARCH_STORAGE, else beside the results);
    StorageError when the cluster's nodes could not all reach it."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from train.loop import train_loop_per_worker
    from train.models.custom import pack_model_files
    from train.ray_session import init_ray

    projected = check_fits(spec) if limits else estimate(spec)  # refuse before anything starts
    store = resolve_storage(storage)
    model_files = pack_model_files(spec.model.path) if spec.model.family == "custom" else None
    out = Path(out_dir or Path("runs") / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    init_ray()
    use_gpu = spec.resources.gpus > 0
    local_results = out / "ray_results"
    check_every_node_reaches(store, local_results, workers_need_gpu=use_gpu)  # before any worker is asked for
    run_store = store.join("runs", run_key(out)) if store is not None else Storage(str(local_results))
    out.mkdir(parents=True, exist_ok=True)
    spec.to_yaml(out / "spec.yaml")

    per_worker: dict[str, float] = {"CPU": spec.resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec.model_dump(mode="json"), "out_dir": str(out), "model_files": model_files},
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.resources.workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=spec.name,
            storage_path=run_store.uri,
            failure_config=ray.train.FailureConfig(max_failures=spec.budget.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    logger.info(
        "training %s: %s params, %d worker(s)%s, %d steps, checkpoints in %s",
        spec.name, f"{projected.params:,}", spec.resources.workers, " on GPUs" if use_gpu else " on CPU",
        spec.budget.max_steps, run_store.join(spec.name).display,
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray Train raises TrainingFailedError once retries are spent
        raise TrainingFailed(f"training {spec.name} failed: {exc}") from exc
    if getattr(result, "error", None):
        raise TrainingFailed(f"training {spec.name} failed: {result.error}")

    metrics = dict(result.metrics or {})
    results = _results(spec, metrics, projected, out, result, run_store)
    atomic_write_json(out / "results.json", results)
    if ledger is not None:
        append_run_to_ledger(Path(ledger), spec, results, out, command)
    return results


def _results(spec: TrainSpec, m: dict, projected, out: Path, result, run_store: Storage) -> dict[str, Any]:
    gpu_hours = m.get("gpu_seconds", 0.0) / 3600
    res = {
        "name": spec.name,
        "val_loss": m.get("val_loss"),
        "val_loss_at_start": m.get("val_loss_at_start"),
        "steps": m.get("step"),
        "tokens": m.get("tokens"),
        "tokens_per_s": m.get("tokens_per_s"),
        "peak_memory_mb": m.get("peak_memory_mb"),
        "wall_s": m.get("wall_s"),
        "gpu_hours": gpu_hours,
        "cost_usd": gpu_hours * spec.cost.usd_per_gpu_hour,
        "stop_reason": m.get("stop_reason"),
        "resumed_from_step": m.get("resumed_from_step"),
        "first_step_at": m.get("first_step_at"),
        "world_size": m.get("world_size"),
        "gpu_allocation": m.get("gpu_allocation"),
        "params": projected.params,
        "estimate": projected.to_dict(),
        "checkpoint": _last_checkpoint_with_weights(result, run_store),
        "storage": run_store.join(spec.name).uri,
        "out_dir": str(out),
    }
    for key in ("val_bpb", "val_accuracy", "val_bpb_at_start", "val_accuracy_at_start"):
        if key in m:
            res[key] = m[key]
    res["history"] = m.get("history", [])
    return res


def _last_checkpoint_with_weights(result, run_store: Storage) -> str | None:
    """The newest checkpoint holding model weights (the final one of a run that
    hit NaN or diverged holds only its state), as a path or a URI."""
    import pyarrow.fs

    candidates = [c for c, _ in (result.best_checkpoints or [])]
    if result.checkpoint is not None:
        candidates.append(result.checkpoint)
    for ckpt in reversed(candidates):
        if ckpt.filesystem.get_file_info(f"{ckpt.path}/model.pt").type == pyarrow.fs.FileType.File:
            return run_store.uri_of(ckpt.path)
    return None


def append_run_to_ledger(path: Path, spec: TrainSpec, results: dict, out: Path, command: str | None = None) -> None:
    """One ledger entry for a finished run (train.run calls this; so do callers
    that must check something, such as a fencing token, before recording)."""
    from train.ledger import LedgerEntry, append_entry, observe

    shown = {k: results[k] for k in RESULT_KEYS if results.get(k) is not None}
    for key in ("val_bpb", "val_accuracy", "params"):
        if key in results:
            shown[key] = results[key]
    artifacts = {"results": str(out / "results.json"), "spec": str(out / "spec.yaml")}
    if results.get("checkpoint"):
        artifacts["checkpoint"] = results["checkpoint"]
    if spec.logging.tensorboard:
        artifacts["tensorboard"] = str(out / "tensorboard")
    if spec.logging.wandb_project:
        artifacts["wandb"] = str(out / "wandb")
    allocation = [
        {"node": a.get("node"), "gpu_ids": ",".join(a.get("gpu_ids") or []) or "-", "role": f"rank {a.get('rank')}",
         "device": a.get("device")}
        for a in (results.get("gpu_allocation") or [])
    ]
    entry = LedgerEntry(
        title=f"{spec.name}: {spec.model.family} {results.get('params', 0) / 1e6:.2f}M on {spec.data.benchmark}",
        config=spec.model_dump(mode="json"),
        gpu_allocation=allocation,
        results=shown,
        observations=observe(results.get("history") or []),
        artifacts=artifacts,
        command=command or f"python -m train.run {shlex.quote(str(out / 'spec.yaml'))}",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    append_entry(path, entry)


# -- command line ----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.run",
        description="Train one spec on Ray Train (the running cluster, or local Ray) and write "
        "DIR/results.json and a ledger entry.",
    )
    parser.add_argument("spec", type=Path, help="a TrainSpec YAML file, e.g. examples/specs/tiny_cpu.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a spec field by its dotted path, e.g. --set resources.gpus=1 --set budget.max_hours=0.5",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/NAME-TIMESTAMP)")
    parser.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER, help=f"ledger to append to (default {DEFAULT_LEDGER})")
    parser.add_argument("--no-ledger", action="store_true", help="do not append a ledger entry")
    parser.add_argument("--scaled", action="store_true",
                        help="a scaled experiment: refuse a spec over the hard limits (2 GPUs, 6 hours, "
                             "80 GB per GPU) before anything starts")
    parser.add_argument("--storage", default=None, metavar="URI",
                        help="where checkpoints go: a folder every node mounts, s3://BUCKET/PREFIX or "
                             "gs://BUCKET/PREFIX (default: $RAY_AUTORESEARCH_STORAGE, else DIR/ray_results, which "
                             "only works on one machine)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from train.data.base import DatasetUnavailable
    from train.models import ModelLoadError

    command = "python -m train.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        storage = resolve_storage(args.storage)  # a malformed setting is refused before Ray starts
        spec = TrainSpec.from_yaml(args.spec).with_overrides(args.overrides)
        results = run(spec, out_dir=args.out, ledger=None if args.no_ledger else args.ledger, command=command,
                      limits=args.scaled, storage=storage)
    except (SpecError, LimitExceeded, DatasetUnavailable, ModelLoadError, StorageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = {k: results.get(k) for k in RESULT_KEYS}
    print(json.dumps(summary, indent=2))
    print(f"results: {Path(results['out_dir']) / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
