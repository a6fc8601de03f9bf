"""The hardware-constrained search space, the recipe contract, and the sweep's
command-line checks (no Ray cluster needed)."""

import itertools
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tune.recipes import Hardware, RecipeError, load_recipe
from tune.space import BATCH_EXP, MINIBATCH_SHIFT, BatchUnit, HardwareSpace, Param

ROOT = Path(__file__).resolve().parents[3]
PARAMS = {"lr": Param(3e-3, 1e-4, 3e-2, log=True), "wd": Param(0.1, 0.0, 0.3)}


def ppo_space(g, n, envs=8, agents=2, bptt=16):
    """A PPO recipe's unit: num_envs * num_agents * bptt_horizon samples per GPU."""
    return HardwareSpace(g, n, BatchUnit(per_gpu=envs * agents * bptt, granule=bptt), PARAMS,
                         default_exponent=1, max_exponent=4)


@pytest.mark.parametrize("g,n", [(1, 1), (2, 1), (4, 2), (8, 2), (3, 1)])
def test_every_point_of_the_space_satisfies_the_hardware_constraints(g, n):
    space = ppo_space(g, n)
    assert space.min_batch == 8 * 2 * 16 * g * n
    dists = space.optuna_space()
    ks = range(dists[BATCH_EXP].low, dists[BATCH_EXP].high + 1)
    ss = range(dists[MINIBATCH_SHIFT].low, dists[MINIBATCH_SHIFT].high + 1)
    assert list(ss) == [0, 1, 2, 3, 4]  # 2**4 divides envs * agents = 16
    for k, s in itertools.product(ks, ss):
        hp = space.resolve({"lr": 1e-3, "wd": 0.0, BATCH_EXP: k, MINIBATCH_SHIFT: s})
        assert space.check(hp) == []
        assert hp["batch_size"] == space.min_batch * 2**k
        assert hp["batch_size"] % hp["minibatch_size"] == 0
        per_gpu = hp["minibatch_size"] // (g * n)
        assert per_gpu * g * n == hp["minibatch_size"] and per_gpu % 16 == 0  # whole BPTT segments per GPU


