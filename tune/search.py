"""The searcher of a hardware-scaling sweep: Optuna's GP sampler (TPE as the
fallback) through Tune's OptunaSearch, seeded at the recipe's defaults, and
`RoundLimiter`, which hands out its suggestions in rounds.

The first round is the recipe's defaults alone (`points_to_evaluate`); the GP
models the results from the first completed trial on (n_startup_trials=1), so
there is no random warm-up beyond that point. Later rounds draw `batch_size`
suggestions each, once every trial of the round before has finished. Tune's
ConcurrencyLimiter caps trials running at once but does not wait for a round
to finish, hence the wrapper.
"""

from __future__ import annotations

import logging

from tune.space import HardwareSpace

logger = logging.getLogger(__name__)

METRIC = "score"


def make_sampler(kind: str, seed: int):
    """Optuna's GP sampler with no random start beyond the seeded default point
    (n_startup_trials=1: the default is that first trial), or TPE."""
    import optuna

    if kind == "gp":
        try:
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=1), "gp"
        except (AttributeError, ImportError) as exc:  # optuna < 3.6, or no torch
            logger.warning("GPSampler unavailable (%s): falling back to TPE", exc)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=1, multivariate=True,
                                      constant_liar=True), "tpe"


def make_searcher(space: HardwareSpace, kind: str = "gp", seed: int = 0, pareto: bool = False):
    """OptunaSearch over the hardware space, seeded at the recipe's defaults."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, used = make_sampler(kind, seed)  # both handle one objective and several
    metric, mode = (["score", "cost"], ["max", "min"]) if pareto else (METRIC, "max")
    searcher = OptunaSearch(space=space.optuna_space(), metric=metric, mode=mode,
                            points_to_evaluate=[space.default_point()], sampler=sampler)
    return searcher, used


def _searcher_base():
    from ray.tune.search import Searcher

    return Searcher


class RoundLimiter(_searcher_base()):
    """Suggestions in rounds: the first round is the seed point alone, each later
    one `batch_size` suggestions; a round starts once every trial of the one
    before has finished, so each round's suggestions see all earlier results.
    (How many of them run at once is Tune's max_concurrent_trials.)"""

    def __init__(self, searcher, batch_size: int, first_round: int = 1):
        self.searcher = searcher
        self.batch_size = batch_size
        self.first_round = first_round
        self.round = 0
        self.drawn: set[str] = set()
        self.finished: set[str] = set()
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str):
        size = self.first_round if self.round == 0 else self.batch_size
        if len(self.drawn) >= size:
            if not self.drawn <= self.finished:
                return None  # wait for the round to finish
            self.round += 1
            self.drawn, self.finished = set(), set()
        suggestion = self.searcher.suggest(trial_id)
        if suggestion is not None and suggestion != self.FINISHED:
            self.drawn.add(trial_id)
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)
        if trial_id in self.drawn:
            self.finished.add(trial_id)

    # Tune saves a wrapper's own state with get_state/set_state and the wrapped
    # OptunaSearch (the study) with its save/restore.
    def get_state(self) -> dict:
        return {"round": self.round, "drawn": set(self.drawn), "finished": set(self.finished),
                "batch_size": self.batch_size, "first_round": self.first_round}

    def set_state(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
