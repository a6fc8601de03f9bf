"""Reptile, its task families, LoRA and the study's command line, without Ray."""

import csv
import json
import math
import sys

import pytest
import torch

from studies.reptile.config import ReptileConfig, ReptileUnavailable, SyntheticFamilyConfig
from studies.reptile.meta import Reptile, run_reptile
from studies.reptile.models import HFClassifier, SmallClassifier, add_lora, build_model_and_family, preflight
from studies.reptile.tasks import SyntheticTaskFamily
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
    pytest.importorskip("peft")
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(0)
    model = SmallClassifier(16, 8, 5)
    x = torch.randn(4, 16)
    before = model(x)
    wrapped = add_lora(model, ["features"], rank=2, trainable=("head",))
    assert wrapped == ["features"] and isinstance(model.features, LoraLayer)
    assert torch.allclose(model(x), before)  # B starts at zero
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["features.lora_A.default.weight", "features.lora_B.default.weight", "head.bias",
                         "head.weight"]
    with pytest.raises(ValueError, match="no nn.Linear"):
        add_lora(SmallClassifier(4, 4, 2), ["q_proj"], rank=2)


def test_reptile_through_lora_moves_the_adapters_and_leaves_the_base_frozen():
    pytest.importorskip("peft")
    cfg = ReptileConfig(lora_rank=4, **SMALL)
    model, family = build_model_and_family(cfg, seed=0, device=torch.device("cpu"))
    base = model.features.base_layer.weight.detach().clone()
    learner = Reptile(model, cfg)
    assert set(learner.params) == {"features.lora_A.default.weight", "features.lora_B.default.weight",
                                   "head.weight", "head.bias"}
    pool, g = family.train_pool(50, seed=0), torch.Generator().manual_seed(0)
    test = family.test_episodes(30)
    start = learner.evaluate(test)["loss"]
    for _ in range(60):
        learner.meta_step(pool.sample(cfg.meta_batch, g))
    assert learner.params["features.lora_B.default.weight"].abs().max() > 0
    assert torch.equal(model.features.base_layer.weight, base)
    assert learner.evaluate(test)["loss"] < start - 0.05


# -- the learner ---------------------------------------------------------------------


@pytest.mark.parametrize("lora_rank", [0, 3])
def test_batched_vmap_and_loop_adaptation_agree(lora_rank):
    """The fast batched path, the vmap path and the per-task loop (the path a
    Hugging Face model takes) compute the same adapted weights."""
    if lora_rank:
        pytest.importorskip("peft")
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


# -- the Hugging Face path: real transformers and peft on a tiny random Llama ----------

INTENTS = ["card_lost", "refund", "top_up", "pin_blocked", "exchange_rate", "transfer_failed", "atm_fee",
           "cash_back", "card_arrival", "balance_wrong", "password_reset", "direct_debit"]
FILLER = "please help me with my account today now".split()


def _banking_rows(per_class: int, offset: int = 0) -> list[tuple[str, str]]:
    """Utterances whose intent word is the signal, among filler words that vary."""
    return [(" ".join([FILLER[(i + c) % len(FILLER)], intent, FILLER[(3 * i + c) % len(FILLER)], intent]), intent)
            for c, intent in enumerate(INTENTS) for i in range(offset, offset + per_class)]


@pytest.fixture
def offline_hub(monkeypatch):
    """Nothing may be downloaded: the Hub client refuses to reach the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A Hugging Face model folder shaped like TinyLlama (LlamaForCausalLM and a
    fast tokenizer) at a few thousand parameters: random weights from
    transformers.LlamaConfig and a word-level tokenizer built here."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({w for text, _ in _banking_rows(1) for w in text.split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path_factory.mktemp("tiny_llama")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
    config = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=0)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def banking77_csvs(tmp_path):
    folder = tmp_path / "banking77"
    folder.mkdir()
    for name, rows in (("train.csv", _banking_rows(8)), ("test.csv", _banking_rows(3, offset=8))):
        with (folder / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "category"])
            w.writerows(rows)
    return folder


def _hf_config(tiny_llama, banking77_csvs, **changes) -> ReptileConfig:
    return ReptileConfig(**{
        "model": "hf", "task_family": "banking77", "hf_model": str(tiny_llama), "banking77_path": str(banking77_csvs),
        "ways": 3, "shots": 2, "queries": 3, "max_length": 8, "lora_rank": 4, "inner_steps": 2, "inner_lr": 0.5,
        "meta_batch": 2, "meta_steps": 6, "eval_interval": 3, "log_interval": 3, "eval_inner_steps": 5,
        "eval_tasks": 6, "test_tasks": 6, "scratch_lrs": (0.5,), "scratch_steps": (5,), "device": "cpu", **changes})


def test_the_hf_path_meta_learns_lora_adapters_on_a_llama_with_nothing_downloaded(
        tiny_llama, banking77_csvs, offline_hub, tmp_path):
    cfg = _hf_config(tiny_llama, banking77_csvs)
    preflight(cfg)  # what the study checks before any trial starts
    model, family = build_model_and_family(cfg, seed=0, device=torch.device("cpu"))
    assert isinstance(model, HFClassifier) and type(model.backbone).__name__ == "LlamaModel"
    assert not set(family.train_classes) & set(family.test_classes)  # held-out intents are unseen
    lora = sorted(n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
    assert len(lora) == 2 * 2 * 2  # A and B on q_proj and v_proj of both layers
    assert all(".self_attn.q_proj." in n or ".self_attn.v_proj." in n for n in lora)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    learner = Reptile(model, cfg)
    assert not learner.vectorize and not learner.batched  # a large model adapts task by task
    pool, g = family.train_pool(10, seed=0), torch.Generator().manual_seed(0)
    for _ in range(3):
        stats = learner.meta_step(pool.sample(cfg.meta_batch, g))
    assert math.isfinite(stats["train_query_loss"])
    b_name = next(n for n in lora if "lora_B" in n)
    assert learner.params[b_name].abs().max() > 0  # the adapters moved
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)

    # The whole run, as a Tune trial runs it: files, baselines, a classifier that
    # tells the held-out intents apart after adapting to 2 examples of each.
    result = run_reptile(cfg, n_tasks=10, seed=0, out_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run/final_result.json").read_text())["meta_test_loss"] == result["meta_test_loss"]
    assert math.isfinite(result["meta_test_loss"]) and result["test_tasks"] == 6
    assert result["meta_test_acc"] > 1 / 3 + 0.2
    assert set(result["baselines"]) == {"zero_shot", "scratch", "scratch_tuned"}


def test_the_hf_path_says_what_is_missing(tiny_llama, banking77_csvs, offline_hub, tmp_path, monkeypatch, capsys):
    with pytest.raises(ReptileUnavailable, match="could not find the model"):
        preflight(_hf_config(tmp_path / "no_model_here", banking77_csvs))
    with pytest.raises(ReptileUnavailable, match="Banking77 not found"):
        preflight(_hf_config(tiny_llama, tmp_path / "no_data_here"))
    monkeypatch.setitem(sys.modules, "transformers", None)  # as where the hf extra is not installed
    with pytest.raises(ReptileUnavailable, match=r"transformers.*pip install -e '\.\[hf\]'"):
        preflight(_hf_config(tiny_llama, banking77_csvs))
    # The command line says it in one line, before Ray starts or anything is written.
    out = tmp_path / "study"
    code = main(["--model", "hf", "--task-family", "banking77", "--hf-model", str(tiny_llama),
                 "--banking77-path", str(banking77_csvs), "--n-tasks", "5", "10", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "transformers" in err and "Traceback" not in err
    assert not out.exists()


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
