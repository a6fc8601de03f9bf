"""Evaluate a checkpoint on its spec's validation data.

    python -m train.evaluate SPEC.yaml CHECKPOINT [--batches N]

CHECKPOINT is a folder or a storage URI (s3://..., gs://...; what results.json's
`checkpoint` holds), read with this machine's credentials. Prints one JSON
object: val_loss and val_bpb (text) or val_accuracy (MQAR).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from train.estimate import build_model_for
from train.loop import evaluate_model
from train.spec import SpecError, TrainSpec
from train.storage import StorageError, local_folder


def evaluate_checkpoint(spec: TrainSpec, checkpoint: str | Path, batches: int | None = None) -> dict:
    from train.data import build_dataset

    with local_folder(str(checkpoint)) as folder:
        weights = folder / "model.pt"
        if not weights.is_file():
            raise FileNotFoundError(f"{checkpoint}: no model weights (model.pt) in this checkpoint")
        state = torch.load(weights, map_location="cpu")
    if batches:
        spec = spec.with_overrides([f"budget.eval_batches={batches}"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model_for(spec, "cpu")
    model.load_state_dict(state)
    dataset = build_dataset(spec.data.benchmark, seq_len=spec.data.seq_len, seed=spec.seed, **spec.data.params)
    return evaluate_model(model.to(device), dataset, spec, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("checkpoint", help="a checkpoint folder or URI (results.json's `checkpoint`)")
    parser.add_argument("--batches", type=int, default=None, help="validation batches (default: the spec's)")
    args = parser.parse_args(argv)
    try:
        result = evaluate_checkpoint(TrainSpec.from_yaml(args.spec), args.checkpoint, args.batches)
    except (SpecError, StorageError, OSError) as exc:  # OSError: missing, or the storage refused
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
