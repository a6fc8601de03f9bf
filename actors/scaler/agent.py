"""The ScalerAgent: claim a scalable MVE, plan it, scaffold it, train it, record it.

Each agent works the shared folders; the WorkTracker's leases keep any number
of agents from doing the same MVE twice. For one MVE an agent:

1. claims `scale:NNN` and heartbeats from a thread (a refused heartbeat stops it);
2. reads the MVE's documents, code and proposal;
3. designs a ScalePlan (`planning`: with a key, Claude in an agentic session
   that writes and smoke-tests the code, or in one call; without one, or when
   the API fails after the SDK's retries, the offline planner, which ports the
   MVE's own model and declines an MVE it cannot train) and validates it
   against the hard limits; a kernel benchmark may come back as a
   BenchmarkPlan, run as a Ray task holding its GPUs instead of training;
4. writes `code/NNN_scaled/` atomically and smoke-tests it in a subprocess with
   the sandbox's environment (no secrets, no GPU) and a timeout;
5. trains it through `train.run` with the plan's GPUs; on a cluster without
   GPUs (a laptop) it runs a rehearsal instead: CPU workers, the model capped
   at d_model 128 x 2 layers, a 40-step budget, marked as such in results.json;
6. writes `code/NNN_scaled/results.json` and a ledger entry only after a
   heartbeat confirms its token is still valid, and releases the claim as done.

A failure of the MVE (a rejected plan, a failed smoke test or training run, an
unreachable API: EXPECTED_FAILURES) releases the claim as failed, with the
reason, sets aside the folder it was writing, and the agent goes on. Any other
exception is a bug: it is logged with its traceback, the claim is released as
failed and the folder set aside all the same, and the agent crashes.

A stop request (the driver cancels `run_once` on Ctrl-C or SIGTERM, see
`actors.shared.stopping`) is seen between steps and while a smoke test or a
training job runs: the job is cancelled, the half-written folder set aside, the
claim released as abandoned, and `run_once` returns within seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from actors.scaler import benchmark_job
from actors.scaler.discovery import MVE, SCALE_PREFIX, find_mves, normalise_claim
from actors.scaler.judge_claude import make_judge
from actors.scaler.model_port import NoModel, rehearsal_kwargs
from actors.scaler.options import ScalerOptions
from actors.scaler.plan import BenchmarkPlan
from actors.scaler.planning import Planned, Planning
from actors.scaler.scaffold import OwnershipError, ScaffoldError, set_aside, write_scaled_experiment
from actors.scaler.steps import StepFailed, smoke_test
from actors.shared import metrics
from actors.shared.llm import LLMClient, LLMError, make_llm
from actors.shared.pricing import Usage
from actors.shared.stopping import Stopped, check_stop, wait_task
from actors.tracker.actor import ACTOR_NAME
from actors.tracker.client import Lease, LeaseLost, LeaseRefused, TrackerClient
from actors.tracker.owners import process_owner
from analysis.files import atomic_write_json
from train.data.base import DatasetUnavailable
from train.limits import LimitExceeded
from train.models.custom import ModelLoadError
from train.run import TrainingFailed
from train.spec import DEFAULT_USD_PER_GPU_HOUR, SpecError, TrainSpec
from train.storage import StorageError

logger = logging.getLogger(__name__)

# The laptop rehearsal proves the folder trains end to end (data, model, optimiser,
# checkpoints, results), not what the model learns: a few small steps do that.
REHEARSAL_STEPS = 20
LAPTOP_OVERRIDES = (
    "resources.gpus=0", "resources.cpu_workers=1", "optim.batch_size=4", "optim.warmup_steps=5",
    f"budget.max_steps={REHEARSAL_STEPS}", f"budget.eval_interval={REHEARSAL_STEPS // 2}", "budget.eval_batches=4",
    "budget.max_hours=0.1",
    "budget.patience=null", "budget.target=null", "precision=fp32", "logging.tensorboard=false",
)


# What a step of `_scale` may raise when the MVE, the plan, the model or the
# cluster lets it down: the MVE is released as failed and the agent goes on.
# Anything else is a bug in our code, and crashes the agent.
EXPECTED_FAILURES = (StepFailed, LLMError, ScaffoldError, SpecError, LimitExceeded, ModelLoadError,
                     DatasetUnavailable, TrainingFailed, StorageError, OSError)


@dataclass
class Outcome:
    mve_id: str
    status: str  # scaled, failed, declined, planned (--dry-run), scaffolded (--no-launch), lost, stopped
    reason: str
    agent: str
    planner: str = ""
    folder: str | None = None
    token: int | None = None
    mode: str | None = None
    val_loss: float | None = None
    gpu_hours: float = 0.0
    cost_usd: float = 0.0
    llm_tokens: int = 0
    llm_cost_usd: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _waits(result: dict | None) -> bool:
    """An MVE let go on purpose (--dry-run, --no-launch) waits for a later round;
    one let go because the operator stopped the job is taken up again at once.
    One the offline planner declined waits too: it will decline it again."""
    return (result or {}).get("reason") in ("dry run", "--no-launch") or bool((result or {}).get("declined"))


def laptop_spec(spec: TrainSpec) -> TrainSpec:
    """The plan's spec cut down to a CPU rehearsal that runs in about a minute."""
    m = spec.model
    if m.family == "custom":  # its sizes are its constructor's arguments
        return spec.with_overrides(list(LAPTOP_OVERRIDES)).model_copy(update={"model": m.model_copy(
            update={"kwargs": rehearsal_kwargs(m.kwargs), "d_model": min(m.d_model, 128),
                    "n_layers": min(m.n_layers, 2)})})
    d_model = min(m.d_model, 128)
    heads = 2 if d_model % 2 == 0 else 1
    kv = 1 if (m.n_kv_heads is not None and m.n_kv_heads < m.n_heads) else None
    return spec.with_overrides([
        *LAPTOP_OVERRIDES, f"model.d_model={d_model}", f"model.n_layers={min(m.n_layers, 2)}",
        f"model.n_heads={heads}", f"model.n_kv_heads={'null' if kv is None else kv}",
    ])


