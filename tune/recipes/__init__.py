"""Recipes: what a hardware-scaling sweep trains.

`--recipe MODULE:FUNCTION` names a recipe's train function; its module exposes
the rest:

    HYPERPARAMS: dict[str, tune.space.Param]   searched: default and range
    evaluate(metrics, settings) -> float       the score of one evaluation (higher is better)
    train(hp, settings, hardware, report)      trains; calls report(metrics) at each evaluation,
                                               metrics holding at least "samples" and "time_s"
    SETTINGS: dict[str, Any]                   optional: fixed knobs that `--set key=value` changes
                                               ("target_score" is the score samples/time/cost
                                               to target are measured at)
    batch_unit(settings) -> BatchUnit          optional: the per-GPU unit of the batch (default 1)
    BATCH_EXPONENTS = (default, max)           optional: batch = min_batch * 2**k (default (0, 3))
    check_settings(settings)                   optional: raise ValueError for settings that cannot work

The default recipe, `tune.recipes.gpt:train`, trains the training engine's GPT
on the byte corpus that needs no download.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from tune.space import BatchUnit, HardwareSpace, Param

DEFAULT_RECIPE = "tune.recipes.gpt:train"


class RecipeError(ValueError):
    """A recipe or a setting a user named is wrong; the message says which."""


@dataclass(frozen=True)
class Hardware:
    """The shape one trial measures, and how it is mapped onto this cluster.

    On a GPU cluster a trial holds `gpus_per_node` GPUs on each of `nodes`
    nodes. With `local`, the same shape runs on CPU: in one process with
    `cpus` threads (mode "inprocess"), or as gpus_per_node * nodes DDP worker
    processes over gloo (mode "workers", the cluster's code path on CPU).
    """

    gpus_per_node: int
    nodes: int
    local: bool = False
    cpus: float = 1.0  # local: CPUs the trial holds
    mode: str = "inprocess"  # local only: "inprocess" or "workers"
    cpus_per_gpu: float = 1.0
    usd_per_gpu_hour: float = 2.0

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def distributed(self) -> bool:
        """Whether the trial trains in worker processes (the cluster, or local "workers")."""
        return not self.local or self.mode == "workers"


@dataclass
class Recipe:
    name: str
    train: Callable[..., Any]
    evaluate: Callable[[dict, dict], float]
    params: dict[str, Param]
    settings: dict[str, Any] = field(default_factory=dict)
    batch_unit: Callable[[dict], BatchUnit] | None = None
    batch_exponents: tuple[int, int] = (0, 3)
    check_settings: Callable[[dict], None] | None = None

    def with_overrides(self, overrides: list[str]) -> dict[str, Any]:
        """The recipe's settings with `key=value` overrides applied (values parsed
        as YAML scalars, checked against the default's type)."""
        settings = dict(self.settings)
        for item in overrides:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise RecipeError(f"--set {item!r}: expected key=value")
            if key not in settings:
                known = ", ".join(sorted(settings)) or "none"
                raise RecipeError(f"--set {item!r}: recipe {self.name} has no setting {key!r}; its settings: {known}")
            settings[key] = _coerce(key, yaml.safe_load(raw), settings[key], item)
        if self.check_settings is not None:
            try:
                self.check_settings(settings)
            except (ValueError, TypeError) as exc:
                raise RecipeError(f"recipe {self.name}: {exc}") from None
        return settings

    def space(self, gpus_per_node: int, nodes: int, settings: dict[str, Any]) -> HardwareSpace:
        unit = self.batch_unit(settings) if self.batch_unit else BatchUnit(1)
        default, top = self.batch_exponents
        return HardwareSpace(gpus_per_node, nodes, unit, self.params, default_exponent=default, max_exponent=top)


def _coerce(key: str, value: Any, default: Any, item: str) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RecipeError(f"--set {item!r}: {key} is true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"--set {item!r}: {key} is an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"--set {item!r}: {key} is a number")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        return str(value)
    return value


def load_recipe(ref: str) -> Recipe:
    """The recipe at `MODULE:FUNCTION` (FUNCTION: the train function; default `train`)."""
    module_name, _, func_name = ref.partition(":")
    func_name = func_name or "train"
    if not module_name:
        raise RecipeError(f"--recipe {ref!r}: expected MODULE:FUNCTION, e.g. {DEFAULT_RECIPE}")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as exc:
        raise RecipeError(f"--recipe {ref!r}: cannot import {module_name!r} ({exc})") from None
    train = getattr(module, func_name, None)
    if not callable(train):
        raise RecipeError(f"--recipe {ref!r}: module {module_name} has no function {func_name!r}")
    evaluate = getattr(module, "evaluate", None) or getattr(module, "eval", None)
    if not callable(evaluate):
        raise RecipeError(f"--recipe {ref!r}: module {module_name} has no evaluate(metrics, settings) function")
    params = getattr(module, "HYPERPARAMS", None)
    if not isinstance(params, dict) or not params or not all(isinstance(p, Param) for p in params.values()):
        raise RecipeError(
            f"--recipe {ref!r}: module {module_name} needs HYPERPARAMS, a dict of tune.space.Param "
            "(default and range of each searched hyperparameter)"
        )
    exponents = tuple(getattr(module, "BATCH_EXPONENTS", (0, 3)))
    if len(exponents) != 2 or not 0 <= exponents[0] <= exponents[1]:
        raise RecipeError(f"--recipe {ref!r}: BATCH_EXPONENTS must be (default, max) with 0 <= default <= max")
    return Recipe(
        name=ref if ":" in ref else f"{ref}:{func_name}",
        train=train,
        evaluate=evaluate,
        params=dict(params),
        settings=dict(getattr(module, "SETTINGS", {}) or {}),
        batch_unit=getattr(module, "batch_unit", None),
        batch_exponents=(int(exponents[0]), int(exponents[1])),
        check_settings=getattr(module, "check_settings", None),
    )
