"""The ScalerAgent: claim a scalable MVE, plan it, scaffold it, train it, record it.

Each agent works the shared folders; the WorkTracker's leases keep any number
of agents from doing the same MVE twice. For one MVE an agent:

1. claims `scale:NNN` and heartbeats from a thread (a refused heartbeat stops it);
2. reads the MVE's documents, code and proposal;
3. designs a ScalePlan (Claude through the Anthropic SDK when a key is set,
   else the offline planner) and validates it against the hard limits;
4. writes `code/NNN_scaled/` atomically and smoke-tests it in a subprocess with
   a scrubbed environment and a timeout;
5. trains it through `train.run` with the plan's GPUs; on a cluster without
   GPUs (a laptop) it runs a rehearsal instead: CPU workers, the model capped
   at d_model 128 x 2 layers, a 40-step budget, marked as such in results.json;
6. writes `code/NNN_scaled/results.json` and a ledger entry only after a
   heartbeat confirms its token is still valid, and releases the claim as done.

Any failure releases the claim as failed, with the reason, and removes the
folder it was writing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from actors.shared import metrics
from actors.shared.llm import LLMError, PlanRejected, PlanRequest, Planner, Usage, make_planner
from actors.scaler.discovery import MVE, SCALE_PREFIX, find_mves, normalise_claim
from actors.scaler.planners import OfflinePlanner
from actors.scaler.plan import ScalePlan
from actors.scaler.scaffold import write_scaled_experiment
from actors.tracker.client import Lease, LeaseLost, LeaseRefused, TrackerClient
from actors.tracker.actor import ACTOR_NAME, NAMESPACE
from train.estimate import check_fits
from train.spec import TrainSpec

logger = logging.getLogger(__name__)

SMOKE_TIMEOUT_S = 300
# Environment a generated experiment's smoke test may see: nothing secret, no
# Ray address or token, no cloud credentials.
SAFE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
LAPTOP_OVERRIDES = (
    "resources.gpus=0", "resources.cpu_workers=1", "optim.batch_size=8", "optim.warmup_steps=5",
    "budget.max_steps=40", "budget.eval_interval=20", "budget.eval_batches=4", "budget.max_hours=0.1",
    "budget.patience=null", "budget.target=null", "precision=fp32", "logging.tensorboard=false",
)
MAX_DOC_CHARS = 60_000  # per document sent to the planner
# A failed (or dry-run/no-launch) MVE waits this long before any agent tries it
# again, so that one MVE does not take every agent's turn in the same round.
RETRY_FAILED_AFTER_S = 600.0


class StepFailed(RuntimeError):
    """A step of scaling one MVE failed; the message says which and why."""


@dataclass
class Outcome:
    mve_id: str
    status: str  # scaled, failed, planned (--dry-run), scaffolded (--no-launch), lost
    reason: str
    agent: str
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


def scrubbed_env() -> dict[str, str]:
    return {k: os.environ[k] for k in SAFE_ENV_KEYS if k in os.environ}


def laptop_spec(spec: TrainSpec) -> TrainSpec:
    """The plan's spec cut down to a CPU rehearsal that runs in about a minute."""
    m = spec.model
    d_model = min(m.d_model, 128)
    heads = 2 if d_model % 2 == 0 else 1
    kv = 1 if (m.n_kv_heads is not None and m.n_kv_heads < m.n_heads) else None
    return spec.with_overrides([
        *LAPTOP_OVERRIDES, f"model.d_model={d_model}", f"model.n_layers={min(m.n_layers, 2)}",
        f"model.n_heads={heads}", f"model.n_kv_heads={'null' if kv is None else kv}",
    ])


