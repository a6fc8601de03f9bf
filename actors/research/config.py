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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from train.spec import format_validation_error

ARTIFACT_CAP_BYTES = 16_000_000
DEFAULT_TIMEOUT_S = 15 * 60
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "examples" / "golf"
# Beside the WorkTracker's state: outlives `ray job submit` working directories.
DEFAULT_WORKSPACE = Path("~/.ray-autoresearch/workspace")
BRANCH_PREFIX = "autoresearch/"
# The template's harness re-scores a saved artifact on its held-out split (see examples/golf/prepare.py).
TEMPLATE_HARNESS = "prepare.py"
TEMPLATE_RESCORE = "python prepare.py rescore {artifact} {file}"
DEFAULT_ARTIFACT = "final_model.int8.ptz"
MAX_RESEARCHERS = 64


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
    # K researchers, one git worktree each, sharing results.tsv and notes.md.
    researchers: int = Field(1, ge=1, le=MAX_RESEARCHERS, description="researchers working in parallel")
    # Keeps you can trust: seeded runs measure the noise, a t-test decides.
    baseline_seeds: int = Field(3, ge=2, le=20, description="seeded runs of the file as it is")
    max_seeds: int = Field(5, ge=1, le=20, description="runs of a candidate before a small gain is given up")
    significance: float = Field(0.05, gt=0, lt=1, description="keep when p < this")
    min_gain: float = Field(0.0, ge=0, description="the gain a keep must beat the best by (Parameter Golf: 0.005)")
    seed_var: str = Field("SEED", description="the environment variable each run's seed is exported as")
    # Protected evaluation: files no proposal may change, hashed before every run.
    protect: list[str] = Field(default_factory=list, description="protected files, relative to the repository")
    rescore: str | None = Field(None, description="command that re-scores a kept artifact on the held-out "
                                "split, with {artifact} and {file} (None: the template harness's when present; "
                                "'': no held-out check)")
    artifact: str = Field(DEFAULT_ARTIFACT, description="the file a run leaves for the held-out re-score")

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

    @field_validator("file", "artifact")
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

    @field_validator("protect")
    @classmethod
    def _protected(cls, v: list[str]) -> list[str]:
        out = []
        for p in v:
            cls._inside(p)
            p = Path(p).as_posix()
            if p not in out:
                out.append(p)
        return out

    @field_validator("seed_var")
    @classmethod
    def _seed_var(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v or ""):
            raise ValueError(f"{v!r} is not an environment variable name")
        return v

    @field_validator("rescore")
    @classmethod
    def _rescore(cls, v: str | None) -> str | None:
        if v and "{artifact}" not in v:
            raise ValueError("the re-score command must name the artifact as {artifact}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ResearchConfig":
        if Path(self.file).as_posix() in self.protect:
            raise ValueError(f"--file {self.file} is protected: the research file is the one file that changes")
        if self.seed_var in self.env:
            raise ValueError(f"--set {self.seed_var}: the loop sets {self.seed_var} for every run (different "
                             "seeds measure the noise)")
        return self

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
            text = re.sub(r"(^|; )spec: ", r"\1", text)  # a check across fields names its flags itself
            raise ResearchError(text) from None


# The command-line flag of each field, for error messages.
FLAGS = {"repo": "--repo", "workspace": "--workspace", "file": "--file", "tag": "--tag", "resume": "--resume",
         "timeout_s": "--timeout-min", "gpus": "--gpus", "env": "--set", "model": "--model", "seed": "--seed",
         "metric": "--metric", "researchers": "--researchers", "baseline_seeds": "--baseline-seeds",
         "max_seeds": "--max-seeds",
         "significance": "--significance", "min_gain": "--min-gain", "seed_var": "--seed-var",
         "protect": "--protect", "rescore": "--rescore", "artifact": "--artifact"}
