"""The Parameter Golf template: it trains, round-trips its artifact and prints the lines
the log parser reads (the parser itself: test_logparse*.py)."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actors.research.logparse import parse_log

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "examples" / "golf" / "train_gpt.py"


def _run_template(tmp_path: Path, *args: str, **env_overrides: str) -> tuple[str, Path]:
    """Run the research file (or `prepare.py ARGS` when given) in a copy of the template
    whose harness reads a small corpus."""
    from tests.support import SMALL_GOLF_HARNESS, set_constant

    shutil.copy(TEMPLATE, tmp_path / "train_gpt.py")  # as in a fresh repo
    harness = (TEMPLATE.parent / "prepare.py").read_text()
    for name, value in SMALL_GOLF_HARNESS.items():
        harness = set_constant(harness, name, value)
    (tmp_path / "prepare.py").write_text(harness)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update({"NUM_THREADS": "2", **env_overrides})
    proc = subprocess.run(
        [sys.executable, *(args or ["train_gpt.py"])], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, tmp_path / "train_gpt.py"


SMALL = dict(ITERATIONS="30", MODEL_DIM="64", NUM_LAYERS="2", NUM_HEADS="2", SEQ_LEN="64", BATCH_SIZE="16",
             WARMUP_STEPS="5", LEARNING_RATE="1e-2")


def test_template_trains_round_trips_and_the_harness_rescores_on_the_held_out_split(tmp_path):
    out, code = _run_template(tmp_path, VAL_EVERY="15", MAX_WALLCLOCK_SECONDS="45", **SMALL)
    r = parse_log(out)
    assert r["crashed"] is False, (r, out)
    first = re.search(r"^step:0/30 val_loss:\S+ val_bpb:(\S+)", out, re.M)
    assert first, out
    assert math.isfinite(r["val_bpb"]) and r["val_bpb"] < 8.0
    assert r["val_bpb"] < float(first.group(1))
    model_file = tmp_path / "final_model.int8.ptz"
    assert r["model_bytes"] == model_file.stat().st_size
    # The code that ships is the research file and its harness.
    assert r["artifact_bytes"] == code.stat().st_size + (tmp_path / "prepare.py").stat().st_size + r["model_bytes"]
    assert r["artifact_bytes"] < 16_000_000
    assert r["model_params"] > 0
    assert r["total_steps"] == 30
    # the cap is only a safety net here; on a loaded machine it may stop the run early
    assert r["steps"] == 30 or "stopping_early: wallclock_cap" in out
    assert re.search(r"^final_int8_zlib_roundtrip val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4}$", out, re.M)
    assert re.search(r"^final_int8_zlib_roundtrip_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$", out, re.M)

    # The harness rebuilds the model with build_model() and scores the artifact on the held-out split.
    held, _ = _run_template(tmp_path, "prepare.py", "rescore", "final_model.int8.ptz", "train_gpt.py", **SMALL)
    m = re.fullmatch(r"holdout_int8_zlib_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)\n", held)
    assert m, held
    holdout = float(m.group(2))
    assert math.isfinite(holdout) and holdout != r["val_bpb"] and abs(holdout - r["val_bpb"]) < 1.0


def test_template_honours_wallclock_cap(tmp_path):
    out, _ = _run_template(
        tmp_path, ITERATIONS="100000", MODEL_DIM="32", NUM_LAYERS="1", NUM_HEADS="2",
        SEQ_LEN="32", BATCH_SIZE="8", VAL_EVERY="0", MAX_WALLCLOCK_SECONDS="2",
    )
    r = parse_log(out)
    assert r["crashed"] is False, out
    assert r["total_steps"] == 100000 and 0 < r["steps"] < 100000
    assert "stopping_early: wallclock_cap" in out
    assert r["val_bpb"] is not None and r["artifact_bytes"] < 16_000_000


def test_the_harness_scores_logits_and_never_trusts_the_research_file_for_the_number():
    """The metric is computed by prepare.evaluate_bpb from the model's logits: a model that
    puts all its mass on the right next byte scores 0 bits, a uniform one 8."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("golf_prepare", TEMPLATE.parent / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    data = torch.arange(0, 200) % 256

    class Oracle(torch.nn.Module):
        seq_len = 8

        def forward(self, idx):
            return torch.nn.functional.one_hot((idx + 1) % 256, 256).float() * 100.0

    class Uniform(Oracle):
        def forward(self, idx):
            return torch.zeros(*idx.shape, 256)

    assert prepare.evaluate_bpb(Oracle(), data)[1] < 1e-6
    assert prepare.evaluate_bpb(Uniform(), data)[1] == pytest.approx(8.0)

    class Cheater(Oracle):  # returns a loss instead of logits
        def forward(self, idx):
            return torch.tensor(0.0)

    with pytest.raises(ValueError, match="logits of shape"):
        prepare.evaluate_bpb(Cheater(), data)


def test_the_offline_proposer_tunes_only_real_hyperparameters_of_the_template():
    from actors.research.knobs import find_knobs, propose

    source = TEMPLATE.read_text()
    names = {k.name for k in find_knobs(source)}
    assert {"LEARNING_RATE", "MODEL_DIM", "NUM_LAYERS", "WEIGHT_DECAY"} <= names
    # Data size, threads and the wall-clock cap change the ruler or the speed, not the model.
    assert not names & {"DATA_MAX_BYTES", "NUM_THREADS", "MAX_WALLCLOCK_SECONDS", "SEED", "VAL_EVERY"}
    proposal = propose(source)
    assert proposal.knob in names and proposal.source != source
