"""TrainSpec validation, the hard limits, YAML, overrides, and train.estimate."""

from pathlib import Path

import pytest

from train.estimate import check_fits, estimate, vocab_size_of
from train.limits import LimitExceeded
from train.spec import SpecError, TrainSpec

ROOT = Path(__file__).resolve().parents[3]


def test_the_shipped_tiny_spec_loads():
    spec = TrainSpec.from_yaml(ROOT / "examples/specs/tiny_cpu.yaml")
    assert spec.resources.gpus == 0 and spec.data.benchmark == "bytes"


@pytest.mark.parametrize(
    "override, field, limit",
    [
        ("resources.gpus=4", "resources.gpus", "the hard limit is 2 GPUs"),
        ("budget.max_hours=10", "budget.max_hours", "the hard limit is 6 hours"),
    ],
)
def test_over_the_hard_limits_is_refused_naming_field_and_limit(override, field, limit):
    with pytest.raises(SpecError) as err:
        TrainSpec().with_overrides([override])
    assert field in str(err.value) and limit in str(err.value)


def test_a_model_too_big_for_80gb_is_refused_on_construction():
    with pytest.raises(SpecError) as err:
        TrainSpec.parse(
            {"model": {"d_model": 8192, "n_layers": 64, "n_heads": 64}, "resources": {"gpus": 2},
             "data": {"seq_len": 2048}}
        )
    assert "GB per GPU; the hard limit is 80 GB" in str(err.value)


def test_a_misspelt_field_is_an_error_not_ignored():
    with pytest.raises(SpecError, match=r"optim.learning_rate: unknown field"):
        TrainSpec.parse({"optim": {"learning_rate": 0.1}})


def test_unknown_benchmark_names_the_choices():
    with pytest.raises(SpecError, match="unknown benchmark 'imagenet'; choose one of bytes, mqar"):
        TrainSpec.parse({"data": {"benchmark": "imagenet"}})


def test_yaml_round_trip(tmp_path):
    spec = TrainSpec().with_overrides(["optim.lr=0.01", "model.n_kv_heads=2", "data.params.max_bytes=1000"])
    spec.to_yaml(tmp_path / "s.yaml")
    assert TrainSpec.from_yaml(tmp_path / "s.yaml") == spec


def test_bad_yaml_and_missing_files_are_clear(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        TrainSpec.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(SpecError, match="no such file"):
        TrainSpec.from_yaml(tmp_path / "missing.yaml")


def test_overrides_parse_values_and_refuse_unknown_keys():
    spec = TrainSpec().with_overrides(["budget.max_steps=7", "logging.tensorboard=false", "precision=fp32"])
    assert (spec.budget.max_steps, spec.logging.tensorboard, spec.precision) == (7, False, "fp32")
    with pytest.raises(SpecError, match="has no field 'budget.max_stepz'"):
        TrainSpec().with_overrides(["budget.max_stepz=7"])
    with pytest.raises(SpecError, match="expected key.path=value"):
        TrainSpec().with_overrides(["budget.max_steps"])


def test_estimate_counts_the_real_model_and_prices_gpu_hours():
    from train.estimate import build_model_for
    from train.models import count_parameters

    spec = TrainSpec().with_overrides(["resources.gpus=2", "budget.max_steps=20000", "budget.max_hours=6"])
    est = check_fits(spec)
    assert est.params == count_parameters(build_model_for(spec, "cpu"))
    assert est.memory_per_gpu_gb == pytest.approx(
        est.weights_gb + est.grads_gb + est.optimizer_gb + est.activations_gb + est.overhead_gb
    )
    assert est.tokens_per_step == 32 * 256 * 2
    assert est.gpu_hours == pytest.approx(est.projected_hours * 2)
    assert est.cost_usd == pytest.approx(est.gpu_hours * 2.00)
    # The projection never exceeds what the deadline allows.
    long = TrainSpec().with_overrides(["resources.gpus=1", "budget.max_steps=100000000", "budget.max_hours=2"])
    assert estimate(long).projected_hours == 2


def test_memory_grows_with_batch_and_check_fits_names_the_limit():
    small = estimate(TrainSpec().with_overrides(["optim.batch_size=8"]))
    big = estimate(TrainSpec().with_overrides(["optim.batch_size=64"]))
    assert big.activations_gb == pytest.approx(8 * small.activations_gb, rel=0.01)
    # CPU specs are not refused at parse time; check_fits refuses a GPU one that does not fit.
    spec = TrainSpec.parse({"model": {"d_model": 8192, "n_layers": 64, "n_heads": 64}, "data": {"seq_len": 2048}})
    spec_gpu = spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpus": 1})})
    with pytest.raises(LimitExceeded, match="hard limit is 80 GB"):
        check_fits(spec_gpu)


@pytest.mark.parametrize("benchmark, params", [("bytes", {"max_bytes": 200_000}), ("mqar", {})])
def test_vocab_sizes_read_from_the_spec_match_the_datasets(benchmark, params):
    from train.data import build_dataset

    spec = TrainSpec.parse({"data": {"benchmark": benchmark, "seq_len": 64, "params": params}})
    assert vocab_size_of(spec.data) == build_dataset(benchmark, seq_len=64, **params).vocab_size
