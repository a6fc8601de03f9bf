"""TrainSpec validation, the hard limits, YAML, overrides, and train.estimate."""

import re
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
        ("resources.gpus=4", "resources.gpus", "asks for 4 GPUs; the hard limit is 2 GPUs per experiment"),
        ("budget.max_hours=10", "budget.max_hours", "asks for 10 hours; the hard limit is 6 hours per experiment"),
    ],
)
def test_over_the_hard_limits_is_a_valid_spec_that_check_fits_refuses_by_field_and_limit(override, field, limit):
    spec = TrainSpec().with_overrides([override])  # any job may be described honestly
    with pytest.raises(LimitExceeded) as err:
        check_fits(spec)  # a scaled experiment may not ask for it
    assert f"{field}: {limit}" in str(err.value)


def test_check_fits_names_every_limit_a_spec_breaks():
    spec = TrainSpec.parse(
        {"model": {"d_model": 8192, "n_layers": 64, "n_heads": 64}, "data": {"seq_len": 2048},
         "resources": {"gpus": 8}, "budget": {"max_hours": 12}}
    )
    assert spec.resources.gpus == 8 and spec.resources.workers == 8
    with pytest.raises(LimitExceeded) as err:
        check_fits(spec)
    text = str(err.value)
    assert "resources.gpus: asks for 8 GPUs; the hard limit is 2 GPUs per experiment" in text
    assert "budget.max_hours: asks for 12 hours; the hard limit is 6 hours per experiment" in text
    assert re.search(r"optim.batch_size/data.seq_len/model: needs [\d.]+ GB per GPU; the hard limit is 80 GB", text)


def test_a_model_too_big_for_80gb_is_a_valid_spec_that_check_fits_refuses():
    spec = TrainSpec.parse(
        {"model": {"d_model": 8192, "n_layers": 64, "n_heads": 64}, "resources": {"gpus": 2},
         "data": {"seq_len": 2048}}
    )
    assert estimate(spec).memory_per_gpu_gb > 80
    with pytest.raises(LimitExceeded) as err:
        check_fits(spec)
    assert "optim.batch_size/data.seq_len/model: needs" in str(err.value)
    assert "GB per GPU; the hard limit is 80 GB" in str(err.value)


def test_spec_and_estimate_do_not_import_each_other():
    import ast

    def imports(module: str) -> set[str]:
        tree = ast.parse((ROOT / "train" / f"{module}.py").read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    assert "train.estimate" not in imports("spec") and "train.limits" not in imports("spec")
    assert "train.spec" in imports("estimate")


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
    # A GPU job is checked against the 80 GB of one GPU.
    spec = TrainSpec.parse({"model": {"d_model": 8192, "n_layers": 64, "n_heads": 64}, "data": {"seq_len": 2048},
                            "resources": {"gpus": 1}})
    with pytest.raises(LimitExceeded, match="hard limit is 80 GB"):
        check_fits(spec)


GPT3_175B = {"model": {"d_model": 12288, "n_layers": 96, "n_heads": 96}, "data": {"seq_len": 2048}}


def test_cpu_training_is_checked_against_this_machines_memory():
    from train.limits import machine_memory_gb

    huge = TrainSpec.parse({**GPT3_175B, "resources": {"gpus": 0}})
    have = machine_memory_gb()
    with pytest.raises(LimitExceeded) as err:
        check_fits(huge)
    need = float(re.search(r"training on CPU needs ([\d,.]+) GB of memory for 1 worker\(s\)",
                           str(err.value)).group(1).replace(",", ""))
    assert need > 175e9 * 20 / 1024**3  # weights, gradients, DDP buckets and AdamW: 20 bytes a parameter
    assert f"this machine has {have:,.1f} GB" in str(err.value)
    # The shipped tiny spec trains on CPU and fits easily; every worker holds a replica.
    tiny = TrainSpec.from_yaml(ROOT / "examples/specs/tiny_cpu.yaml")
    one = check_fits(tiny).memory_cpu_gb
    assert 0.5 < one < min(2.0, have)
    assert estimate(tiny.with_overrides(["resources.cpu_workers=2"])).memory_cpu_gb == pytest.approx(2 * one)


def test_custom_model_path_is_taken_from_the_spec_files_folder(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp/my_model.py").write_text("from torch import nn\nclass M(nn.Linear):\n    pass\n")
    (tmp_path / "exp/spec.yaml").write_text("model: {family: custom, path: my_model.py}\n")
    monkeypatch.chdir(tmp_path)  # not the spec's folder
    spec = TrainSpec.from_yaml("exp/spec.yaml")
    assert spec.model.path == str(tmp_path / "exp/my_model.py")
    # Missing: refused when the spec is read, naming the folder it looked in.
    (tmp_path / "exp/spec.yaml").write_text("model: {family: custom, path: models/nope.py}\n")
    with pytest.raises(SpecError, match=r"model.path: .*/exp/models/nope.py is not a file \(relative paths are "
                                        r"taken from .*/exp\)"):
        TrainSpec.from_yaml(tmp_path / "exp/spec.yaml")


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.py", "models/../../outside.py", "link/m.py"])
def test_model_paths_an_llm_wrote_stay_inside_the_experiment_folder(tmp_path, path):
    folder = tmp_path / "001_scaled"
    (folder / "models").mkdir(parents=True)
    (tmp_path / "outside.py").write_text("x = 1\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/m.py").write_text("x = 1\n")
    (folder / "link").symlink_to(tmp_path / "elsewhere")
    spec = TrainSpec.parse({"model": {"family": "custom", "path": path}})
    with pytest.raises(SpecError, match="escapes the experiment folder"):
        spec.with_paths_from(folder, confine=True)
    (folder / "models/m.py").write_text("x = 1\n")
    inside = TrainSpec.parse({"model": {"family": "custom", "path": "models/m.py"}})
    assert inside.with_paths_from(folder, confine=True).model.path == str(folder / "models/m.py")


@pytest.mark.parametrize("benchmark, params", [("bytes", {"max_bytes": 200_000}), ("mqar", {})])
def test_vocab_sizes_read_from_the_spec_match_the_datasets(benchmark, params):
    from train.data import build_dataset

    spec = TrainSpec.parse({"data": {"benchmark": benchmark, "seq_len": 64, "params": params}})
    assert vocab_size_of(spec.data) == build_dataset(benchmark, seq_len=64, **params).vocab_size
