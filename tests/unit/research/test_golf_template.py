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

from actors.research.logparse import parse_log

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "examples" / "golf" / "train_gpt.py"


def _run_template(tmp_path: Path, **env_overrides: str) -> tuple[str, Path]:
    shutil.copy(TEMPLATE, tmp_path / "train_gpt.py")  # as in a fresh repo
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update({"NUM_THREADS": "2", "VAL_BYTES": "32768", **env_overrides})
    proc = subprocess.run(
        [sys.executable, "train_gpt.py"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, tmp_path / "train_gpt.py"


def test_template_trains_and_round_trips(tmp_path):
    out, code = _run_template(
        tmp_path, ITERATIONS="30", MODEL_DIM="64", NUM_LAYERS="2", NUM_HEADS="2",
        SEQ_LEN="64", BATCH_SIZE="16", VAL_EVERY="15", WARMUP_STEPS="5",
        LEARNING_RATE="1e-2", MAX_WALLCLOCK_SECONDS="45",
    )
    r = parse_log(out)
    assert r["crashed"] is False, (r, out)
    first = re.search(r"^step:0/30 val_loss:\S+ val_bpb:(\S+)", out, re.M)
    assert first, out
    assert math.isfinite(r["val_bpb"]) and r["val_bpb"] < 8.0
    assert r["val_bpb"] < float(first.group(1))
    model_file = tmp_path / "final_model.int8.ptz"
    assert r["model_bytes"] == model_file.stat().st_size
    assert r["artifact_bytes"] == code.stat().st_size + r["model_bytes"]
    assert r["artifact_bytes"] < 16_000_000
    assert r["model_params"] > 0
    assert r["total_steps"] == 30
    # the cap is only a safety net here; on a loaded machine it may stop the run early
    assert r["steps"] == 30 or "stopping_early: wallclock_cap" in out
    assert re.search(r"^final_int8_zlib_roundtrip val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} eval_time:\d+ms$", out, re.M)
    assert re.search(r"^final_int8_zlib_roundtrip_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$", out, re.M)


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


def test_the_offline_proposer_tunes_only_real_hyperparameters_of_the_template():
    from actors.research.knobs import find_knobs, propose

    source = TEMPLATE.read_text()
    names = {k.name for k in find_knobs(source)}
    assert {"LEARNING_RATE", "MODEL_DIM", "NUM_LAYERS", "WEIGHT_DECAY"} <= names
    # Data size, threads and the wall-clock cap change the ruler or the speed, not the model.
    assert not names & {"DATA_MAX_BYTES", "NUM_THREADS", "MAX_WALLCLOCK_SECONDS", "SEED", "VAL_EVERY"}
    proposal = propose(source)
    assert proposal.knob in names and proposal.source != source
