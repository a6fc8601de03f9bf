"""Parameter Golf template, log parser and parse-log CLI."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actors.research.cli import main as ar_main
from actors.research.logparse import parse_log

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "examples" / "golf" / "train_gpt.py"

MULTI_RANK_LOG = """\
W0318 10:00:01.123000 1234 torch/distributed/run.py:793] *****************************************
W0318 10:00:01.123000 1234 torch/distributed/run.py:793] Setting OMP_NUM_THREADS environment variable for each process to be 1 in default
NCCL INFO Bootstrap : Using eth0:10.0.0.1<0>
[rank1]:[W318 10:00:03.000 ProcessGroupNCCL.cpp:4115] Warning: using GPU 1 to perform barrier
/usr/lib/python3/site-packages/torch/_inductor/lowering.py:1713: UserWarning: Torchinductor does not support code generation for complex operators.
  warnings.warn(
logs/abc123.txt
val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model
model_params:17059912
world_size:8 grad_accum_steps:1
step:0/20000 val_loss:6.9357 val_bpb:4.1077 train_time:0ms step_avg:0.02ms
step:1/20000 train_loss:6.9370 train_time:24ms step_avg:24.49ms
\x1b[33m[rank3]: some colourful warning\x1b[0m
step:200/20000 train_loss:2.7832 train_time:12345ms step_avg:61.73ms
[rank0]: step:200/20000 val_loss:2.6500 val_bpb:1.5690 train_time:12345ms step_avg:61.73ms
step:13780/20000 val_loss:2.0606 val_bpb:1.2204 train_time:600038ms step_avg:43.54ms
stopping_early: wallclock_cap train_time:600038ms step:13780/20000
peak memory allocated: 10240 MiB reserved: 10500 MiB
Serialized model: 67224983 bytes
Code size: 47642 bytes
Total submission size: 67272625 bytes
Serialized model int8+zlib: 15812345 bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)
Total submission size int8+zlib: 15860000 bytes
final_int8_zlib_roundtrip val_loss:2.0512 val_bpb:1.2146 eval_time:1234ms
final_int8_zlib_roundtrip_exact val_loss:2.05123456 val_bpb:1.21456789
NCCL INFO comm 0x55 rank 0 nranks 8 - Destroy COMPLETE
"""


def test_parse_realistic_multi_rank_log():
    r = parse_log(MULTI_RANK_LOG)
    assert r == {
        "val_bpb": 1.21456789,
        "val_loss": 2.05123456,
        "artifact_bytes": 15860000,
        "model_bytes": 15812345,
        "model_params": 17059912,
        "peak_memory_mib": 10240,
        "steps": 13780,
        "total_steps": 20000,
        "crashed": False,
        "error": None,
    }


def test_prefers_exact_then_rounded_then_last_step():
    no_exact = "\n".join(
        line for line in MULTI_RANK_LOG.splitlines() if "roundtrip_exact" not in line
    )
    r = parse_log(no_exact)
    assert (r["val_bpb"], r["val_loss"], r["crashed"]) == (1.2146, 2.0512, False)
    no_final = "\n".join(line for line in no_exact.splitlines() if "roundtrip" not in line)
    r = parse_log(no_final)
    assert r["val_bpb"] == 1.2204 and r["val_loss"] == 2.0606
    assert r["crashed"] is True and "final" in r["error"]


def test_crashed_log_with_traceback_and_oom():
    log = """\
model_params:17059912
step:0/20000 val_loss:6.9357 val_bpb:4.1077 train_time:0ms step_avg:0.02ms
step:1/20000 train_loss:6.9370 train_time:24ms step_avg:24.49ms
[rank2]: Traceback (most recent call last):
[rank2]:   File "/workspace/train_gpt.py", line 1021, in <module>
[rank2]:     main()
[rank2]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 2 has a total capacity of 79.10 GiB
E0318 10:01:00.000000 1234 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: 1) local_rank: 2 (pid: 99) of binary: /usr/bin/python
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
"""
    r = parse_log(log)
    assert r["crashed"] is True
    assert r["error"] is not None and "Error" in r["error"]
    assert r["val_bpb"] == 4.1077  # only the step:0 validation is available
    assert r["steps"] == 1 and r["total_steps"] == 20000
    assert r["artifact_bytes"] is None and r["peak_memory_mib"] is None

    r = parse_log('Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad shape\n')
    assert r["crashed"] is True and r["error"] == "ValueError: bad shape"


def test_nan_loss_is_a_crash_and_reported_as_none():
    log = MULTI_RANK_LOG.replace("train_loss:2.7832", "train_loss:nan")
    r = parse_log(log)
    assert r["crashed"] is True and "nan" in r["error"]
    assert r["val_bpb"] == 1.21456789  # the number is still reported
    log = MULTI_RANK_LOG.replace("val_bpb:1.21456789", "val_bpb:nan").replace(
        "val_loss:2.05123456", "val_loss:nan"
    )
    r = parse_log(log)
    assert r["crashed"] is True and r["val_bpb"] is None and r["val_loss"] is None
    json.dumps(r, allow_nan=False)  # JSON-safe


def test_truncated_and_empty_logs():
    cut = MULTI_RANK_LOG.index("Total submission size int8+zlib")
    r = parse_log(MULTI_RANK_LOG[: cut + 20])  # partial last line
    assert r["crashed"] is True
    assert r["model_bytes"] == 15812345 and r["artifact_bytes"] is None
    assert r["val_bpb"] == 1.2204 and r["steps"] == 13780
    r = parse_log("")
    assert r["crashed"] is True and r["val_bpb"] is None and r["steps"] is None


def test_cli_parse_log(tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text(MULTI_RANK_LOG)
    assert ar_main(["parse-log", str(log)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["val_bpb"] == 1.21456789 and out["crashed"] is False

    assert ar_main(["parse-log", str(tmp_path / "missing.log")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and "missing.log" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_cli_module_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "actors.autoresearch", "parse-log", str(tmp_path / "nope.log")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


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
