"""The "Cluster" section: the WorkTracker's leases and what the work cost.

Leases come from the tracker's Parquet snapshot (read, never written, never set
aside), so this works with the cluster down, on a copy of the file. The snapshot
changes on every claim and release, not on heartbeats: a live lease's expiry
there may be older than the tracker's own. Spend is added up from the files
that record it: the scaled experiments' results.json (training and the
planner's LLM use), every run in the ledger, and the sweeps' trials.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from actors.reporting.ledger import LedgerEntry
from actors.reporting.readers import Notes
from actors.reporting.scaled import ScaledRow
from actors.reporting.sweeps import SweepFolder
from actors.tracker.rules import Claim
from actors.tracker.store import SnapshotStore

OFFLINE = "offline (no LLM)"


@dataclass
class LLMSpend:
    model: str
    tokens: int = 0
    cost_usd: float = 0.0
    uses: int = 0   # results files that recorded it


@dataclass
class Spend:
    source: str
    runs: int
    gpu_hours: float | None
    cost_usd: float | None


@dataclass
class ClusterSection:
    state: Path | None
    snapshot_time: float | None = None     # the snapshot file's modification time
    claims: list[Claim] = field(default_factory=list)
    llm: list[LLMSpend] = field(default_factory=list)
    spend: list[Spend] = field(default_factory=list)
    notes: Notes = field(default_factory=Notes)

    @property
    def held(self) -> list[Claim]:
        return [c for c in self.claims if c.live]

    @property
    def evicted(self) -> list[Claim]:
        return [c for c in self.claims if c.state.value == "evicted"]

    @property
    def failed(self) -> list[Claim]:
        return [c for c in self.claims if c.state.value in ("failed", "abandoned")]

    @property
    def by_state(self) -> list[tuple[str, int]]:
        return sorted(Counter(c.state.value for c in self.claims).items())


def read_claims(state: Path | None, notes: Notes) -> tuple[list[Claim], float | None]:
    """Every lease record in the snapshot at `state`, and the snapshot's time."""
    if state is None:
        return [], None
    store = SnapshotStore(state)
    if not store.path.exists() and not store.prev_path.exists():
        notes.add(f"no WorkTracker state at {state}")
        return [], None
    loaded = store.load(set_aside=False)
    for w in loaded.warnings:
        notes.add(w)
    source = store.path if store.path.exists() else store.prev_path
    return loaded.records, source.stat().st_mtime


def _llm(rows: list[ScaledRow]) -> list[LLMSpend]:
    by: dict[str, LLMSpend] = {}
    for r in rows:
        if r.llm_tokens is None and r.planner is None:
            continue
        planner = r.planner or "-"
        # The planner's name is "anthropic:<model>" for Claude, "offline" for the rule-based one.
        model = planner.split(":", 1)[1] if planner.startswith("anthropic:") else (
            OFFLINE if planner == "offline" else planner)
        s = by.setdefault(model, LLMSpend(model))
        s.tokens += r.llm_tokens or 0
        s.cost_usd += r.llm_cost_usd or 0.0
        s.uses += 1
    return sorted(by.values(), key=lambda s: (-s.cost_usd, s.model))


def _total(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def cluster_section(state: Path | None, claims: list[Claim], snapshot_time: float | None, notes: Notes,
                    scaled: list[ScaledRow], ledger: list[LedgerEntry], sweeps: list[SweepFolder]) -> ClusterSection:
    section = ClusterSection(state, snapshot_time, claims, notes=notes)
    section.llm = _llm(scaled)
    ran = [r for r in scaled if r.gpu_hours is not None or r.cost_usd is not None]
    section.spend.append(Spend("scaled experiments (code/NNN_scaled/results.json)", len(ran),
                               _total([r.gpu_hours for r in ran]), _total([r.cost_usd for r in ran])))
    section.spend.append(Spend("every training run in the ledger (EXPERIMENTS.md)", len(ledger),
                               _total([e.metric("gpu_hours") for e in ledger]),
                               _total([e.metric("cost_usd") for e in ledger])))
    hw = [f for f in sweeps if f.trials]
    if hw:
        section.spend.append(Spend("hardware sweeps (trials.csv; nominal GPUs with --local)",
                                   sum(f.trials for f in hw), _total([f.gpu_hours for f in hw]),
                                   _total([f.cost_usd for f in hw])))
    return section