class ScalerAgent:
    """One agent. As a Ray actor: `ray.remote(ScalerAgent)`; in-process works too."""

    def __init__(self, agent_id: str, options: ScalerOptions, *, tracker=None, llm: LLMClient | None = None):
        """`options` say how to work; `tracker` is the WorkTracker's handle (else
        found by name); `llm` the Claude client (else one from ANTHROPIC_API_KEY,
        read here, in the process that uses it; none: the offline planner)."""
        import ray

        if not isinstance(options, ScalerOptions):
            raise TypeError(f"options must be a ScalerOptions, not {type(options).__name__}")
        self.agent_id = agent_id
        self.options = options
        handle = tracker or ray.get_actor(ACTOR_NAME, namespace=options.tracker_namespace)
        self.tracker = TrackerClient(handle)
        if llm is None:
            llm = make_llm(options.model, offline=options.offline)
        self.planning = Planning(options, llm)
        # Who reads the MVEs' verdicts: Claude with a key (answers cached by file hash), else the heuristics.
        self.judge = make_judge(options.model, offline=options.offline)
        gpus = options.gpus_available
        if gpus is None:
            gpus = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
        self.gpus_available = gpus
        # The tracker can tell when a named actor is gone: `scaler-1@actor:NS/NAME`.
        self.owner = process_owner(agent_id, options.tracker_namespace)
        self._doing, self._since = "idle", time.time()

    def status(self) -> dict:
        """What this agent does right now, for the main job's progress lines. (The
        actor runs with two threads so this answers while `run_once` works.)"""
        return {"agent": self.agent_id, "doing": self._doing, "for_s": round(time.time() - self._since, 1)}

    def _now(self, doing: str) -> None:
        self._doing, self._since = doing, time.time()

    # -- the loop ------------------------------------------------------------------

    def run_once(self) -> list[dict]:
        """Scale every MVE this agent can claim, one at a time; return outcomes."""
        outcomes: list[Outcome] = []
        tried: set[str] = set()
        while not outcomes or outcomes[-1].status != "stopped":
            try:
                check_stop()
            except Stopped:
                break
            held, recent = self._claim_states()
            tried |= recent
            opts = self.options
            mves = find_mves(opts.experiments, opts.code, opts.proposals, claimed=held, judge=self.judge)
            todo = [m for m in mves if m.scalable and m.id not in tried]
            if not todo:
                break
            mve = todo[0]
            tried.add(mve.id)
            lease = self.tracker.hold(mve.work_id, self.owner)
            try:
                lease.acquire()
            except LeaseRefused as refused:
                rec = refused.holder
                if rec is not None and rec.state.value == "done":
                    # Done in the tracker, yet no results here: another checkout
                    # shares this state file. Say so rather than skip silently.
                    outcomes.append(Outcome(
                        mve.id, "skipped", f"{mve.work_id} is done in the WorkTracker's state (by {rec.owner}) "
                        f"but {mve.scaled_dir}/results.json is missing; use another --state to scale it here",
                        self.agent_id))
                    metrics.record_mve_outcome("skipped")
                continue  # otherwise another agent got there first
            logger.info("%s claimed %s (token %d)", self.agent_id, mve.work_id, lease.token)
            with lease:
                outcomes.append(self._scale(mve, lease))
                self._now("idle")
            metrics.record_mve_outcome(outcomes[-1].status)
        return [o.to_dict() for o in outcomes]

    def _claim_states(self) -> tuple[set[str], set[str]]:
        """From one look at the tracker: MVEs held right now, and MVEs released
        as failed or abandoned (--dry-run, --no-launch) a short while ago,
        which wait for a later round."""
        now = time.time()
        held, recent = set(), set()
        for c in self.tracker.list_claims():
            if not c.work_id.startswith(SCALE_PREFIX):
                continue
            if c.live:
                held.add(normalise_claim(c.work_id))
            elif c.released_at and now - c.released_at < self.options.retry_failed_after_s and (
                    c.state.value == "failed" or (c.state.value == "abandoned" and _waits(c.result))):
                recent.add(normalise_claim(c.work_id))
        return held, recent

    def _scale(self, mve: MVE, lease: Lease) -> Outcome:
        t0 = time.time()
        outcome = Outcome(mve.id, "failed", "", self.agent_id, token=lease.token)
        folder: Path | None = None
        planned: Planned | None = None
        try:
            self._now(f"planning {mve.work_id}")
            planned = self.planning.plan(mve, lease)
            plan = planned.plan
            outcome.planner = planned.planner
            outcome.llm_tokens, outcome.llm_cost_usd = planned.usage.billed_tokens, planned.usage.cost_usd
            est = self.planning.fits(planned)
            if self.options.dry_run:
                lease.finish("abandoned", {"reason": "dry run"})
                outcome.status, outcome.reason = "planned", f"dry run: {plan.title}"
                return outcome
            lease.check()
            check_stop()
            self._now(f"writing and smoke-testing {mve.work_id}")
            if isinstance(plan, BenchmarkPlan):
                folder = benchmark_job.write_benchmark_experiment(plan, self.options.code, planned.planner, mve.path,
                                                                  planned.extra_files)
            else:
                folder = write_scaled_experiment(plan, self.options.code, est, planned.planner, mve.path,
                                                 source=planned.source, extra_files=planned.extra_files)
            outcome.folder = str(folder)
            smoke_test(folder, self.options.smoke_timeout_s)
            check_stop()
            if not self.options.launch:
                lease.check()
                lease.finish("abandoned", {"reason": "--no-launch"})
                outcome.status, outcome.reason = "scaffolded", "written and smoke-tested; not launched"
                return outcome
            if isinstance(plan, BenchmarkPlan):
                self._benchmark_and_record(mve, lease, planned, folder, outcome)
            else:
                self._train_and_record(mve, lease, planned, est, folder, outcome)
            return outcome
        except NoModel as exc:  # the offline planner declines: the MVE needs the LLM planner
            outcome.status, outcome.reason = "declined", str(exc)
            logger.warning("%s declined %s: %s", self.agent_id, mve.work_id, exc)
            try:
                lease.finish("abandoned", {"reason": str(exc)[:2000], "declined": True})
            except LeaseLost as lost:
                outcome.status, outcome.reason = "lost", f"{exc}; {lost}"
            return outcome
        except Stopped as exc:
            outcome.status, outcome.reason = "stopped", str(exc)
            logger.warning("%s: %s while working on %s", self.agent_id, exc, mve.work_id)
            aside = self._set_aside(folder, "stopped")
            if aside is not None:
                outcome.folder, outcome.reason = str(aside), f"{exc}; the unfinished folder is now {aside}"
            try:
                lease.finish("abandoned", {"reason": outcome.reason[:2000]})
            except LeaseLost as lost:
                outcome.reason += f"; {lost}"
            return outcome
        except LeaseLost as exc:
            # The work may belong to another agent now, folder included:
            # stop and touch nothing.
            outcome.status, outcome.reason = "lost", str(exc)
            logger.warning("%s: %s", self.agent_id, exc)
            return outcome
        except EXPECTED_FAILURES as exc:  # the MVE failed, not the agent: record, release, clean up
            billed = getattr(exc, "usage", None)
            if isinstance(billed, Usage) and not outcome.llm_tokens:
                outcome.llm_tokens, outcome.llm_cost_usd = billed.billed_tokens, billed.cost_usd
            outcome.reason = str(exc) if isinstance(exc, (StepFailed, LLMError)) else f"{type(exc).__name__}: {exc}"
            logger.warning("%s failed on %s: %s", self.agent_id, mve.work_id, outcome.reason)
            self._set_aside(folder, "failed")
            try:
                lease.finish("failed", {"reason": outcome.reason[:2000]})
            except LeaseLost as lost:  # taken over meanwhile: the new holder decides what stands
                outcome.status, outcome.reason = "lost", f"{outcome.reason}; {lost}"
            return outcome
        except Exception as exc:
            # A bug in our code: say where, leave nothing held or half-written,
            # and crash the agent so that `actors.main` reports it (exit 1).
            logger.exception("%s crashed on %s (a bug, not a failure of the MVE)", self.agent_id, mve.work_id)
            self._set_aside(folder, "crashed")
            try:
                lease.finish("failed", {"reason": f"agent crashed: {type(exc).__name__}: {exc}"[:2000]})
            except Exception as err:  # noqa: BLE001 - the crash, not this, is what the user must see
                logger.warning("%s: could not release %s: %s", self.agent_id, mve.work_id, err)
            raise
        finally:
            outcome.seconds = round(time.time() - t0, 1)
            if planned is not None and planned.note and outcome.status in ("scaled", "planned", "scaffolded"):
                outcome.reason = f"{planned.note}; {outcome.reason}"

    # -- steps -----------------------------------------------------------------------

    def _train_and_record(self, mve, lease, planned: Planned, est, folder, outcome) -> None:
        from train.run import append_run_to_ledger

        plan = planned.plan
        spec = plan.to_train_spec(folder)  # its model file, if any, from the folder just written
        mode = "full"
        if not self.gpus_available:
            spec, mode = laptop_spec(spec), f"laptop rehearsal (CPU, model capped at d128x2, {REHEARSAL_STEPS} steps)"
        lease.check()
        command = f"python {folder / 'train.py'}" + ("" if mode == "full" else " (laptop rehearsal)")
        self._now(f"training {mve.work_id} ({mode.split(' (')[0]})")
        with metrics.training_job_running(self.agent_id):
            # The hard limits hold for the real run; the laptop rehearsal is a cut-down copy.
            results = _train(spec, folder / "run", command, lease, limits=mode == "full",
                             storage=self.options.storage)
        metrics.record_training_spend(results.get("gpu_hours"), results.get("cost_usd"))
        lease.confirm()  # fencing: record only while our token still holds
        record = {
            **self._record_head(mve, lease, planned, mode),
            "plan": {"title": plan.title, "params": est.params, "gpus": plan.gpus, "hours": plan.hours,
                     "projected_gpu_hours": est.gpu_hours, "projected_cost_usd": est.cost_usd},
            **{k: results.get(k) for k in ("val_loss", "val_loss_at_start", "val_bpb", "val_accuracy", "steps",
                                           "tokens", "tokens_per_s", "peak_memory_mb", "wall_s", "gpu_hours",
                                           "cost_usd", "stop_reason", "checkpoint", "params") if k in results},
        }
        atomic_write_json(folder / "results.json", record)
        append_run_to_ledger(self.options.ledger, spec, results, folder / "run", f"python {folder / 'train.py'}")
        summary = {k: record.get(k) for k in ("val_loss", "gpu_hours", "cost_usd", "mode", "planner")}
        # Evicted in the instant between the check and the release: LeaseLost, and the
        # new holder's own run decides what stands.
        lease.finish("done", summary)
        outcome.status, outcome.reason, outcome.mode = "scaled", plan.title, mode
        outcome.val_loss = results.get("val_loss")
        outcome.gpu_hours, outcome.cost_usd = results.get("gpu_hours") or 0.0, results.get("cost_usd") or 0.0

    def _benchmark_and_record(self, mve, lease, planned: Planned, folder, outcome) -> None:
        """A benchmark plan's job: a Ray task holding its GPUs (see benchmark_job)."""
        plan = planned.plan
        lease.check()
        self._now(f"running the benchmark {mve.work_id}")
        with metrics.training_job_running(self.agent_id):
            result, mode = benchmark_job.launch(plan, folder, self.gpus_available, lease)
        if result["returncode"] != 0:
            raise StepFailed(f"the benchmark job failed (exit {result['returncode']}): "
                             f"{result['output_tail'][-400:]}")
        gpu_hours = result["wall_s"] / 3600 * (plan.gpus if mode == "full" else 0)
        lease.confirm()
        record = {**self._record_head(mve, lease, planned, mode), "kind": "benchmark",
                  "plan": {"title": plan.title, "gpus": plan.gpus, "hours": plan.hours, "command": plan.command},
                  "gpu_hours": gpu_hours, "cost_usd": gpu_hours * DEFAULT_USD_PER_GPU_HOUR, **result}
        atomic_write_json(folder / "results.json", record)
        lease.finish("done", {k: record.get(k) for k in ("gpu_hours", "cost_usd", "mode", "planner", "metrics")})
        outcome.status, outcome.reason, outcome.mode = "scaled", plan.title, mode
        outcome.gpu_hours, outcome.cost_usd = gpu_hours, record["cost_usd"]

    def _record_head(self, mve, lease, planned: Planned, mode: str) -> dict:
        return {"mve_id": mve.id, "agent": self.agent_id, "owner": self.owner, "token": lease.token, "mode": mode,
                "planner": planned.planner, **({"planner_note": planned.note} if planned.note else {}),
                **({"model_source": planned.source} if planned.source else {}), "llm": asdict(planned.usage)}

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _set_aside(folder: Path | None, why: str) -> Path | None:
        """Move a folder this agent wrote but did not finish out of the way (never
        delete it: its logs say what went wrong). Returns where it went."""
        if folder is None or not folder.exists() or (folder / "results.json").exists():
            return None
        try:
            return set_aside(folder, why)
        except (OSError, OwnershipError) as exc:  # not ours (never moved), or the rename failed
            logger.warning("could not set %s aside: %s", folder, exc)
            return None


