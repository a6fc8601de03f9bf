"""`TrainSpec`: the single description of one training job.

Scaled experiments, autoresearch runs and sweep trials all train through a
TrainSpec. It validates its shape on construction (types, positive sizes, a
benchmark the engine has, no unknown keys), names the field in its errors, and
round-trips through YAML. `with_overrides(["optim.lr=1e-3"])` applies the
dotted `--set` overrides the command lines take.

It describes any job honestly, 8 GPUs included: the hard limits of a scaled
experiment (train.limits) are checked where a plan becomes a job, by
`train.estimate.check_fits`, not here.

A relative `model.path` in a YAML file means a file beside that YAML file, not
in whatever directory the command runs in: `from_yaml` makes it absolute and
checks that it is there (`with_paths_from`), before anything starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from analysis.files import atomic_write_text

# For projecting GPU-hours and cost: an A100's dense bf16 peak, and a model
# FLOPs utilisation that small models reach in practice.
DEFAULT_GPU_PEAK_TFLOPS = 312.0
DEFAULT_ASSUMED_MFU = 0.35
DEFAULT_USD_PER_GPU_HOUR = 2.00


def check_benchmark(v: str) -> str:
    from train.data import BENCHMARKS

    if v not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {v!r}; choose one of {', '.join(BENCHMARKS)}")
    return v


class _Strict(BaseModel):
    # A misspelt key in a YAML spec is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    family: Literal["gpt", "rnn", "custom"] = "gpt"
    d_model: int = Field(256, gt=0)
    n_layers: int = Field(4, gt=0)
    n_heads: int = Field(4, gt=0)
    n_kv_heads: int | None = Field(None, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    path: str | None = None  # custom: a .py file holding the nn.Module
    class_name: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _custom_needs_path(self):
        if self.family == "custom" and not self.path:
            raise ValueError("model.path is required when model.family is 'custom'")
        return self


class DataSpec(_Strict):
    benchmark: str = "bytes"
    seq_len: int = Field(256, gt=1)
    params: dict[str, Any] = Field(default_factory=dict)

    _known = field_validator("benchmark")(lambda cls, v: check_benchmark(v))


class OptimSpec(_Strict):
    lr: float = Field(3e-4, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = Field(50, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    batch_size: int = Field(32, gt=0, description="sequences per micro-batch on each worker")
    grad_accum: int = Field(1, gt=0)
    grad_clip: float | None = Field(1.0, gt=0)


class ResourceSpec(_Strict):
    gpus: int = Field(0, ge=0, description="GPUs in all, one data-parallel worker per GPU; 0: train on CPU")
    cpu_workers: int = Field(1, gt=0, description="CPU workers when gpus is 0")
    cpus_per_worker: float = Field(1, gt=0)

    @property
    def workers(self) -> int:
        return self.gpus if self.gpus > 0 else self.cpu_workers


class BudgetSpec(_Strict):
    max_steps: int = Field(1000, gt=0)
    max_hours: float = Field(1.0, gt=0)
    target: float | None = Field(None, description="stop once the validation metric reaches this")
    patience: int | None = Field(None, gt=0, description="evaluations without improvement before stopping")
    eval_interval: int = Field(100, gt=0)
    eval_batches: int = Field(20, gt=0)
    checkpoint_interval: int | None = Field(None, gt=0, description="steps; default: every evaluation")
    max_failures: int = Field(2, ge=0, description="worker failures to recover from, from the last checkpoint")
    divergence_factor: float = Field(4.0, gt=1, description="stop when train loss exceeds this times the loss at start")


class CostSpec(_Strict):
    usd_per_gpu_hour: float = Field(DEFAULT_USD_PER_GPU_HOUR, ge=0)
    gpu_peak_tflops: float = Field(DEFAULT_GPU_PEAK_TFLOPS, gt=0)
    assumed_mfu: float = Field(DEFAULT_ASSUMED_MFU, gt=0, le=1)


class LoggingSpec(_Strict):
    wandb_project: str | None = None
    wandb_mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="default: online with WANDB_API_KEY set, offline without"
    )
    tensorboard: bool = True
    log_interval: int = Field(10, gt=0)


class TrainSpec(_Strict):
    name: str = "run"
    seed: int = 0
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    precision: Literal["bf16", "fp32"] = "bf16"
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    cost: CostSpec = Field(default_factory=CostSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)

    @property
    def tokens_per_step(self) -> int:
        return self.optim.batch_size * self.data.seq_len * self.optim.grad_accum * self.resources.workers

    # -- YAML ------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainSpec":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise SpecError(f"{path}: no such file") from None
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML: {exc}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise SpecError(f"{path}: a spec is a mapping of sections, got {type(raw).__name__}")
        return cls.parse(raw, source=str(path)).with_paths_from(path.parent, source=str(path))

    def with_paths_from(self, folder: str | Path, confine: bool = False, source: str = "spec") -> "TrainSpec":
        """This spec with a relative `model.path` taken from `folder` (the spec
        file's folder, or a scaled experiment's) and made absolute; SpecError when
        the file is not there. With `confine`, for paths an LLM wrote, the file
        must lie inside `folder`: an absolute path, `..` or a symlink out of it
        is refused."""
        if self.model.path is None:
            return self
        folder = Path(folder).expanduser().resolve()
        given = Path(self.model.path).expanduser()
        if confine and (given.is_absolute() or ".." in given.parts):
            raise SpecError(f"{source}: model.path {self.model.path!r} escapes the experiment folder")
        file = (folder / given).resolve()  # an absolute `given` stays as it is
        if confine and folder not in file.parents:
            raise SpecError(f"{source}: model.path {self.model.path!r} escapes the experiment folder")
        if not file.is_file():
            where = "" if given.is_absolute() else f" (relative paths are taken from {folder})"
            raise SpecError(f"{source}: model.path: {file} is not a file{where}")
        model = self.model.model_copy(update={"path": str(file)})
        return self.model_copy(update={"model": model})

    @classmethod
    def parse(cls, raw: dict, source: str = "spec") -> "TrainSpec":
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise SpecError(f"{source}: {format_validation_error(exc)}") from None

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        if path is not None:
            atomic_write_text(path, text)
        return text

    def with_overrides(self, overrides: list[str]) -> "TrainSpec":
        """Apply `key.path=value` overrides (values parsed as YAML scalars)."""
        raw = self.model_dump(mode="json")
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise SpecError(f"--set {item!r}: expected key.path=value")
            node = raw
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise SpecError(f"--set {item!r}: {part!r} is not a section of the spec")
                node = node[part]
            if parts[-1] not in node and not (len(parts) > 1 and parts[-2] in ("params", "kwargs")):
                raise SpecError(f"--set {item!r}: the spec has no field {key!r}")
            node[parts[-1]] = yaml.safe_load(value)
        return TrainSpec.parse(raw, source="--set")


class SpecError(ValueError):
    """A spec a user wrote is wrong; the message says where and why."""


def format_validation_error(exc: ValidationError, where: Callable[[tuple], str] | None = None) -> str:
    """One problem per `; `-separated part: `optim.lr: Input should be greater
    than or equal to 0`. `where` names a problem's location (pydantic's `loc`
    tuple; default: the dotted field path), e.g. as the command-line flag that
    set the field."""
    name = where or (lambda loc: ".".join(str(p) for p in loc))
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        lines.append(f"{name(tuple(err['loc'])) or 'spec'}: {msg}")
    return "; ".join(lines)
