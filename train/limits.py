"""The hard limits of a scaled experiment, in one place.

A scaled-up MVE may ask for at most 2 GPUs, run at most 6 hours, and must fit
in the 80 GB of one A100/H100 per GPU. `TrainSpec` enforces the first two on
construction and the third through `train.estimate`.
"""

MAX_GPUS = 2
MAX_HOURS = 6.0
GPU_MEMORY_GB = 80.0

# For projecting GPU-hours and cost: an A100's dense bf16 peak, and a model
# FLOPs utilisation that small models reach in practice.
DEFAULT_GPU_PEAK_TFLOPS = 312.0
DEFAULT_ASSUMED_MFU = 0.35
DEFAULT_USD_PER_GPU_HOUR = 2.00


class LimitExceeded(ValueError):
    """A job asks for more than the hard limits allow."""


def check_gpus(v: int) -> int:
    """For pydantic validators of a GPU count: the message names the limit."""
    if v > MAX_GPUS:
        raise ValueError(f"asks for {v} GPUs; the hard limit is {MAX_GPUS} GPUs per experiment")
    return v


def check_hours(v: float) -> float:
    if v > MAX_HOURS:
        raise ValueError(f"asks for {v:g} hours; the hard limit is {MAX_HOURS:g} hours per experiment")
    return v
