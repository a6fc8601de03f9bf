#!/usr/bin/env bash
# Tom's launcher for the lab box (GPUs 2 and 3).
set -euo pipefail
CUDA_VISIBLE_DEVICES=2,3 torchrun --nproc_per_node 2 train_scaled.py --config config.yaml
