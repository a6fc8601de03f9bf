"""The "Scaled experiments" section: one row per MVE.

For each MVE that `actors.scaler.discovery.find_mves` finds: its verdict and
who judged it, where it stands (running, scaled, scaled by hand, failed with the
reason the agent gave, pending, not scalable), the plan (from plan.json, or the
fields a hand-written results.json has), the final metric against the MVE's and
its baseline's, GPU-hours and dollars, and links to its folders, README and
ledger entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from actors.reporting.ledger import LedgerEntry, entries_for
from actors.reporting.readers import Notes, dig, number, read_json_object
from actors.scaler.discovery import SCALE_PREFIX, find_mves
from actors.tracker.rules import Claim

# A scaled folder is ours when the scaffold wrote it: it carries the scaler's marker
# (actors.scaler.ownership.MARKER); older folders of ours are known by their plan.json.
OURS_FILES = (".ray-autoresearch.json", "plan.json")

# The MVE's `metric` name -> the key a training run's results.json gives it under.
RUN_METRIC_KEYS = {"accuracy": "val_accuracy", "val_accuracy": "val_accuracy", "val_bpb": "val_bpb",
                   "bpb": "val_bpb", "loss": "val_loss", "val_loss": "val_loss"}


@dataclass
class ScaledRow:
    id: str
    slug: str
    mve_dir: Path
    mve_doc: Path | None
    verdict: str
    verdict_evidence: str
    judge: str
    status: str                      # running, scaled, scaled by hand, failed, pending, not scalable, ...
    status_detail: str
    scaled_dir: Path | None          # the NNN_scaled folder, when there is one
    readme: Path | None
    title: str | None = None         # the plan's one-line title
    model: str | None = None         # "gpt d512 x 8"
    params: float | None = None
    benchmark: str | None = None
    gpus: float | None = None
    hours: float | None = None
    mode: str | None = None          # "laptop rehearsal ..." for a CPU rehearsal
    metric: str | None = None
    value: float | None = None       # the scaled run's final metric
    mve_value: float | None = None
    baseline_value: float | None = None
    baseline_name: str | None = None
    gpu_hours: float | None = None
    cost_usd: float | None = None
    projected_gpu_hours: float | None = None
    projected_cost_usd: float | None = None
    planner: str | None = None
    llm_tokens: int | None = None
    llm_cost_usd: float | None = None
    ledger: list[LedgerEntry] = field(default_factory=list)


@dataclass
class ScaledSection:
    experiments: Path | None
    code: Path | None
    rows: list[ScaledRow] = field(default_factory=list)
    notes: Notes = field(default_factory=Notes)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)


def is_ours(scaled_dir: Path) -> bool:
    return any((scaled_dir / name).exists() for name in OURS_FILES)


def _model_text(model: dict | None) -> str | None:
    if not isinstance(model, dict) or not model.get("family"):
        return None
    size = f" d{model['d_model']} x {model['n_layers']}" if model.get("d_model") and model.get("n_layers") else ""
    return f"{model['family']}{size}"


def _status(mve, scaled_dir: Path, run: dict | None, claim: Claim | None) -> tuple[str, str]:
    if claim is not None and claim.live:
        return "running", f"claimed by {claim.owner} (token {claim.token})"
    has_dir = scaled_dir.is_dir()
    if run is not None or (scaled_dir / "results.json").is_file():
        if has_dir and not is_ours(scaled_dir):
            return "scaled by hand", f"{scaled_dir.name}/ was not written by a ScalerAgent"
        return "scaled", (run or {}).get("mode") or "results.json written"
    if has_dir and not is_ours(scaled_dir):
        return "scaled by hand", f"{scaled_dir.name}/ has no results.json (planned by hand or run elsewhere)"
    if claim is not None and claim.state.value == "failed":
        reason = dig(claim.result, "reason") or "no reason recorded"
        return "failed", f"{reason} (attempt {claim.attempts})"
    # A status word the scan gives itself (scalable, pending, ambiguous...) wins over ours.
    own = getattr(mve, "status", None)
    if isinstance(own, str) and own and own != "scalable":
        return own, mve.reason
    if mve.scalable:
        return "pending", "scalable; no agent has claimed it yet"
    if has_dir:
        return "unfinished", f"{scaled_dir.name}/ has no results.json; " + mve.reason
    return "not scalable", mve.reason


def _metric(mve_results: dict, run: dict) -> tuple[str | None, float | None]:
    """The MVE's metric name and the scaled run's value of it."""
    name = mve_results.get("metric") or run.get("metric")
    key = RUN_METRIC_KEYS.get(str(name).lower()) if name else None
    if key and number(run.get(key)) is not None:
        return name, number(run.get(key))
    if name and run.get("metric") == name:  # a hand-written results.json: metric + value
        return name, number(run.get("value"))
    if number(run.get("val_loss")) is not None:
        return "val_loss", number(run.get("val_loss"))
    return name, None


def _row(mve, code: Path, claims: dict[str, Claim], ledger: list[LedgerEntry], notes: Notes) -> ScaledRow:
    scaled_dir = code / f"{mve.id}_scaled"
    run = read_json_object(scaled_dir / "results.json", notes)
    plan = read_json_object(scaled_dir / "plan.json", notes) or {}
    status, detail = _status(mve, scaled_dir, run, claims.get(mve.id))
    run = run or {}
    mve_results = mve.results or {}
    metric, value = _metric(mve_results, run)
    baseline = run.get("baseline") if isinstance(run.get("baseline"), dict) else mve_results.get("baseline")
    baseline = baseline if isinstance(baseline, dict) else {}
    verdict = mve.verdict
    planned = run.get("plan") if isinstance(run.get("plan"), dict) else {}
    llm = run.get("llm") if isinstance(run.get("llm"), dict) else {}
    tokens = [number(llm.get(k)) for k in ("input_tokens", "output_tokens")]
    return ScaledRow(
        id=mve.id, slug=mve.slug, mve_dir=mve.path, mve_doc=mve.docs[0] if mve.docs else None,
        verdict=verdict.label, verdict_evidence=verdict.evidence,
        judge=getattr(mve, "judge", None) or getattr(verdict, "judge", None) or "heuristics",
        status=status, status_detail=detail,
        scaled_dir=scaled_dir if scaled_dir.is_dir() else None,
        readme=scaled_dir / "README.md" if (scaled_dir / "README.md").is_file() else None,
        title=plan.get("title") or planned.get("title"),
        model=_model_text(plan.get("model")) or (f"{run['model_family']}" if run.get("model_family") else None),
        params=number(plan.get("target_params")) or number(planned.get("params")) or number(run.get("params")),
        benchmark=plan.get("benchmark") or run.get("benchmark"),
        gpus=number(plan.get("gpus")) or number(planned.get("gpus")) or number(run.get("gpus")),
        hours=number(plan.get("hours")) or number(planned.get("hours")) or number(run.get("hours")),
        mode=run.get("mode"), metric=metric, value=value,
        mve_value=number(mve_results.get("value")),
        baseline_value=number(baseline.get("value")), baseline_name=baseline.get("name"),
        gpu_hours=number(run.get("gpu_hours")), cost_usd=number(run.get("cost_usd")),
        projected_gpu_hours=number(planned.get("projected_gpu_hours")),
        projected_cost_usd=number(planned.get("projected_cost_usd")),
        planner=run.get("planner"),
        llm_tokens=int(sum(t for t in tokens if t is not None)) if llm else None,
        llm_cost_usd=number(llm.get("cost_usd")),
        ledger=entries_for(ledger, f"{mve.id}_scaled"),
    )


def scaled_section(experiments: Path | None, code: Path | None, claims: list[Claim],
                   ledger: list[LedgerEntry]) -> ScaledSection:
    """The rows for every MVE under `experiments` (code/NNN_scaled under `code`)."""
    section = ScaledSection(experiments, code)
    if experiments is None:
        return section
    if not experiments.is_dir():
        section.notes.add(f"no experiments folder at {experiments}")
        return section
    code = code if code is not None else experiments.parent / "code"
    section.code = code
    by_id = {c.work_id[len(SCALE_PREFIX):]: c for c in claims if c.work_id.startswith(SCALE_PREFIX)}
    live = {i for i, c in by_id.items() if c.live}
    for mve in find_mves(experiments, code, claimed=live):
        section.rows.append(_row(mve, code, by_id, ledger, section.notes))
    known = {r.id for r in section.rows}
    # Scaled folders whose MVE is not (or no longer) in the experiments folder.
    for folder in sorted(code.glob("*_scaled")) if code.is_dir() else []:
        m = re.fullmatch(r"(\d{3})_scaled", folder.name)
        if m and m.group(1) not in known:
            section.notes.add(f"{folder} has no MVE folder under {experiments}")
    return section
