"""`ScalePlan`: how a ScalerAgent proposes to scale one MVE up.

A plan comes from Claude (tool use with this model's JSON schema) or from the
offline planner. This is where a plan meets the hard limits of a scaled
experiment (train.limits): on construction it checks its shape, a benchmark
the training engine has, and its TrainSpec against the limits with
`train.estimate.check_fits` (GPUs, hours, and the 80 GB per GPU once the model
can be built). The agent runs the same check again when it turns the plan into
a job, for the parameters, GPU-hours and cost it records.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, files: dict[str, str]) -> dict[str, str]:
        # Paths come from an LLM: only plain relative paths inside the folder.
        for name in files:
            _check_relative(name, "file path")
        return files

    @field_validator("model")
    @classmethod
    def _model_file_inside(cls, model: ModelSpec) -> ModelSpec:
        if model.path is not None:
            _check_relative(model.path, "model.path")
        return model

    @model_validator(mode="after")
    def _inside_the_hard_limits(self):
        # GPUs and hours are refused above under the plan's own field names;
        # this adds the 80 GB per GPU, which needs the model built.
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
        files are laid out in a scratch folder as the experiment folder will hold
        them, and the model is built from there."""
        if self.model.family != "custom":
            return check_fits(self.to_train_spec())
        with tempfile.TemporaryDirectory(prefix=f"plan-{self.mve_id}-") as tmp:
            for rel, text in self.files.items():
                target = Path(tmp, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            return check_fits(self.to_train_spec(Path(tmp)))

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


def _check_relative(name: str, what: str) -> None:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or name.startswith("~"):
        raise ValueError(f"{what} {name!r} escapes the experiment folder")
