"""Train one TrainSpec on g x n DDP worker processes inside a trial's placement group.

On a cluster a hardware-scaling trial reserves a placement group with one
bundle of g GPUs per node and STRICT_SPREAD, so its n bundles sit on n
different nodes. `run_worker_group` starts one worker actor per GPU in those
bundles (rank r in bundle r // g), joins them in a torch.distributed process
group (NCCL on GPUs, gloo on CPU), and has each run the training engine's
`run_loop` with a session that wraps the model in DDP. Rank 0's reports come
back to the trial while it trains (the actor is threaded, so `poll` answers
during `run`).

Ray Train is not used here on purpose: a TorchTrainer inside a trial would ask
for a placement group of its own on top of the one the trial holds (and its
placement strategies cannot say "g per node on n nodes"); these workers live
in the trial's own reservation.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable

import ray

from train.loop import worker_allocation


class _DDPSession:
    """`run_loop`'s session for one worker of the group (same interface as
    train.loop.RayTrainSession)."""

    def __init__(self, rank: int, world: int, device):
        self.rank, self.world, self.device = rank, world, device
        self.reports: list[dict] = []
        self.lock = threading.Lock()

    def prepare_model(self, model):
        import torch

        model = model.to(self.device)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def get_checkpoint_dir(self):
        return None  # a trial that dies is rerun from the start

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        if self.rank == 0:
            with self.lock:
                self.reports.append(dict(metrics))

    def take_reports(self) -> list[dict]:
        with self.lock:
            out, self.reports = self.reports, []
        return out

    def allocation(self) -> dict:
        return worker_allocation(self.rank, self.device)


@ray.remote
class DDPWorker:
    def __init__(self, rank: int, world: int, threads: int):
        self.rank, self.world = rank, world
        self.session: _DDPSession | None = None
        import torch

        torch.set_num_threads(max(1, threads))

    def address(self) -> tuple[str, int]:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def run(self, spec: dict, master: str, port: int, backend: str) -> dict:
        import torch
        import torch.distributed as dist

        from train.loop import run_loop
        from train.spec import TrainSpec

        if backend == "nccl":
            torch.cuda.set_device(0)  # Ray sets CUDA_VISIBLE_DEVICES to this worker's GPU
            device = torch.device("cuda", 0)
        else:
            device = torch.device("cpu")
        dist.init_process_group(backend, init_method=f"tcp://{master}:{port}", rank=self.rank,
                                world_size=self.world)
        self.session = _DDPSession(self.rank, self.world, device)
        try:
            state = run_loop(TrainSpec.model_validate(spec), self.session)
        finally:
            dist.destroy_process_group()
        return {"step": state.step, "tokens": state.tokens}

    def poll(self) -> list[dict]:
        return self.session.take_reports() if self.session is not None else []


def run_worker_group(spec, gpus_per_node: int, nodes: int, on_report: Callable[[dict], None], *,
                     use_gpu: bool, cpus_per_worker: float = 1.0, placement_group=None,
                     poll_s: float = 0.5) -> None:
    """Train `spec` (its resources.workers == gpus_per_node * nodes) on that
    many workers in `placement_group` (default: the caller's, i.e. the trial's),
    calling on_report(metrics) with each of rank 0's reports as it comes."""
    from ray.util.placement_group import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group or get_current_placement_group()
    if pg is None:
        raise RuntimeError("run_worker_group runs inside a placement group (the trial's); none found")
    world = gpus_per_node * nodes
    n_bundles = len(pg.bundle_specs)
    workers = []
    for rank in range(world):
        bundle = min(rank // gpus_per_node, n_bundles - 1)
        workers.append(DDPWorker.options(
            num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0, max_concurrency=2,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=bundle, placement_group_capture_child_tasks=False),
        ).remote(rank, world, max(1, int(cpus_per_worker))))
    try:
        master, port = ray.get(workers[0].address.remote())
        spec_dict = spec.model_dump(mode="json")
        backend = "nccl" if use_gpu else "gloo"
        refs = [w.run.remote(spec_dict, master, port, backend) for w in workers]
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s)
            ray.get(ready)  # a worker that failed ends the group now, not when the others time out
            for metrics in ray.get(workers[0].poll.remote()):
                on_report(metrics)
        ray.get(refs)
    finally:
        for w in workers:
            ray.kill(w)