def test_check_catches_a_batch_that_breaks_the_constraints():
    space = ppo_space(2, 1)
    hp = space.resolve({"lr": 1e-3, "wd": 0.0, BATCH_EXP: 1, MINIBATCH_SHIFT: 0})
    assert space.check({**hp, "batch_size": hp["batch_size"] + 1})
    assert space.check({**hp, "minibatch_size": hp["batch_size"] // 3})
    assert space.check({**hp, "batch_size": space.min_batch // 2, "minibatch_size": space.min_batch // 2})
    assert space.check({**hp, "lr": 1.0})


def test_default_point_is_the_recipes_defaults_and_is_inside_the_space():
    space = ppo_space(4, 1)
    point = space.default_point()
    assert point == {"lr": 3e-3, "wd": 0.1, BATCH_EXP: 1, MINIBATCH_SHIFT: 0}
    for name, dist in space.optuna_space().items():
        assert dist._contains(dist.to_internal_repr(point[name])), name


def test_space_refuses_inconsistent_definitions():
    with pytest.raises(ValueError, match="outside its range"):
        Param(1.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="positive"):
        Param(0.1, 0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="multiple of its granule"):
        BatchUnit(per_gpu=100, granule=64)
    with pytest.raises(ValueError, match="default batch exponent"):
        HardwareSpace(1, 1, BatchUnit(4), PARAMS, default_exponent=5, max_exponent=3)
    with pytest.raises(ValueError, match="clashes"):
        HardwareSpace(1, 1, BatchUnit(4), {"batch_size": Param(1, 0, 2)})


def test_default_recipe_loads_and_its_space_scales_with_the_gpus():
    recipe = load_recipe("tune.recipes.gpt:train")
    settings = recipe.with_overrides(["steps=20", "d_model=32"])
    assert settings["steps"] == 20 and settings["d_model"] == 32
    one, eight = recipe.space(1, 1, settings), recipe.space(4, 2, settings)
    assert eight.min_batch == 8 * one.min_batch == 8 * settings["seqs_per_gpu"] * settings["seq_len"]
    assert recipe.evaluate({"val_bpb": 4.0}, settings) == pytest.approx(0.5)
    assert recipe.evaluate({"val_bpb": float("nan")}, settings) == 0.0


def test_gpt_recipe_spec_keeps_the_global_batch_whatever_the_workers():
    from tune.recipes.gpt import SETTINGS, spec_for

    recipe = load_recipe("tune.recipes.gpt:train")
    space = recipe.space(2, 2, SETTINGS)
    hp = space.resolve({**space.default_point(), BATCH_EXP: 2, MINIBATCH_SHIFT: 1})
    for workers in (1, 4):
        spec = spec_for(hp, SETTINGS, workers)
        assert spec.tokens_per_step == hp["batch_size"]
        assert spec.optim.grad_accum == 2


@pytest.mark.parametrize("shape, local, mode, gpus, cpu_workers", [
    ((8, 1), False, "inprocess", 8, None),  # the cluster: one worker per GPU of the shape
    ((4, 2), False, "inprocess", 8, None),
    ((8, 1), True, "inprocess", 0, 1),  # --local: one process on CPU threads
    ((8, 1), True, "workers", 0, 8),  # --local-workers: g * n gloo workers on CPU
])
def test_gpt_recipe_trial_spec_says_what_the_trial_trains_on(shape, local, mode, gpus, cpu_workers):
    from tune.recipes.gpt import SETTINGS, trial_spec
    from train.estimate import check_fits
    from train.limits import LimitExceeded

    space = load_recipe("tune.recipes.gpt:train").space(*shape, SETTINGS)
    hp = space.resolve(space.default_point())
    spec = trial_spec(hp, SETTINGS, Hardware(*shape, local=local, mode=mode))
    assert spec.resources.gpus == gpus
    if cpu_workers is not None:
        assert spec.resources.cpu_workers == cpu_workers
    assert spec.tokens_per_step == hp["batch_size"]
    if gpus > 2:  # a sweep may hold 8 GPUs; a scaled experiment may not
        with pytest.raises(LimitExceeded, match=f"asks for {gpus} GPUs; the hard limit is 2"):
            check_fits(spec)


@pytest.mark.parametrize("overrides,match", [
    (["nope=1"], "has no setting 'nope'"),
    (["steps=abc"], "steps is an integer"),
    (["steps"], "expected key=value"),
    (["n_heads=3"], "divisible by n_heads"),
    (["max_bytes=10"], "fewer than seq_len"),
])
def test_bad_settings_are_named(overrides, match):
    recipe = load_recipe("tune.recipes.gpt:train")
    with pytest.raises(RecipeError, match=match):
        recipe.with_overrides(overrides)


@pytest.mark.parametrize("ref,match", [
    ("no_such_module_xyz:train", "cannot import"),
    ("tune.recipes.gpt:nope", "no function 'nope'"),
    ("tune.space:Param", "no evaluate"),
])
def test_unknown_recipes_are_refused_with_a_message(ref, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(ref)


def test_pairs_over_eight_gpus_or_beyond_the_cluster_are_skipped():
    from tune.sweep import SweepConfig, hardware_for, plan_pairs

    cfg = SweepConfig(gpu_counts=[1, 2, 4, 8, 16], node_counts=[1, 2])
    nodes = [{"GPU": 8, "CPU": 32}, {"GPU": 2, "CPU": 32}]
    pairs, skipped = plan_pairs(cfg, nodes)
    assert pairs == [(1, 1), (2, 1), (4, 1), (8, 1), (1, 2), (2, 2)]
    assert any("hs_g16n1" in m and "more than the 8" in m for m in skipped)
    assert any("hs_g4n2" in m and "needs 4 GPU(s)" in m for m in skipped)
    local = SweepConfig(gpu_counts=[1, 2, 4], node_counts=[1], local=True)
    assert plan_pairs(local, [])[0] == [(1, 1), (2, 1), (4, 1)]
    hw, mapping = hardware_for(local, 4, 1, cluster_cpus=2)
    assert hw.cpus == 2 and hw.total_gpus == 4 and "2 CPU thread(s)" in mapping


def test_trial_resources_reserve_the_shape():
    from tune.trial import trial_resources

    pgf = trial_resources(Hardware(4, 2, local=False, cpus_per_gpu=2))
    assert pgf.strategy == "STRICT_SPREAD" and pgf.head_bundle_is_empty
    assert pgf.bundles == [{"GPU": 4.0, "CPU": 8.0}] * 2
    assert trial_resources(Hardware(2, 1, local=True, cpus=2)).bundles == [{"CPU": 2.0}]


def test_round_limiter_runs_the_seed_alone_then_rounds_of_batch_size():
    from tune.search import RoundLimiter

    class Inner:
        metric, mode = "score", "max"

        def __init__(self):
            self.n, self.told = 0, []

        def suggest(self, trial_id):
            self.n += 1
            return {"i": self.n}

        def on_trial_complete(self, trial_id, result=None, error=False):
            self.told.append(trial_id)

    inner = Inner()
    lim = RoundLimiter(inner, batch_size=3)
    assert lim.suggest("a") == {"i": 1}
    assert lim.suggest("b") is None  # the seed point runs alone
    lim.on_trial_complete("a", {"score": 1})
    assert [lim.suggest(t) for t in "bcde"] == [{"i": 2}, {"i": 3}, {"i": 4}, None]
    lim.on_trial_complete("b", {})
    lim.on_trial_complete("c", {})
    assert lim.suggest("e") is None  # d still runs
    lim.on_trial_complete("d", {})
    assert lim.suggest("e") == {"i": 5}
    state = lim.get_state()
    again = RoundLimiter(Inner(), batch_size=3)
    again.set_state(state)
    assert again.round == 2 and again.drawn == {"e"}


@pytest.mark.parametrize("args,needle", [
    (["--gpu-counts", "0", "--local"], "--gpu-counts"),
    (["--local", "--max-trials", "0"], "--max-trials"),
    (["--local", "--set", "bogus=1"], "has no setting 'bogus'"),
    (["--local", "--recipe", "nowhere.recipe:train"], "cannot import"),
    (["analyze", "{tmp}"], "no finished trials"),
])
def test_cli_user_errors_exit_2_with_one_message(args, needle, tmp_path, capsys):
    from tune.hw_scaling import main

    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = main(args if args[0] == "analyze" else [*args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_cli_in_a_shell_exits_2_without_a_traceback_and_explains_itself(tmp_path):
    res = subprocess.run([sys.executable, "-m", "tune.hw_scaling", "--local", "--gpu-counts", "0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: --gpu-counts") and "Traceback" not in res.stderr
    from tune.hw_scaling import _analyze_parser, _sweep_parser

    help_text = _sweep_parser().format_help() + _analyze_parser().format_help()
    for flag in ("--gpu-counts", "--node-counts", "--max-trials", "--batch-size", "--max-parallel-jobs",
                 "--recipe", "--local", "--resume", "--set", "--wandb-project", "--sequential", "--out",
                 "analyze DIR"):
        assert flag in help_text, flag


def test_target_tracker_interpolates_the_crossing():
    from tune.trial import TargetTracker

    t = TargetTracker(target=0.5, gpus=2, usd_per_gpu_hour=3.0)
    first = t.update(0, 0.0, 0.0)
    assert first["reached_target"] == 0 and math.isnan(first["samples_to_target"])
    t.update(1000, 10.0, 0.4)
    hit = t.update(2000, 20.0, 0.6)
    assert hit["samples_to_target"] == pytest.approx(1500) and hit["time_to_target"] == pytest.approx(15)
    assert hit["cost_to_target"] == pytest.approx(2 * 15 / 3600 * 3.0)
    later = t.update(3000, 30.0, 0.7)
    assert later["samples_to_target"] == pytest.approx(1500) and later["best_score"] == 0.7


@pytest.mark.parametrize("pareto", [False, True])
def test_gp_searcher_starts_at_the_defaults_then_models_the_results(pareto):
    """OptunaSearch with the GP sampler, as the sweep builds it: the first
    suggestion is the recipe's defaults; the next ones come from the GP (no
    random warm-up) and lie in the hardware space."""
    from tune.search import RoundLimiter, make_searcher

    recipe = load_recipe("tune.recipes.gpt:train")
    space = recipe.space(2, 1, recipe.settings)
    searcher, used = make_searcher(space, "gp", seed=0, pareto=pareto)
    assert used == "gp" and type(searcher._ot_study.sampler).__name__ == "GPSampler"
    assert searcher._ot_study.sampler._n_startup_trials == 1
    assert searcher.metric == (["score", "cost"] if pareto else "score")
    limiter = RoundLimiter(searcher, batch_size=2)
    first = limiter.suggest("t0")
    assert first == space.default_point()
    assert limiter.suggest("t1") is None
    limiter.on_trial_complete("t0", {"score": 0.5, "cost": 1.0})
    for tid in ("t1", "t2"):
        point = limiter.suggest(tid)
        assert point is not None and point != first
        assert space.check(space.resolve(point)) == []
