"""ScalePlan validation and the offline planner's rules."""

import json

import pytest
from pydantic import ValidationError

from actors.scaler.planners import TOKENS_PER_PARAM, OfflinePlanner
from actors.scaler.plan import ScalePlan
from train.spec import TrainSpec
from train.estimate import check_fits
from train.limits import MAX_HOURS
from tests.support import pristine_examples


def plan_dict(**changes):
    base = {
        "mve_id": "007",
        "title": "GQA at 25M on MQAR",
        "rationale": "the MVE kept recall with half the KV heads",
        "model": {"family": "gpt", "d_model": 384, "n_layers": 6, "n_heads": 6, "n_kv_heads": 2},
        "target_params": 25_000_000,
        "benchmark": "mqar",
        "data_params": {"num_kv_pairs": 16},
        "seq_len": 256,
        "optim": {"lr": 6e-4, "batch_size": 32},
        "max_steps": 5000,
        "eval_interval": 250,
        "gpus": 2,
        "hours": 4,
        "baselines": [{"name": "mha", "family": "gpt", "why": "full KV heads"}],
        "success_criteria": ["val_accuracy >= 0.95"],
    }
    base.update(changes)
    return base


def test_a_valid_plan_becomes_a_train_spec_inside_the_limits():
    spec = ScalePlan.model_validate(plan_dict()).to_train_spec()
    assert (spec.name, spec.resources.gpus, spec.budget.max_hours, spec.data.benchmark) == ("007_scaled", 2, 4, "mqar")
    assert spec.model.n_kv_heads == 2 and spec.data.params == {"num_kv_pairs": 16}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"gpus": 4}, ["gpus", "hard limit is 2 GPUs"]),
        ({"hours": 10}, ["hours", "hard limit is 6 hours"]),
        ({"benchmark": "imagenet"}, ["benchmark", "unknown benchmark 'imagenet'"]),
        ({"mve_id": "7"}, ["mve_id", "three-digit"]),
        ({"success_criteria": []}, ["success_criteria"]),
    ],
)
def test_plans_over_the_limits_or_malformed_are_refused_by_name(change, words):
    with pytest.raises(ValidationError) as err:
        ScalePlan.model_validate(plan_dict(**change))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_plan_too_big_for_80gb_per_gpu_is_refused_on_construction():
    big = {"family": "gpt", "d_model": 8192, "n_layers": 64, "n_heads": 64}
    with pytest.raises(ValidationError) as err:
        ScalePlan.model_validate(plan_dict(model=big, seq_len=2048))
    assert "GB per GPU; the hard limit is 80 GB" in str(err.value), str(err.value)


def test_the_same_spec_is_a_valid_train_spec_outside_a_plan():
    """The limits belong to scaled experiments: the TrainSpec a sweep or a user
    writes may say 4 GPUs, 10 hours or a model over 80 GB."""
    raw = ScalePlan.model_validate(plan_dict()).to_train_spec().model_dump(mode="json")
    raw["resources"]["gpus"], raw["budget"]["max_hours"] = 4, 10
    raw["model"].update(d_model=8192, n_layers=64, n_heads=64, n_kv_heads=None)
    spec = TrainSpec.parse(raw)
    assert (spec.resources.gpus, spec.budget.max_hours) == (4, 10)


@pytest.mark.parametrize("path", ["../outside.py", "/etc/passwd", "models/../../x.py", "~/x.py", "a\\..\\b.py", ""])
def test_file_paths_from_the_llm_cannot_escape_the_folder(path):
    with pytest.raises(ValidationError, match="escapes the experiment folder"):
        ScalePlan.model_validate(plan_dict(files={path: "print(1)"}))


@pytest.mark.parametrize("path", ["../outside.py", "/etc/passwd", "models/../../x.py", "~/x.py"])
def test_a_model_path_from_the_llm_cannot_escape_the_folder(path):
    with pytest.raises(ValidationError, match="model.path .* escapes the experiment folder"):
        ScalePlan.model_validate(plan_dict(model={"family": "custom", "path": path}))


