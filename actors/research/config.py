"""The settings of one AutoResearch loop: a validated model, checked on construction.

Every entry point (`python -m actors.autoresearch run`, `actors.main`, tests,
benchmarks) builds a `ResearchConfig`; a bad value is refused here, naming the
flag and what it takes, before anything starts.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from train.spec import format_validation_error

ARTIFACT_CAP_BYTES = 16_000_000
DEFAULT_TIMEOUT_S = 15 * 60
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "examples" / "golf"
# Beside the WorkTracker's state: outlives `ray job submit` working directories.
DEFAULT_WORKSPACE = Path("~/.ray-autoresearch/workspace")
BRANCH_PREFIX = "autoresearch/"


class ResearchError(RuntimeError):
    """A problem the user can fix (bad repo, existing branch, branch held): one clear message."""


def default_tag(today: _dt.date | None = None) -> str:
    """`nov22` for 22 November, as the Parameter Golf records name their runs."""
    d = today or _dt.date.today()
    return d.strftime("%b").lower() + str(d.day)


class ResearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    repo: Path | None = Field(None, description="the git repository (None: a fresh workspace from the template)")
    workspace: Path = DEFAULT_WORKSPACE
    file: str = Field("train_gpt.py", description="the file under research, relative to the repository")
    tag: str = Field(default_factory=default_tag, description="the branch is autoresearch/TAG")
    resume: bool | Literal["auto"] = Field(False, description="continue the branch; 'auto': when it exists")
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0, description="wall-clock limit of one run; over it is a crash")
    gpus: int = Field(0, ge=0, description="GPUs each run holds (0: python on CPU)")
    cpus: float = Field(1.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict, description="exported into every run")
    cap_bytes: int = Field(ARTIFACT_CAP_BYTES, gt=0, description="the artifact limit, where one applies")
    limit_artifact: bool | None = Field(None, description="judge the artifact against cap_bytes; None: decided "
                                        "from the repository (a Parameter Golf one is limited)")
    metric: str | None = Field(None, description="regular expression of the score line (None: the run's final "
                               "val_bpb); also read from the repository's autoresearch.toml or program.md")
    offline: bool = False
    model: str | None = None
    seed: int = 0
    tracker_namespace: str | None = Field(None, description="None: no WorkTracker claim (library use)")
    owner: str | None = None

    @field_validator("workspace")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser()

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", v or ""):
            raise ValueError(f"{v!r}: use letters, digits, '.', '_' or '-' (at most 64)")
        return v

    @field_validator("file")
    @classmethod
    def _inside(cls, v: str) -> str:
        if not v or Path(v).is_absolute() or ".." in Path(v).parts:
            raise ValueError(f"must be a path inside the repository, got {v!r}")
        return v

    @field_validator("metric")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"{v!r} is not a regular expression ({exc})") from None
        return v

    @field_validator("env")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"{key!r} is not an environment variable name")
        return v

    @property
    def branch(self) -> str:
        return f"{BRANCH_PREFIX}{self.tag}"

    @property
    def artifact_cap(self) -> int | None:
        """The artifact limit in bytes, or None where the repository has none."""
        return None if self.limit_artifact is False else self.cap_bytes

    @classmethod
    def checked(cls, **values) -> "ResearchConfig":
        """Construct, turning a validation error into one ResearchError line that
        names the command-line flag."""
        try:
            return cls(**values)
        except ValidationError as exc:
            text = format_validation_error(exc)
            for name, flag in FLAGS.items():
                text = re.sub(rf"(^|; ){name}(\.[^:]*)?:", rf"\1{flag}:", text)
            raise ResearchError(text) from None


# The command-line flag of each field, for error messages.
FLAGS = {"repo": "--repo", "workspace": "--workspace", "file": "--file", "tag": "--tag", "resume": "--resume",
         "timeout_s": "--timeout-min", "gpus": "--gpus", "env": "--set", "model": "--model", "seed": "--seed",
         "metric": "--metric"}
