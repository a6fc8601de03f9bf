"""The search space of a hardware-scaling sweep, with the hardware built in.

A recipe names its hyperparameters with a default and a range (`Param`) and the
per-GPU unit of its batch (`BatchUnit`). For one hardware shape (g GPUs per node
x n nodes, G = g * n in all) the space adds two integer dimensions that make
every point valid by construction, never by repair afterwards:

- `batch_exp` k in [0, max_exponent]: batch = min_batch * 2**k, where
  min_batch = unit.per_gpu * G (for a PPO recipe num_envs * num_agents *
  bptt_horizon * G; for the GPT recipe seqs_per_gpu * seq_len * G tokens);
- `minibatch_shift` s in [0, v2(unit.per_gpu / unit.granule)]: minibatch =
  batch >> s. Since 2**s divides per_gpu / granule, the minibatch divides the
  batch, and each GPU's share of it is a whole number of granules (sequences,
  BPTT segments), whatever k is.

`HardwareSpace.optuna_space()` is what OptunaSearch gets; `default_point()` is
the recipe's defaults, the sweep's first trial; `resolve(point)` turns a point
into the hyperparameters the recipe trains with; `check(resolved)` verifies the
constraints (the tests use it on every trial).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_GPUS_PER_NODE = 8
BATCH_EXP = "batch_exp"
MINIBATCH_SHIFT = "minibatch_shift"


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: its default (the sweep's first point) and range."""

    default: float
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self):
        if not self.low < self.high:
            raise ValueError(f"range [{self.low}, {self.high}] is empty")
        if not self.low <= self.default <= self.high:
            raise ValueError(f"default {self.default} is outside its range [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scaled range must be positive, got low={self.low}")
        if self.integer and not all(float(v).is_integer() for v in (self.default, self.low, self.high)):
            raise ValueError("an integer parameter needs integer default, low and high")

    def distribution(self):
        from optuna.distributions import FloatDistribution, IntDistribution

        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class BatchUnit:
    """The smallest batch one GPU can take (`per_gpu` samples) and the indivisible
    chunk of it (`granule`: a sequence, a BPTT segment); per_gpu % granule == 0."""

    per_gpu: int
    granule: int = 1

    def __post_init__(self):
        if self.per_gpu < 1 or self.granule < 1:
            raise ValueError(f"batch unit must be positive, got per_gpu={self.per_gpu}, granule={self.granule}")
        if self.per_gpu % self.granule:
            raise ValueError(f"batch unit per_gpu={self.per_gpu} is not a multiple of its granule {self.granule}")

    @property
    def max_shift(self) -> int:
        """The largest s for which 2**s divides per_gpu / granule."""
        return _two_adic(self.per_gpu // self.granule)


def _two_adic(n: int) -> int:
    return (n & -n).bit_length() - 1


@dataclass(frozen=True)
class HardwareSpace:
    gpus_per_node: int
    nodes: int
    unit: BatchUnit
    params: dict[str, Param]
    default_exponent: int = 0
    max_exponent: int = 3
    default_shift: int = 0
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        if self.gpus_per_node < 1 or self.nodes < 1:
            raise ValueError(f"hardware must be positive, got {self.gpus_per_node} GPUs x {self.nodes} nodes")
        if not 0 <= self.default_exponent <= self.max_exponent:
            raise ValueError(f"default batch exponent {self.default_exponent} is outside [0, {self.max_exponent}]")
        if not 0 <= self.default_shift <= self.unit.max_shift:
            raise ValueError(f"default minibatch shift {self.default_shift} is outside [0, {self.unit.max_shift}]")
        clash = {BATCH_EXP, MINIBATCH_SHIFT, "batch_size", "minibatch_size"} & set(self.params)
        if clash:
            raise ValueError(f"recipe hyperparameter {sorted(clash)[0]!r} clashes with a name the space builds")
        object.__setattr__(self, "names", (*self.params, BATCH_EXP, MINIBATCH_SHIFT))

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def min_batch(self) -> int:
        return self.unit.per_gpu * self.total_gpus

    def optuna_space(self) -> dict[str, Any]:
        from optuna.distributions import IntDistribution

        space = {name: p.distribution() for name, p in self.params.items()}
        space[BATCH_EXP] = IntDistribution(0, self.max_exponent)
        # A one-value range is fine: Optuna then suggests that value every time.
        space[MINIBATCH_SHIFT] = IntDistribution(0, self.unit.max_shift)
        return space

    def default_point(self) -> dict[str, Any]:
        point: dict[str, Any] = {
            name: int(p.default) if p.integer else float(p.default) for name, p in self.params.items()
        }
        point[BATCH_EXP] = self.default_exponent
        point[MINIBATCH_SHIFT] = self.default_shift
        return point

    def resolve(self, point: dict[str, Any]) -> dict[str, Any]:
        """The recipe's hyperparameters at `point`, with batch_size and
        minibatch_size (in samples, for all GPUs together)."""
        k, s = int(point[BATCH_EXP]), int(point[MINIBATCH_SHIFT])
        if not 0 <= k <= self.max_exponent or not 0 <= s <= self.unit.max_shift:
            raise ValueError(f"point {point} is outside the space")
        batch = self.min_batch << k
        hp = {name: point[name] for name in self.params}
        hp.update(batch_size=batch, minibatch_size=batch >> s, batch_exp=k, minibatch_shift=s)
        return hp

    def check(self, hp: dict[str, Any]) -> list[str]:
        """The constraints a resolved point breaks (none, for any point of the space)."""
        problems = []
        batch, mini, g = hp["batch_size"], hp["minibatch_size"], self.total_gpus
        ratio = batch / self.min_batch
        if batch < self.min_batch or ratio != 2 ** round(math.log2(ratio)):
            problems.append(f"batch {batch} is not min_batch {self.min_batch} times a power of two")
        if mini < 1 or batch % mini:
            problems.append(f"minibatch {mini} does not divide batch {batch}")
        elif mini % (g * self.unit.granule):
            problems.append(f"minibatch {mini} does not split into whole granules of {self.unit.granule} on {g} GPUs")
        for name, p in self.params.items():
            v = hp[name]
            if not p.low <= v <= p.high:
                problems.append(f"{name}={v} is outside [{p.low}, {p.high}]")
        return problems
