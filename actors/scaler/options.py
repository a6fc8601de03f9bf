"""`ScalerOptions`: how one ScalerAgent works, validated on construction.

Built once by the caller (`actors.main` from its flags, a test by hand) and
handed to every agent; a bad value fails here, naming the field and its
limit, before Ray starts anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from actors.tracker.actor import NAMESPACE
from train.storage import storage_field

SMOKE_TIMEOUT_S = 300.0
# A failed (or dry-run/no-launch) MVE waits this long before any agent tries it
# again, so that one MVE does not take every agent's turn in the same round.
RETRY_FAILED_AFTER_S = 600.0
# One MVE's agentic session stays under about $2 (Claude Sonnet 4.5 prices: a
# 40-turn session re-reading a ~40k-token cached context costs about $1).
AGENT_MAX_TURNS = 40
AGENT_MAX_TOKENS = 3_000_000  # billed: input, output, cache writes and cache reads
AGENT_MAX_USD = 2.0


class ScalerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    experiments: Path = Field(description="folder of NNN_slug MVE folders")
    code: Path = Field(description="where code/NNN_scaled folders are written")
    proposals: Path | None = Field(None, description="folder of NNN_*.md proposals (default: beside experiments)")
    ledger: Path | None = Field(None, description="the ledger file (default: EXPERIMENTS/EXPERIMENTS.md)")
    launch: bool = Field(True, description="train the scaled experiment (False: write and smoke-test only)")
    dry_run: bool = Field(False, description="plan only: write nothing, train nothing")
    model: str | None = Field(None, min_length=1, description="Claude model (default: $ANTHROPIC_MODEL or the default)")
    offline: bool = Field(False, description="use the offline planner even when ANTHROPIC_API_KEY is set")
    target_params: int = Field(25_000_000, ge=10_000, le=10_000_000_000,
                               description="parameters the offline planner scales a model to")
    planner: Literal["agentic", "single"] = Field(
        "agentic", description="with a key: an agentic session with tools (agentic) or one tool-use call (single)")
    agent_max_turns: int = Field(AGENT_MAX_TURNS, ge=1, le=500, description="turns of one MVE's agentic session")
    agent_max_tokens: int = Field(AGENT_MAX_TOKENS, ge=1000, description="billed tokens of one MVE's session")
    agent_max_usd: float = Field(AGENT_MAX_USD, gt=0, le=100, description="dollars of one MVE's session")
    gpus_available: bool | None = Field(None, description="whether the cluster has GPUs (default: ask Ray)")
    smoke_timeout_s: float = Field(SMOKE_TIMEOUT_S, gt=0, le=3600, description="limit of the smoke test")
    retry_failed_after_s: float = Field(RETRY_FAILED_AFTER_S, ge=0, description="wait before retrying a failed MVE")
    tracker_namespace: str = Field(NAMESPACE, min_length=1, description="Ray namespace of the WorkTracker")
    storage: str | None = Field(None, description="where training keeps checkpoints, reachable from every node "
                                "(train.storage; default $RAY_AUTORESEARCH_STORAGE, else beside each run)")

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str | None) -> str | None:
        return storage_field(v)

    # Absolute here, in the caller's working directory: the agent may run in
    # another process whose working directory differs.
    @field_validator("experiments", "proposals")
    @classmethod
    def _existing_folder(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_dir():
            raise ValueError(f"folder not found: {path}")
        return path.resolve() if path is not None else None

    @field_validator("code")
    @classmethod
    def _code_folder(cls, path: Path) -> Path:
        if path.exists() and not path.is_dir():
            raise ValueError(f"not a folder: {path}")
        return path.resolve()

    @field_validator("ledger")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return path.resolve() if path is not None else None

    @model_validator(mode="after")
    def _default_ledger(self) -> ScalerOptions:
        if self.ledger is None:
            object.__setattr__(self, "ledger", self.experiments / "EXPERIMENTS.md")  # frozen: set while validating
        return self
