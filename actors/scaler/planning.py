"""How a ScalerAgent gets the plan for one MVE: which planner, and what when it fails.

- No ANTHROPIC_API_KEY (or --offline): the offline planner (the MVE's own model
  ported, else the built-in family its results.json names; an MVE with neither
  is declined: NoModel, "needs the LLM planner").
- With a key: the agentic session (`--planner agentic`, the default: Claude
  reads, writes, smoke-tests, fixes and submits in a staging folder) or one
  tool-use call (`--planner single`).
- When Claude cannot be had after the SDK's retries (an overloaded API, a
  network down, bodies that are not JSON: any LLMError that is not a rejected
  reply), the MVE is planned offline instead, and the outcome, the log, the
  README and results.json say so. A budget stop or rejected replies are the
  MVE's failure, not the API's: no fallback.
- `fits`: the plan against the hard limits; a model that is code is built
  only in a sandboxed child (`model_port.sandboxed_fits`).

An agentic session's transcript goes into the scaled folder (agent/transcript.json);
when the session ends without a plan its staging folder, transcript included,
is set aside as `.NNN_scaled.<why>-<time>` for review.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from actors.scaler.agent_tools import Workbench
from actors.scaler.agentic import AgenticSession, Budget
from actors.scaler.discovery import MVE
from actors.scaler.model_port import NoModel, code_folders
from actors.scaler.options import ScalerOptions
from actors.scaler.plan import BenchmarkPlan, ScalePlan
from actors.scaler.planners import ClaudePlanner, OfflinePlanner
from actors.scaler.steps import StepFailed
from actors.shared.llm import LLMClient, LLMError, ReplyRejected
from actors.shared.pricing import Usage
from actors.tracker.client import LeaseLost
from train.estimate import Estimate

log = logging.getLogger(__name__)

MAX_DOC_CHARS = 60_000  # per document sent to the planner
TRANSCRIPT = "agent/transcript.json"


@dataclass
class Planned:
    plan: ScalePlan | BenchmarkPlan
    usage: Usage
    planner: str  # "offline", "anthropic:MODEL (agentic)", "offline (Claude failed: ...)"
    estimate: Estimate | None = None  # when the planner already checked it in a sandbox
    source: str = ""  # where the model came from
    note: str = ""  # said in the outcome: the fallback
    extra_files: dict[str, str] = field(default_factory=dict)  # ours: the transcript


class Planning:
    def __init__(self, options: ScalerOptions, llm: LLMClient | None) -> None:
        self.options, self.llm = options, llm
        self.offline = OfflinePlanner(target_params=options.target_params)

    def plan(self, mve: MVE, lease) -> Planned:
        if self.llm is None:
            return self._offline(mve)
        lease.check()
        try:
            if self.options.planner == "single":
                return self._single(mve)
            return self._agentic(mve, lease)
        except ReplyRejected as exc:
            raise StepFailed(f"the planner's plan was rejected twice: {exc.reason}", usage=exc.usage) from None
        except LLMError as exc:
            note = f"planned offline: Claude failed after the SDK's retries ({exc})"
            log.warning("MVE %s: %s", mve.id, note)
            try:
                planned = self._offline(mve)
            except NoModel as declined:
                raise StepFailed(f"Claude failed ({exc}), and the offline planner cannot plan it: {declined}",
                                 usage=exc.usage) from None
            planned.usage, planned.note = exc.usage, note
            planned.planner = f"offline (Claude failed: {exc.kind or exc.status or 'error'})"
            return planned

    # -- the planners ------------------------------------------------------------

    def _offline(self, mve: MVE) -> Planned:
        try:
            plan, source, est = self.offline.plan_mve(mve.id, mve_code_folders(mve), mve.results)
        except ValueError as exc:  # what the MVE's results.json says cannot be planned
            raise StepFailed(f"offline planner: {exc}") from None
        return Planned(plan, Usage(), self.offline.name, estimate=Estimate(**est) if est else None, source=source)

    def _single(self, mve: MVE) -> Planned:
        planner = ClaudePlanner(self.llm)
        plan, usage = planner.design_plan(mve.id, self._documents(mve))
        return Planned(plan, usage, planner.name)

    def _agentic(self, mve: MVE, lease) -> Planned:
        opts = self.options
        staging = opts.code / f".{mve.id}_scaled.staging-{uuid.uuid4().hex[:8]}"
        bench = Workbench(mve_id=mve.id, readable=self._readable(mve), staging=staging, code_dir=opts.code,
                          smoke_timeout_s=opts.smoke_timeout_s)
        session = AgenticSession(self.llm, bench, lease=lease, documents=self._documents(mve, code=False),
                                 budget=Budget(opts.agent_max_turns, opts.agent_max_tokens, opts.agent_max_usd))
        try:
            result = session.run()
        except BaseException as exc:
            why = ("lost" if isinstance(exc, LeaseLost) else "failed" if isinstance(exc, (StepFailed, LLMError))
                   else "stopped")
            aside = _set_staging_aside(staging, session.redacted(), why)
            if isinstance(exc, StepFailed) and aside is not None:
                exc.args = (f"{exc}; the session's files and transcript are in {aside}",)
            raise
        shutil.rmtree(staging, ignore_errors=True)
        transcript = json.dumps(result.transcript, indent=1)
        est = Estimate(**result.estimate) if result.estimate and isinstance(result.plan, ScalePlan) else None
        return Planned(result.plan, result.usage, f"{self.llm.model} (agentic session)", estimate=est,
                       source="written by Claude in an agentic session", extra_files={TRANSCRIPT: transcript})

    # -- limits ------------------------------------------------------------------

    def fits(self, planned: Planned) -> Estimate | None:
        """The plan's estimate within the hard limits, or StepFailed naming what
        it breaks. A benchmark plan has no model to estimate (None)."""
        plan = planned.plan
        if isinstance(plan, BenchmarkPlan):
            return None
        if planned.estimate is not None:  # checked already, in the sandboxed child
            return planned.estimate
        try:
            return plan.checked_estimate()  # a model that is code: built in a sandboxed child
        except ValueError as exc:
            raise StepFailed(f"plan refused: {exc}") from None

    # -- what Claude reads ---------------------------------------------------------

    def _readable(self, mve: MVE) -> dict[str, Path]:
        """Every file of the MVE a planner reads (notes, code and records of its
        folders, the proposal), by the name Claude sees: relative to the research folder."""
        return {_name(path, mve): path for path in mve.source_files()}

    def _documents(self, mve: MVE, code: bool = True) -> dict[str, str]:
        """The MVE's files by name (without `code`: its notes, results and proposal only)."""
        docs = {}
        for name, path in self._readable(mve).items():
            if not code and path.suffix == ".py":
                continue
            try:
                docs[name] = path.read_text(errors="replace")[:MAX_DOC_CHARS]
            except OSError:
                continue
        return docs


def mve_code_folders(mve: MVE) -> list[Path]:
    """Where an MVE's code is: code/NNN/, then its own folder (not a folder of
    flat result files shared by many MVEs)."""
    return code_folders(mve.code_path, mve.path if mve.layout != "flat" else None)


def _name(path: Path, mve: MVE) -> str:
    root = mve.root or mve.path.parent.parent
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return path.name


def _set_staging_aside(staging: Path, transcript: list[dict], why: str) -> Path | None:
    """Keep what a session that ended without a plan wrote, with its transcript."""
    try:
        (staging / "agent").mkdir(parents=True, exist_ok=True)
        (staging / TRANSCRIPT).write_text(json.dumps(transcript, indent=1))
        aside = staging.with_name(staging.name.split(".staging-")[0] + f".{why}-{time.strftime('%Y%m%d-%H%M%S')}"
                                  + f"-{uuid.uuid4().hex[:4]}")
        staging.rename(aside)
        return aside
    except OSError as exc:
        log.warning("could not keep the session's files in %s: %s", staging, exc)
        return None