class ScalerAgent:
    """One agent. As a Ray actor: `ray.remote(ScalerAgent)`; in-process works too."""

    def __init__(
        self,
        agent_id: str,
        experiments: str | Path,
        code: str | Path,
        proposals: str | Path | None = None,
        *,
        tracker=None,
        tracker_namespace: str = NAMESPACE,
        launch: bool = True,
        dry_run: bool = False,
        model: str | None = None,
        planner: Planner | None = None,
        ledger: str | Path | None = None,
        gpus_available: bool | None = None,
        smoke_timeout_s: float = SMOKE_TIMEOUT_S,
        retry_failed_after_s: float = RETRY_FAILED_AFTER_S,
    ):
        import ray

        self.agent_id = agent_id
        self.experiments = Path(experiments).resolve()
        self.code = Path(code).resolve()
        self.proposals = Path(proposals).resolve() if proposals else None
        handle = tracker or ray.get_actor(ACTOR_NAME, namespace=tracker_namespace)
        self.tracker = TrackerClient(handle)
        self.launch, self.dry_run = launch, dry_run
        # The API key is read here, in the process that uses it, never shipped.
        self.planner = planner if planner is not None else make_planner(model)
        self.offline = OfflinePlanner()
        self.ledger = Path(ledger).resolve() if ledger else self.experiments / "EXPERIMENTS.md"
        if gpus_available is None:
            gpus_available = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
        self.gpus_available = gpus_available
        self.smoke_timeout_s = smoke_timeout_s
        self.retry_failed_after_s = retry_failed_after_s

    # -- the loop ------------------------------------------------------------------

    def run_once(self) -> list[dict]:
        """Scale every MVE this agent can claim, one at a time; return outcomes."""
        outcomes: list[Outcome] = []
        tried: set[str] = set()
        while True:
            held, recent = self._claim_states()
            tried |= recent
            mves = find_mves(self.experiments, self.code, self.proposals, claimed=held)
            todo = [m for m in mves if m.scalable and m.id not in tried]
            if not todo:
                break
            mve = todo[0]
            tried.add(mve.id)
            lease = self.tracker.hold(mve.work_id, self.agent_id)
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
            elif c.state.value in ("failed", "abandoned") and c.released_at \
                    and now - c.released_at < self.retry_failed_after_s:
                recent.add(normalise_claim(c.work_id))
        return held, recent

    def _scale(self, mve: MVE, lease: Lease) -> Outcome:
        t0 = time.time()
        outcome = Outcome(mve.id, "failed", "", self.agent_id, token=lease.token)
        folder: Path | None = None
        usage = Usage()
        try:
            plan, usage, planner_name = self._plan(mve, lease)
            outcome.llm_tokens = usage.input_tokens + usage.output_tokens
            outcome.llm_cost_usd = usage.cost_usd
            try:
                est = check_fits(plan.to_train_spec())
            except ValueError as exc:
                raise StepFailed(f"plan refused: {exc}") from None
            if self.dry_run:
                lease.finish("abandoned", {"reason": "dry run"})
                outcome.status, outcome.reason = "planned", f"dry run: {plan.title}"
                return outcome
            lease.check()
            folder = write_scaled_experiment(plan, self.code, est, planner_name, mve.path)
            outcome.folder = str(folder)
            self._smoke(folder)
            if not self.launch:
                lease.check()
                lease.finish("abandoned", {"reason": "--no-launch"})
                outcome.status, outcome.reason = "scaffolded", "written and smoke-tested; not launched"
                return outcome
            self._train_and_record(mve, lease, plan, est, planner_name, usage, folder, outcome)
            return outcome
        except LeaseLost as exc:
            # The work may belong to another agent now, folder included:
            # stop and touch nothing.
            outcome.status, outcome.reason = "lost", str(exc)
            logger.warning("%s: %s", self.agent_id, exc)
            return outcome
        except Exception as exc:  # every other failure: record it, release, clean up
            outcome.reason = str(exc) if isinstance(exc, (StepFailed, LLMError)) else f"{type(exc).__name__}: {exc}"
            logger.warning("%s failed on %s: %s", self.agent_id, mve.work_id, outcome.reason)
            self._remove(folder)
            lease.finish("failed", {"reason": outcome.reason[:2000]})
            return outcome
        finally:
            outcome.seconds = round(time.time() - t0, 1)

    # -- steps -----------------------------------------------------------------------

    def _plan(self, mve: MVE, lease: Lease) -> tuple[ScalePlan, Usage, str]:
        if self.planner is None:
            return self.offline.design(mve.id, mve.results, title=""), Usage(), self.offline.name
        request = PlanRequest(mve_id=mve.id, documents=self._documents(mve))
        usage = Usage()
        for attempt in (1, 2):
            lease.check()
            try:
                plan, used = self.planner.design_plan(request)
                usage.add(used)
                return plan, usage, self.planner.name
            except PlanRejected as exc:
                if exc.usage is not None:
                    usage.add(exc.usage)
                if attempt == 2:
                    raise StepFailed(f"the planner's plan was rejected twice: {exc.reason}") from None
                request = PlanRequest(mve.id, request.documents, request.instructions, feedback=exc.reason)
        raise AssertionError("unreachable")

    def _documents(self, mve: MVE) -> dict[str, str]:
        docs: dict[str, str] = {}
        files = list(mve.docs) + sorted(p for p in mve.path.rglob("*") if p.suffix in (".py", ".json", ".yaml", ".csv"))
        if mve.proposal is not None:
            files.append(mve.proposal)
        for path in files:
            try:
                docs[str(path.relative_to(mve.path.parent.parent))] = path.read_text(errors="replace")[:MAX_DOC_CHARS]
            except (OSError, ValueError):
                continue
        return docs

    def _smoke(self, folder: Path) -> None:
        try:
            proc = subprocess.run(
                [sys.executable, "train.py", "--smoke"], cwd=folder, env=scrubbed_env(),
                capture_output=True, text=True, timeout=self.smoke_timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise StepFailed(f"smoke test timed out after {self.smoke_timeout_s:.0f}s") from None
        if proc.returncode != 0:
            tail = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or ["no output"])[-1]
            try:
                report = json.loads(tail)
                failed = [f"{name} {check}" for name, check in report.get("checks", {}).items() if not check.get("ok")]
                tail = "; ".join(failed) or report.get("error", tail)
            except ValueError:
                pass
            raise StepFailed(f"smoke test failed: {tail[:500]}")

    def _train_and_record(self, mve, lease, plan, est, planner_name, usage, folder, outcome) -> None:
        from train.run import append_run_to_ledger, run

        spec = plan.to_train_spec()
        mode = "full"
        if not self.gpus_available:
            spec, mode = laptop_spec(spec), "laptop rehearsal (CPU, model capped at d128x2, 40 steps)"
        lease.check()
        with metrics.training_job_running(self.agent_id):
            results = run(spec, out_dir=folder / "run", ledger=None,
                          command=f"python {folder / 'train.py'}" + ("" if mode == "full" else " (laptop rehearsal)"))
        metrics.record_training_spend(results.get("gpu_hours"), results.get("cost_usd"))
        lease.confirm()  # fencing: record only while our token still holds
        record = {
            "mve_id": mve.id, "agent": self.agent_id, "token": lease.token, "mode": mode, "planner": planner_name,
            "plan": {"title": plan.title, "params": est.params, "gpus": plan.gpus, "hours": plan.hours,
                     "projected_gpu_hours": est.gpu_hours, "projected_cost_usd": est.cost_usd},
            "llm": asdict(usage),
            **{k: results.get(k) for k in ("val_loss", "val_loss_at_start", "val_bpb", "val_accuracy", "steps",
                                           "tokens", "tokens_per_s", "peak_memory_mb", "wall_s", "gpu_hours",
                                           "cost_usd", "stop_reason", "checkpoint") if k in results},
        }
        tmp = folder / "results.json.tmp"
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, folder / "results.json")
        append_run_to_ledger(self.ledger, spec, results, folder / "run", f"python {folder / 'train.py'}")
        summary = {k: record.get(k) for k in ("val_loss", "gpu_hours", "cost_usd", "mode")}
        # Evicted in the instant between the check and the release: LeaseLost, and the
        # new holder's own run decides what stands.
        lease.finish("done", summary)
        outcome.status, outcome.reason, outcome.mode = "scaled", plan.title, mode
        outcome.val_loss = results.get("val_loss")
        outcome.gpu_hours, outcome.cost_usd = results.get("gpu_hours") or 0.0, results.get("cost_usd") or 0.0

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _remove(folder: Path | None) -> None:
        """Remove a folder this agent wrote but did not finish."""
        if folder is not None and folder.exists() and not (folder / "results.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
