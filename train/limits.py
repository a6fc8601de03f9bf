"""The hard limits of a scaled experiment, in one place.

A scaled-up MVE may ask for at most 2 GPUs, run at most 6 hours, and must fit
in the 80 GB of one A100/H100 per GPU; trained on CPU (gpus 0), all its workers
together must fit in this machine's memory. They are the rule for scaled
experiments, not for every training job: a `TrainSpec` describes any job
honestly (a hardware sweep's trial may hold 8 GPUs). They are enforced where a
plan becomes a job: `ScalePlan` on construction, and `train.run(spec,
limits=True)` (`python -m train.run SPEC --scaled`), both through
`train.estimate.check_fits(spec)`, the one check of a spec against them (the
memory limit needs the estimate, so it lives there; the rules are here).
"""

import os

MAX_GPUS = 2
MAX_HOURS = 6.0
GPU_MEMORY_GB = 80.0


class LimitExceeded(ValueError):
    """A job asks for more than the hard limits allow."""


def check_gpus(v: int) -> int:
    """A GPU count against the limit (also a pydantic field validator): the
    message names the limit; the caller names the field."""
    if v > MAX_GPUS:
        raise ValueError(f"asks for {v} GPUs; the hard limit is {MAX_GPUS} GPUs per experiment")
    return v


def check_hours(v: float) -> float:
    if v > MAX_HOURS:
        raise ValueError(f"asks for {v:g} hours; the hard limit is {MAX_HOURS:g} hours per experiment")
    return v


def memory_problem(per_gpu_gb: float) -> str | None:
    """Why an estimated memory per GPU breaks the limit, or None."""
    if per_gpu_gb <= GPU_MEMORY_GB:
        return None
    return (f"optim.batch_size/data.seq_len/model: needs {per_gpu_gb:.1f} GB per GPU; the hard limit is "
            f"{GPU_MEMORY_GB:g} GB (lower optim.batch_size, raise optim.grad_accum, or shrink the model)")


def machine_memory_gb() -> float:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3


def cpu_memory_problem(need_gb: float, workers: int, have_gb: float | None = None) -> str | None:
    """Why CPU training that needs `need_gb` in all (its `workers` replicas
    together) does not fit in this machine's memory, or None."""
    have_gb = machine_memory_gb() if have_gb is None else have_gb
    if need_gb <= have_gb:
        return None
    return (f"resources.gpus=0/model/optim.batch_size: training on CPU needs {need_gb:,.1f} GB of memory for "
            f"{workers} worker(s); this machine has {have_gb:,.1f} GB (shrink the model or optim.batch_size, "
            f"use fewer resources.cpu_workers, or train on GPUs)")
