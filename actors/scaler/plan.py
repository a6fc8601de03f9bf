"""`ScalePlan`: how a ScalerAgent proposes to scale one MVE up.

A plan comes from Claude (tool use with this model's JSON schema) or from the
offline planner. This is where a plan meets the hard limits of a scaled
experiment (train.limits): on construction it checks its shape, a benchmark
the training engine has, and its TrainSpec against the limits with
`train.estimate.check_fits` (GPUs, hours, and the 80 GB per GPU once the model
can be built). The agent runs the same check again when it turns the plan into
a job, for the parameters, GPU-hours and cost it records.

A model that is code (`model.family: custom`, its file among `files`) is never
built in this process: that would run code an LLM or an MVE's author wrote
here. `checked_estimate` builds it in a sandboxed child (`sandboxed_fits`), and
the smoke test builds it again; GPUs and hours are checked on construction as
for any plan.

`BenchmarkPlan`: a kernel-benchmark MVE scaled as a benchmark job instead.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from actors.scaler.sandboxed import sandboxed_fits
from train.estimate import Estimate, check_fits
from train.limits import MAX_GPUS, MAX_HOURS, LimitExceeded, check_gpus, check_hours
from train.spec import ModelSpec, OptimSpec, TrainSpec, check_benchmark


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="short name, e.g. 'gpt-same-size' or 'lstm'")
    family: Literal["gpt", "rnn"] = Field(description="a built-in model family to train as the baseline")
    why: str = Field(description="what comparing against it shows")


class ScalePlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mve_id: str = Field(description="the MVE's three-digit number, e.g. '007'")
    title: str = Field(description="one line: what is scaled, to what size, on which benchmark")
    rationale: str = Field(description="what the MVE showed and why it should hold at scale")
    model: ModelSpec = Field(description="architecture and size of the scaled model")
    target_params: int = Field(gt=0, description="intended parameter count; 10M-50M is typical")
    benchmark: str = Field(description="a real benchmark the training engine has: bytes, mqar, wikitext103, fineweb")
    data_params: dict = Field(default_factory=dict, description="benchmark parameters, e.g. {'num_kv_pairs': 32}")
    seq_len: int = Field(gt=1)
    optim: OptimSpec = Field(description="training protocol: lr, schedule, warmup, batch size, accumulation")
    max_steps: int = Field(gt=0)
    eval_interval: int = Field(gt=0)
    gpus: int = Field(ge=1, description=f"GPUs to request, at most {MAX_GPUS}")
    hours: float = Field(gt=0, description=f"wall-clock budget, at most {MAX_HOURS:g} hours")
    baselines: list[Baseline] = Field(min_length=1)
    success_criteria: list[str] = Field(min_length=1, description="measurable, e.g. 'val accuracy >= 0.9 at 32 kv pairs'")
    early_stop_target: float | None = Field(None, description="stop once the validation metric reaches this")
    early_stop_patience: int | None = Field(None, gt=0, description="evaluations without improvement before stopping")
    files: dict[str, str] = Field(
        default_factory=dict,
        description="extra files for code/NNN_scaled/, relative path -> content (e.g. models/model.py)",
    )

    @field_validator("mve_id")
    @classmethod
    def _three_digits(cls, v: str) -> str:
        if not re.fullmatch(r"\d{3}", v):
            raise ValueError(f"must be a three-digit MVE number like '007', got {v!r}")
        return v

    _gpu_limit = field_validator("gpus")(lambda cls, v: check_gpus(v))
    _hour_limit = field_validator("hours")(lambda cls, v: check_hours(v))
    _known_benchmark = field_validator("benchmark")(lambda cls, v: check_benchmark(v))

    _relative_paths = field_validator("files")(lambda cls, v: check_files(v))

    @field_validator("model")
    @classmethod
    def _model_file_inside(cls, model: ModelSpec) -> ModelSpec:
        if model.path is not None:
            check_relative(model.path, what="model.path")
        return model

    @model_validator(mode="after")
    def _inside_the_hard_limits(self):
        # GPUs and hours are refused above under the plan's own field names;
        # this adds the 80 GB per GPU, which needs the model built. Code is
        # built only in a sandboxed child, where the plan becomes a job.
        if self.model.family == "custom":
            return self
        try:
            self.checked_estimate()
        except LimitExceeded:
            raise
        except ValueError:
            # A model that cannot be built (sizes that do not fit together, a
            # custom file missing from the plan's files) breaks no limit: the
            # agent's checked_estimate refuses it, naming why, where the plan
            # becomes a job.
            pass
        return self

    @property
    def name(self) -> str:
        return f"{self.mve_id}_scaled"

    def checked_estimate(self) -> Estimate:
        """`check_fits` of the plan's spec, a custom model included: the plan's
        files are laid out as the experiment folder will hold them and the model
        is built from there, in a sandboxed child (no secrets, a timeout).
        LimitExceeded, or a ValueError saying why the model does not build."""
        if self.model.family != "custom":
            return check_fits(self.to_train_spec())
        return Estimate(**sandboxed_fits(self.to_train_spec().model_dump(mode="json"), self.files))

    def to_train_spec(self, folder: Path | None = None) -> TrainSpec:
        """The TrainSpec the scaled experiment runs (its shape validated; the plan
        checked the limits on construction). With `folder`, the experiment folder,
        model.path is taken from it and must stay inside it."""
        spec = TrainSpec.parse(
            {
                "name": self.name,
                "model": self.model.model_dump(mode="json"),
                "data": {"benchmark": self.benchmark, "seq_len": self.seq_len, "params": self.data_params},
                "optim": self.optim.model_dump(mode="json"),
                "precision": "bf16",
                "resources": {"gpus": self.gpus},
                "budget": {
                    "max_steps": self.max_steps,
                    "max_hours": self.hours,
                    "eval_interval": self.eval_interval,
                    "target": self.early_stop_target,
                    "patience": self.early_stop_patience,
                },
            },
            source=f"plan for MVE {self.mve_id}",
        )
        return spec if folder is None else spec.with_paths_from(folder, confine=True,
                                                                 source=f"plan for MVE {self.mve_id}")


def check_relative(name: str, what: str = "file path") -> str:
    """A path an LLM wrote: plain, relative, inside the experiment folder."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or name.startswith("~"):
        raise ValueError(f"{what} {name!r} escapes the experiment folder")
    return name