MODEL_FILE = """
from torch import nn

class Net(nn.Module):
    def __init__(self, vocab_size, seq_len, width=64):
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab_size, width), nn.Linear(width, vocab_size)
    def forward(self, idx):
        return self.head(self.emb(idx))
"""


def test_a_custom_model_the_plan_brings_is_built_from_its_files_and_run_from_the_folder(tmp_path):
    plan = ScalePlan.model_validate(plan_dict(model={"family": "custom", "path": "models/net.py",
                                                     "kwargs": {"width": 32}},
                                              files={"models/net.py": MODEL_FILE}))
    vocab = 8192  # mqar
    assert plan.checked_estimate().params == vocab * 32 + (32 * vocab + vocab)  # embedding, head
    # Where the experiment is written, the spec's model file is that folder's.
    (tmp_path / "models").mkdir()
    (tmp_path / "models/net.py").write_text(MODEL_FILE)
    assert plan.to_train_spec(tmp_path).model.path == str(tmp_path / "models/net.py")
    assert plan.to_train_spec().model.path == "models/net.py"  # config.yaml keeps it relative


def test_allowed_files_stay_relative():
    plan = ScalePlan.model_validate(plan_dict(files={"models/model.py": "import torch"}))
    assert plan.files == {"models/model.py": "import torch"}


@pytest.mark.parametrize(
    "facts",
    [
        {"benchmark": "mqar", "model_family": "gpt", "seq_len": 256, "value": 0.93, "params": 120_000},
        {"benchmark": "bytes", "model_family": "rnn", "seq_len": 512},
        {"benchmark": "bytes", "model_family": "gpt", "seq_len": 1024, "metric": "val_bpb", "value": 2.1},
    ],
)
def test_offline_plans_are_typical_size_fit_and_follow_the_token_rule(facts):
    plan = OfflinePlanner().design("003", facts)
    est = check_fits(plan.to_train_spec())
    assert 10e6 <= est.params <= 50e6
    assert plan.model.family == facts["model_family"] and plan.benchmark == facts["benchmark"]
    assert est.projected_hours <= plan.hours <= MAX_HOURS and plan.gpus in (1, 2)
    tokens = plan.max_steps * plan.optim.batch_size * plan.seq_len * plan.gpus
    assert tokens == pytest.approx(TOKENS_PER_PARAM * est.params, rel=0.01)
    assert plan.baselines[0].family != plan.model.family
    assert est.cost_usd == pytest.approx(est.gpu_hours * 2.0)


def test_offline_planner_cuts_the_token_budget_to_the_deadline():
    plan = OfflinePlanner(target_params=600_000_000).design("004", {"benchmark": "bytes", "seq_len": 1024})
    est = check_fits(plan.to_train_spec())
    assert plan.gpus == 2 and plan.hours <= MAX_HOURS
    assert plan.max_steps * 32 * 1024 * 2 < TOKENS_PER_PARAM * est.params  # cut, not the full 20 tokens/param
    assert est.compute_hours <= 0.9 * MAX_HOURS * 1.01


def test_the_offline_plan_keeps_the_mlp_the_mve_tested():
    # examples/experiments/003: a SwiGLU MLP against a GELU one in a small GPT.
    from actors.scaler.planners import OfflinePlanner

    facts = json.loads((pristine_examples() / "experiments/003_swiglu_mlp_bytes/results.json").read_text())
    plan = OfflinePlanner().design("003", facts)
    assert plan.model.family == "gpt" and plan.model.kwargs == {"mlp": "swiglu"}
    assert "keeps the MVE's mlp=swiglu" in plan.rationale
    assert OfflinePlanner().design("003", {**facts, "mlp": "GELU"}).model.kwargs == {"mlp": "gelu"}
    assert OfflinePlanner().design("003", {k: v for k, v in facts.items() if k != "mlp"}).model.kwargs == {}
