"""Reptile, its task families, LoRA and the study's command line, without Ray."""

import csv
import json
import math

import pytest
import torch
from torch import nn

from studies.reptile.meta import (
    HFClassifier,
    LoRALinear,
    Reptile,
    ReptileConfig,
    ReptileUnavailable,
    SmallClassifier,
    SyntheticFamilyConfig,
    SyntheticTaskFamily,
    TextTaskFamily,
    apply_lora,
    build_model_and_family,
    preflight,
    run_reptile,
)
from studies.reptile.ntasks import main, write_study_outputs


@pytest.fixture(autouse=True)
def one_thread():
    """Deterministic and quick: tiny matmuls gain nothing from threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A study small enough for unit tests; the held-out tasks and the scratch grid shrink with it.
SMALL = dict(meta_steps=100, eval_interval=50, log_interval=10, test_tasks=60, eval_tasks=30,
             scratch_lrs=(0.3, 1.0), scratch_steps=(10,))


# -- the task family ---------------------------------------------------------------


def test_task_pools_are_reproducible_nested_and_differ_by_seed():
    family = SyntheticTaskFamily(SyntheticFamilyConfig())
    small, large = family.train_pool(10, seed=0), family.train_pool(30, seed=0)
    assert torch.equal(small.protos, large.protos[:10])  # the 10-task pool is part of the 30-task pool
    assert torch.equal(family.train_pool(10, seed=0).protos, small.protos)
    assert not torch.allclose(family.train_pool(10, seed=1).protos, small.protos)
    # Rare factors only show up in large pools.
    assert small.factors_seen() < large.factors_seen() <= family.cfg.n_factors


def test_held_out_tasks_are_one_fixed_set_apart_from_training_tasks():
    family = SyntheticTaskFamily(SyntheticFamilyConfig())
    a, b = family.test_episodes(20), family.test_episodes(20)
    assert torch.equal(a.support["x"], b.support["x"]) and torch.equal(a.query_y, b.query_y)
    assert a.support["x"].shape == (20, 25, 256) and a.query["x"].shape == (20, 75, 256)
    assert torch.equal(a.support_y[0], torch.arange(5).repeat_interleave(5))  # 5-way, 5 shots each
    train = family.train_pool(100, seed=0).protos
    test_means = a.query["x"].view(20, 5, 15, 256).mean(2)
    nearest = torch.cdist(test_means.reshape(-1, 256), train.reshape(-1, 256)).min()
    assert nearest > 1.0  # no held-out class is a training class


def test_episodes_permute_labels_so_a_task_cannot_be_memorised():
    family = SyntheticTaskFamily(SyntheticFamilyConfig())
    pool = family.train_pool(1, seed=0)
    g = torch.Generator().manual_seed(0)
    firsts = {tuple(pool.sample(1, g).support["x"][0, ::5, 0].round(decimals=0).tolist()) for _ in range(10)}
    assert len(firsts) > 1


def test_family_config_names_the_field_it_refuses():
    with pytest.raises(ValueError, match="n_factors"):
        SyntheticFamilyConfig(dim=8, n_factors=16)
    with pytest.raises(ValueError, match="eval_tasks"):
        ReptileConfig(eval_tasks=50, test_tasks=10)


# -- LoRA --------------------------------------------------------------------------


def test_lora_starts_as_the_base_layer_and_trains_only_the_adapters():
    torch.manual_seed(0)
    model = SmallClassifier(16, 8, 5)
    x = torch.randn(4, 16)
    before = model(x)
    wrapped = apply_lora(model, ["features"], rank=2, keep_trainable=("head",))
    assert wrapped == ["features"] and isinstance(model.features, LoRALinear)
    assert torch.allclose(model(x), before)  # B starts at zero
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["features.lora_A", "features.lora_B", "head.bias", "head.weight"]
    with pytest.raises(ValueError, match="no nn.Linear"):
        apply_lora(SmallClassifier(4, 4, 2), ["q_proj"], rank=2)


def test_reptile_through_lora_moves_the_adapters_and_leaves_the_base_frozen():
    cfg = ReptileConfig(lora_rank=4, **SMALL)
    model, family = build_model_and_family(cfg, seed=0, device=torch.device("cpu"))
    base = model.features.base.weight.detach().clone()
    learner = Reptile(model, cfg)
    assert set(learner.params) == {"features.lora_A", "features.lora_B", "head.weight", "head.bias"}
    pool, g = family.train_pool(50, seed=0), torch.Generator().manual_seed(0)
    test = family.test_episodes(30)
    start = learner.evaluate(test)["loss"]
    for _ in range(60):
        learner.meta_step(pool.sample(cfg.meta_batch, g))
    assert learner.params["features.lora_B"].abs().max() > 0
    assert torch.equal(model.features.base.weight, base)
    assert learner.evaluate(test)["loss"] < start - 0.05


# -- the learner ---------------------------------------------------------------------


@pytest.mark.parametrize("lora_rank", [0, 3])
def test_batched_vmap_and_loop_adaptation_agree(lora_rank):
    """The fast batched path, the vmap path and the per-task loop (the path a
    Hugging Face model takes) compute the same adapted weights."""
    cfg = ReptileConfig(lora_rank=lora_rank, **SMALL)
    family = SyntheticTaskFamily(cfg.family)
    ep = family.train_pool(5, seed=0).sample(3, torch.Generator().manual_seed(0))
    out = {}
    for mode in ("batched", "vmap", "loop"):
        model, _ = build_model_and_family(cfg, seed=0, device=torch.device("cpu"))
        learner = Reptile(model, cfg)
        learner.params = {n: v + 0.01 for n, v in learner.params.items()}  # a non-zero head start too
        learner.batched = mode == "batched"
        learner.vectorize = mode != "loop"
        out[mode] = learner._adapt_all(learner.params, ep.support, ep.support_y, 4, 0.5)
    for name in out["batched"]:
        assert torch.allclose(out["batched"][name], out["vmap"][name], atol=1e-5)
        assert torch.allclose(out["loop"][name], out["vmap"][name], atol=1e-5)


@pytest.fixture(scope="module")
def many_and_few(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = ReptileConfig(**SMALL)
    out = tmp_path_factory.mktemp("reptile") / "ntasks_300_seed_0"
    reports = []
    many = run_reptile(cfg, n_tasks=300, seed=0, out_dir=out, report=reports.append)
    few = run_reptile(cfg, n_tasks=3, seed=0)
    return many, few, out, reports


@pytest.mark.slow
def test_meta_learning_beats_fine_tuning_from_scratch_on_held_out_tasks(many_and_few):
    many, _, _, _ = many_and_few
    b = many["baselines"]
    assert many["meta_test_loss"] < b["scratch_tuned"]["loss"] - 0.1
    assert many["meta_test_loss"] < b["scratch"]["loss"] - 0.1
    assert many["meta_test_acc"] > b["scratch_tuned"]["acc"] + 0.05
    assert b["zero_shot"]["loss"] == pytest.approx(math.log(5), abs=1e-4)  # chance: labels are permuted
    assert many["meta_beats_scratch"] is True


@pytest.mark.slow
def test_more_training_tasks_give_a_lower_held_out_loss(many_and_few):
    many, few, _, _ = many_and_few
    assert many["meta_test_loss"] < few["meta_test_loss"] - 0.05
    # Same initial weights, same held-out tasks: the baselines do not depend on N_tasks.
    assert many["baselines"]["scratch"]["loss"] == few["baselines"]["scratch"]["loss"]


@pytest.mark.slow
def test_a_run_writes_its_files_and_reports_every_evaluation(many_and_few):
    many, _, out, reports = many_and_few
    assert json.loads((out / "config.json").read_text())["n_tasks"] == 300
    assert json.loads((out / "final_result.json").read_text())["meta_test_loss"] == many["meta_test_loss"]
    evals = list(csv.DictReader((out / "eval_stats.csv").open()))
    assert [int(r["step"]) for r in evals] == [0, 50, 100]
    assert float(evals[-1]["test_loss"]) < float(evals[0]["test_loss"])
    train = list(csv.DictReader((out / "train_stats.csv").open()))
    assert [int(r["step"]) for r in train] == list(range(10, 101, 10))
    assert [r["step"] for r in reports] == [0, 50, 100] and reports[0]["n_tasks"] == 300


# -- the Hugging Face path, with stand-ins (transformers is not needed) ---------------


class _Tokenizer:
    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        ids = torch.zeros(len(texts), max_length, dtype=torch.long)
        mask = torch.zeros(len(texts), max_length, dtype=torch.long)
        for i, t in enumerate(texts):
            toks = [hash(w) % 97 + 1 for w in t.split()][:max_length]
            ids[i, : len(toks)] = torch.tensor(toks)
            mask[i, : len(toks)] = 1
        return {"input_ids": ids, "attention_mask": mask}


class _Backbone(nn.Module):
    """What AutoModel returns, in miniature: last_hidden_state from token ids."""

    def __init__(self, hidden=16):
        super().__init__()
        self.embed = nn.Embedding(100, hidden)
        self.q_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)

    def forward(self, input_ids, attention_mask):
        h = self.embed(input_ids)
        return type("Out", (), {"last_hidden_state": self.v_proj(torch.tanh(self.q_proj(h)))})()


def _rows(n_classes, per_class, offset=0):
    return [(f"intent{c} word{c} sample{i}", c) for c in range(n_classes) for i in range(offset, offset + per_class)]


def test_text_tasks_split_intents_and_reptile_runs_on_an_hf_style_model_with_lora():
    family = TextTaskFamily(_rows(12, 22), _rows(12, 3, offset=22), _Tokenizer(), ways=3, shots=2, queries=3,
                            max_length=8, train_fraction=0.6)
    assert not set(family.train_classes) & set(family.test_classes)
    test = family.test_episodes(4)
    assert test.support["input_ids"].shape == (4, 6, 8) and test.query_y.shape == (4, 9)
    torch.manual_seed(0)
    model = HFClassifier(_Backbone(), 16, ways=3)
    apply_lora(model, ("q_proj", "v_proj"), rank=2, keep_trainable=("head",))
    cfg = ReptileConfig(ways=3, shots=2, queries=3, model="hf", task_family="banking77", inner_steps=2,
                        meta_steps=5, eval_inner_steps=2, test_tasks=4, eval_tasks=4)
    learner = Reptile(model, cfg)
    assert not learner.vectorize and not learner.batched  # a large model adapts task by task
    pool = family.train_pool(10, seed=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        stats = learner.meta_step(pool.sample(2, g))
    assert math.isfinite(stats["train_query_loss"])
    assert learner.params["backbone.q_proj.lora_B"].abs().max() > 0
    assert 0.0 <= learner.evaluate(test)["acc"] <= 1.0


def test_the_hf_path_says_what_is_missing():
    try:
        import transformers  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("transformers is installed here")
    cfg = ReptileConfig(model="hf", task_family="banking77")
    with pytest.raises(ReptileUnavailable, match="transformers"):
        preflight(cfg)


# -- the study's outputs and command line, without Ray -------------------------------


def _fake_result(n, seed, loss):
    b = {"loss": 1.2, "acc": 0.5}
    return {"n_tasks": n, "seed": seed, "meta_test_loss": loss, "meta_test_acc": 0.7, "meta_test_loss_sem": 0.01,
            "baselines": {"zero_shot": {"loss": math.log(5), "acc": 0.2}, "scratch": {"loss": 1.3, "acc": 0.45},
                          "scratch_tuned": {**b, "lr": 1.0, "steps": 10}},
            "train_query_loss": 0.5, "factors_seen": 10, "meta_steps": 100, "wall_s": 1.0}


def test_study_outputs_fit_the_law_and_compare_with_baselines(tmp_path):
    results = [_fake_result(n, s, 1.1 * n ** -0.05 * (1 + 0.003 * s)) for n in (10, 30, 100, 300) for s in (0, 1)]
    summary = write_study_outputs(tmp_path, results, {"quick": True}, n_bootstrap=200)
    for name in ("scaling_law_results.csv", "power_law_fit.json", "scaling_law_plot.png", "baseline_comparison.png",
                 "summary_report.json"):
        assert (tmp_path / name).is_file(), name
    fit = json.loads((tmp_path / "power_law_fit.json").read_text())
    assert fit["beta"] == pytest.approx(0.05, abs=0.002)
    assert fit["intervals"]["beta"][0] <= 0.05 <= fit["intervals"]["beta"][1]
    assert fit["r2"] > 0.99
    assert len(list(csv.DictReader((tmp_path / "scaling_law_results.csv").open()))) == 8
    assert summary["meta_beats_scratch_at_every_n_tasks"] and summary["mean_loss_decreases_with_n_tasks"]
    assert json.loads((tmp_path / "summary_report.json").read_text())["power_law"]["beta"] == fit["beta"]


@pytest.mark.parametrize("argv, message", [
    (["--n-tasks", "0", "10"], "positive integer"),
    (["--n-tasks", "-5", "10"], "positive integer"),
    (["--n-tasks", "ten"], "positive integer"),
    (["--n-tasks", "50", "50"], "at least two different values"),
    (["--eval-tasks", "500", "--test-tasks", "100", "--n-tasks", "5", "10"], "--eval-tasks (500)"),
])
def test_bad_arguments_exit_2_with_one_message_and_write_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "study"
    try:
        code = main([*argv, "--out", str(out)])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_an_unwritable_or_used_out_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["--n-tasks", "5", "10", "--out", str(blocker / "study")]) == 2
    assert "not a writable folder" in capsys.readouterr().err
    used = tmp_path / "used"
    used.mkdir()
    (used / "something.txt").write_text("x")
    assert main(["--n-tasks", "5", "10", "--out", str(used)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert sorted(p.name for p in used.iterdir()) == ["something.txt"]


def test_resuming_with_other_settings_is_refused_before_anything_runs(tmp_path, capsys):
    run = tmp_path / "study" / "ntasks_5_seed_0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"reptile": ReptileConfig(meta_steps=60).model_dump(mode="json")}))
    (run / "final_result.json").write_text("{}")
    argv = ["--n-tasks", "5", "10", "--seeds", "0", "--meta-steps", "90", "--out", str(tmp_path / "study"), "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "meta_steps 60 -> 90" in err
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == ["ntasks_5_seed_0"]


def test_help_explains_the_study(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for words in ("N_tasks", "--quick", "--resume", "power_law_fit.json", "--gpus-per-trial", "held-out"):
        assert words in text