def check_files(files: dict[str, str]) -> dict[str, str]:
    """The files a plan brings (path -> text): every path plain and inside the folder."""
    for name in files:
        check_relative(name)
    return files


class BenchmarkPlan(BaseModel):
    """An MVE that measures code rather than trains a model (a kernel
    benchmark) is scaled as a benchmark job: its command runs in the scaled
    folder as a Ray task that holds `gpus` GPUs, killed after `hours`. The
    hard limits hold as for training: at most 2 GPUs and 6 hours."""

    model_config = ConfigDict(extra="forbid")

    mve_id: str = Field(description="the MVE's three-digit number, e.g. '012'")
    title: str = Field(description="one line: what is measured, at which sizes, on what hardware")
    rationale: str = Field(description="what the MVE showed and what the scaled benchmark tests")
    command: list[str] = Field(min_length=2, description='argv run in the scaled folder, e.g. ["python", '
                               '"bench.py", "--sizes", "4096,8192"]; it prints one JSON object as its last line, '
                               "or writes results_file")
    smoke_command: list[str] = Field(min_length=2, description="a short run of the same code that passes on CPU, "
                                     "without a GPU, in under a minute")
    gpus: int = Field(ge=0, description=f"GPUs the benchmark holds, at most {MAX_GPUS}")
    hours: float = Field(gt=0, description=f"wall-clock limit, at most {MAX_HOURS:g} hours")
    success_criteria: list[str] = Field(min_length=1, description="measurable, e.g. '>= 1.5x eager at d=8192'")
    results_file: str = Field("benchmark_results.json", description="a JSON file the command may write")
    files: dict[str, str] = Field(default_factory=dict, description="files of the scaled folder, path -> content")

    _three = field_validator("mve_id")(lambda cls, v: ScalePlan._three_digits(v))
    _gpu_limit = field_validator("gpus")(lambda cls, v: check_gpus(v))
    _hour_limit = field_validator("hours")(lambda cls, v: check_hours(v))

    @field_validator("command", "smoke_command")
    @classmethod
    def _python_script_inside(cls, argv: list[str]) -> list[str]:
        # Run with our interpreter, on a script inside the folder; no shell.
        if argv[0] not in ("python", "python3"):
            raise ValueError(f"must start with python, got {argv[0]!r}")
        if not argv[1].endswith(".py"):
            raise ValueError(f"must run a .py script of the folder, got {argv[1]!r}")
        check_relative(argv[1], what="script")
        return argv

    @field_validator("results_file")
    @classmethod
    def _relative_results(cls, name: str) -> str:
        return check_relative(name, what="results_file")

    _relative_paths = field_validator("files")(lambda cls, v: check_files(v))

    @property
    def name(self) -> str:
        return f"{self.mve_id}_scaled"