def _train_in_task(spec_json: dict, out_dir: str, command: str, limits: bool, storage: str | None = None) -> dict:
    from train.run import run

    return run(TrainSpec.parse(spec_json, source="scaled experiment"), out_dir=out_dir, ledger=None, command=command,
               limits=limits, storage=storage)


def _train(spec: TrainSpec, out_dir: Path, command: str, lease: Lease, limits: bool = True,
           storage: str | None = None) -> dict:
    """Train through `train.run` in a Ray task of its own on this node, so that a
    stop request or a lost lease cancels it: killing the task's worker ends the
    Ray Train job it owns within seconds. In-process when Ray is not running."""
    import ray

    if not ray.is_initialized():
        from train.run import run

        return run(spec, out_dir=out_dir, ledger=None, command=command, limits=limits, storage=storage)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(_train_in_task).options(num_cpus=0, max_retries=0, scheduling_strategy=here,
                                               name=f"train:{spec.name}")
    ref = task.remote(spec.model_dump(mode="json"), str(out_dir), command, limits, storage)
    try:
        return wait_task(ref, lost=lease.lost.is_set, on_lost=lambda: LeaseLost(
            f"lease on {lease.work_id} lost during training: the training job was cancelled"))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, EXPECTED_FAILURES):  # the run failed, as runs do: the original error
            raise exc.cause from None
        raise
