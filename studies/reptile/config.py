"""The configuration of a Reptile run, and the error for what is not available here.

`ReptileConfig` is one run apart from its number of training tasks and its
seed; `SyntheticFamilyConfig` is the fixed generative distribution of the
default task family (studies.reptile.tasks).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_HF_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"


class ReptileUnavailable(RuntimeError):
    """A model or dataset the configuration names is not available here; the
    message says what is missing and how to get it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticFamilyConfig(_Strict):
    """The fixed generative distribution of the default task family."""

    dim: int = Field(256, ge=2, description="input dimensions")
    n_factors: int = Field(64, ge=1, description="latent directions a class can use")
    zipf: float = Field(1.2, ge=0, description="factor i is used with frequency proportional to (i + 1)^-zipf")
    factors_per_task: int = Field(4, ge=1, description="latent directions the classes of one task vary along")
    class_scale: float = Field(2.0, gt=0, description="std of a prototype's coordinate on an active factor")
    noise: float = Field(1.0, ge=0, description="std of the isotropic noise on every input dimension")
    seed: int = Field(1234, ge=0, description="fixes the distribution and the held-out test tasks")

    @model_validator(mode="after")
    def _fits(self):
        if self.n_factors > self.dim:
            raise ValueError(f"n_factors ({self.n_factors}) must be at most dim ({self.dim})")
        if self.factors_per_task > self.n_factors:
            raise ValueError(f"factors_per_task ({self.factors_per_task}) must be at most n_factors ({self.n_factors})")
        return self


class ReptileConfig(_Strict):
    """One Reptile run, apart from its number of training tasks and its seed."""

    # the few-shot problem
    ways: int = Field(5, ge=2)
    shots: int = Field(5, ge=1, description="support examples per class")
    queries: int = Field(15, ge=1, description="query examples per class")
    task_family: Literal["synthetic", "banking77"] = "synthetic"
    family: SyntheticFamilyConfig = Field(default_factory=SyntheticFamilyConfig)
    banking77_path: str | None = Field(None, description="a folder with Banking77's train.csv and test.csv")
    # Reptile
    inner_steps: int = Field(5, ge=1)
    inner_lr: float = Field(0.5, gt=0)
    meta_lr: float = Field(1.0, gt=0, description="outer step size, annealed linearly to 0")
    meta_batch: int = Field(5, ge=1, description="tasks per meta-step")
    meta_steps: int = Field(10_000, ge=1)
    eval_inner_steps: int = Field(10, ge=0, description="adaptation steps on a held-out task's support set")
    eval_interval: int = Field(500, ge=1)
    log_interval: int = Field(50, ge=1)
    eval_tasks: int = Field(100, ge=1, description="held-out tasks scored at each interval")
    test_tasks: int = Field(300, ge=1, description="held-out tasks scored at the end")
    zero_head: bool = True
    # baselines
    scratch_lrs: tuple[float, ...] = (0.1, 0.3, 1.0)
    scratch_steps: tuple[int, ...] = (10, 50)
    # model
    model: Literal["small", "hf"] = "small"
    hidden: int = Field(64, ge=1)
    lora_rank: int = Field(0, ge=0, description="small model: 0 trains the feature layer fully, >0 through LoRA")
    lora_alpha: float = Field(16.0, gt=0)
    hf_model: str = DEFAULT_HF_MODEL
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    max_length: int = Field(64, ge=4, description="tokens per utterance (hf)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    vectorize: bool | None = Field(None, description="vmap over tasks; default: on for the small model")

    @model_validator(mode="after")
    def _sizes(self):
        if self.eval_tasks > self.test_tasks:
            raise ValueError(f"eval_tasks ({self.eval_tasks}) must be at most test_tasks ({self.test_tasks})")
        if self.task_family == "banking77" and self.model == "small":
            raise ValueError("task_family 'banking77' is text: use model 'hf'")
        if self.task_family == "synthetic" and self.model == "hf":
            raise ValueError("model 'hf' needs text tasks: use task_family 'banking77'")
        return self
