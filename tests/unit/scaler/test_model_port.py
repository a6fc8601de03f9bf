"""The offline planner scales the MVE's own model (no Ray; the MVE's code is
imported only in the sandboxed child). Fixtures: tests/fixtures/mves, research
folders whose models are not GPTs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from actors.scaler.model_port import NoModel, code_folders, local_imports, rehearsal_kwargs
from actors.scaler.planners import OfflinePlanner
from actors.scaler.scaffold import write_scaled_experiment
from actors.scaler.steps import run_smoke
from train.estimate import Estimate

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mves"


@pytest.fixture
def research(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "research")
    return tmp_path / "research"


def plan_mve(research: Path, mve_id: str, target: int = 2_000_000):
    folder = next((research / "experiments").glob(f"{mve_id}_*"))
    facts = json.loads((folder / "results.json").read_text())
    return OfflinePlanner(target_params=target).plan_mve(mve_id, code_folders(research / "code" / mve_id, folder), facts)


@pytest.mark.slow
@pytest.mark.parametrize("mve_id, source, class_name, kwargs, files", [
    # a GRU whose sizes are n_vocab/hidden/n_layer, forward -> (logits, state), code beside its notes
    ("010", "experiments/010_gru_lm_bytes/gru_lm.py:ResidualGRULM", "PortedResidualGRULM",
     {"n_vocab": 256}, {"models/gru_lm.py"}),
    # nanoGPT style: a package with relative imports, GPT(config), logits at every position only with targets
    ("011", "code/011/models/gpt.py:GPT", "PortedGPT", {"vocab_size": 256, "block_size": 64},
     {"models/models/gpt.py", "models/models/attention.py", "models/models/__init__.py"}),
])
def test_the_offline_planner_ports_models_written_in_other_styles(research, mve_id, source, class_name, kwargs,
                                                                   files, tmp_path):
    plan, said, est = plan_mve(research, mve_id)
    assert said == f"its own model, {source}"
    assert plan.model.family == "custom" and plan.model.class_name == class_name
    assert kwargs.items() <= plan.model.kwargs.items()  # the data's vocabulary and context, by the model's names
    assert files <= set(plan.files) and plan.model.path in plan.files
    for rel in files:  # copied unchanged
        original = research / source.split(":")[0]
        src_root = original.parent if mve_id == "010" else research / "code/011"
        assert plan.files[rel] == (src_root / rel.removeprefix("models/")).read_text()
    assert abs(est["params"] - 2_000_000) / 2_000_000 < 0.05 and est["params"] == plan.target_params
    assert plan.baselines[0].family == "gpt" and "same-size" in plan.baselines[0].name
    # the scaffolded folder's own smoke test passes at the planned size (the MVE's code runs in a child)
    folder = write_scaled_experiment(plan, tmp_path / "code", Estimate(**est), source=said)
    run = run_smoke(folder, timeout_s=240)
    assert run.ok, run.tail
    report = json.loads(run.tail.splitlines()[-1])
    assert report["params"] == plan.target_params and report["checks"]["forward_backward"]["ok"]


@pytest.mark.parametrize("mve_id, words", [
    ("012", "looks like a kernel benchmark"),
    ("013", "it has no code (an analysis)"),
])
def test_an_mve_without_a_model_is_declined_offline_never_dressed_up_as_a_gpt(research, mve_id, words):
    with pytest.raises(NoModel) as exc:
        plan_mve(research, mve_id)
    assert words in str(exc.value) and "needs the LLM planner (set ANTHROPIC_API_KEY)" in str(exc.value)


@pytest.mark.slow
def test_a_model_needing_an_argument_nothing_records_is_declined_naming_it(research):
    with pytest.raises(NoModel, match=r"HyenaLM needs `order`, which neither results.json nor a config file"):
        plan_mve(research, "014")


def test_importing_the_mves_code_runs_only_in_the_child(research, monkeypatch):
    """A module that does something when imported (here: writes a file) runs
    in the sandboxed child, with no secret in its environment."""
    (research / "code/009/spy.py").write_text(
        "import json, os\nfrom torch import nn\n"
        "json.dump(sorted(os.environ), open(os.path.join(os.path.dirname(__file__), 'seen.json'), 'w'))\n"
        "class Probe(nn.Module):\n    def __init__(self, vocab_size=1, dim=1):\n        super().__init__()\n")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-anthropic-key-not-for-children")
    import sys

    before = set(sys.modules)
    from actors.scaler.sandboxed import probe

    answer = probe({"op": "port", "mve_id": "009", "folders": [str(research / "code/009")], "facts": {},
                    "settings": {"d_state": 4}, "target_params": 300_000, "batch_size": 8})
    assert answer["ok"], answer
    assert not any("spy" in m or "ssm_lm" in m for m in set(sys.modules) - before)
    seen = json.loads((research / "code/009/seen.json").read_text())
    assert "ANTHROPIC_API_KEY" not in seen and "PATH" in seen


def test_local_imports_follow_the_models_own_imports_only(research):
    files = local_imports(research / "code/009/ssm_lm.py", [research / "code/009"])
    assert sorted(p.name for p in files) == ["layers.py", "ssm_lm.py"]  # not train_ssm.py
    pkg = local_imports(research / "code/011/models/gpt.py", [research / "code/011"])
    assert sorted(p.name for p in pkg) == ["attention.py", "gpt.py"]


def test_the_rehearsal_cuts_a_custom_models_own_size_arguments():
    assert rehearsal_kwargs({"dim": 768, "depth": 12, "d_state": 16, "n_heads": 12, "d_ff": 3072}) == \
        {"dim": 128, "depth": 2, "d_state": 16, "n_heads": 4, "d_ff": 512}
    assert rehearsal_kwargs({"n_embd": 96, "n_layer": 1}) == {"n_embd": 96, "n_layer": 1}


def test_the_laptop_rehearsal_of_a_ported_model_cuts_its_own_arguments():
    from actors.scaler.agent import REHEARSAL_STEPS, laptop_spec
    from train.spec import TrainSpec

    spec = TrainSpec.parse({"model": {"family": "custom", "path": "/x/models/ssm_lm.py", "class_name": "SSMLM",
                                      "d_model": 520, "n_layers": 15,
                                      "kwargs": {"dim": 520, "depth": 15, "d_state": 16}},
                            "resources": {"gpus": 1}})
    small = laptop_spec(spec)
    assert small.model.kwargs == {"dim": 128, "depth": 2, "d_state": 16}
    assert (small.model.d_model, small.model.n_layers, small.model.path) == (128, 2, "/x/models/ssm_lm.py")
    assert small.resources.gpus == 0 and small.budget.max_steps == REHEARSAL_STEPS
