"""The log parser on logs of every format the loop meets (fixtures/logs/, our own making):
the score is what the run reports last, read from the line a user would point at, and a
crash is a crash."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from actors.research.logparse import MetricError, parse_log

LOGS = Path(__file__).parent / "fixtures" / "logs"


def read(name: str) -> str:
    return (LOGS / name).read_bytes().decode("utf-8")  # as written: "\r" kept


def line_no(text: str, needle: str, last: bool = False) -> int:
    """1-based number of the line holding `needle` (as an editor counts: \\n only)."""
    hits = [i for i, line in enumerate(text.split("\n"), 1) if needle in line]
    assert hits, needle
    return hits[-1] if last else hits[0]


# (fixture, the score, the line it must be read from)
FINISHED = [
    ("golf_baseline.log", 1.21456789, "final_int8_zlib_roundtrip_exact"),
    ("golf_int6_roundtrip.log", 1.17868431, "final_int6_roundtrip_exact"),
    ("golf_int6_sliding_window.log", 1.12356596, "final_int6_sliding_window_exact"),
    ("golf_sliding_window_eval.log", 1.15508260, "final_sliding_window_eval_exact"),
    ("golf_ttt_phased.log", 1.06443847, "quantized_ttt_phased"),
    ("golf_ttt_sliding_kv.log", 1.08031260, "ttt_sliding:done"),
    ("golf_rounded_after_exact.log", 1.19181234, "legal_ttt_exact"),
    ("golf_several_scores.log", 1.33603200, "final_int6_ttt"),
    ("golf_warnings_after_score.log", 1.21456789, "final_int8_zlib_roundtrip_exact"),
    ("golf_interleaved_ranks.log", 1.21456789, "[rank0]: final_int8_zlib_roundtrip_exact"),
    ("golf_exact_without_newline.log", 1.19692464, "final_int8_zlib_roundtrip_exact sliding"),
    ("karpathy_autoresearch.log", 0.997900, "val_bpb:          0.997900"),
]


@pytest.mark.parametrize("name,value,needle", FINISHED, ids=[f[0] for f in FINISHED])
def test_the_score_is_the_last_one_the_run_reports(name, value, needle):
    text = read(name)
    r = parse_log(text)
    assert r["crashed"] is False and r["error"] is None and r["timed_out"] is False
    assert r["val_bpb"] == pytest.approx(value, abs=1e-12)
    assert r["metric_line_no"] == line_no(text, needle, last=True)
    assert needle.split("]: ")[-1] in r["metric_line"]
    json.dumps(r, allow_nan=False)


def test_an_exact_line_wins_over_its_rounded_twin_whichever_comes_last():
    exact_last = parse_log(read("golf_baseline.log"))
    rounded_last = parse_log(read("golf_rounded_after_exact.log"))
    assert exact_last["val_bpb"] == 1.21456789 and exact_last["val_loss"] == 2.05123456
    assert rounded_last["val_bpb"] == 1.19181234 and rounded_last["val_loss"] == 2.01234567
    # without the exact twin, the rounded line is the score
    text = "".join(line for line in read("golf_baseline.log").splitlines(True) if "roundtrip_exact" not in line)
    assert parse_log(text)["val_bpb"] == 1.2146


def test_training_progress_is_never_the_result():
    text = read("golf_baseline.log")
    no_final = "\n".join(line for line in text.splitlines() if "final_int8" not in line) + "\n"
    r = parse_log(no_final)
    assert r["crashed"] is True and r["val_bpb"] is None and r["val_loss"] is None
    assert "no final val_bpb line" in r["error"]
    assert r["last_val_bpb"] == 1.2204  # the step:13780 validation: kept apart, never the result
    # the new progress format ("4000/20000 val_loss: ... val_bpb: ...") likewise
    ttt = read("golf_ttt_phased.log")
    r = parse_log("\n".join(ttt.splitlines()[:10]) + "\n")
    assert r["crashed"] is True and r["val_bpb"] is None and r["last_val_bpb"] == 1.0762


def test_what_else_the_run_reports():
    golf = parse_log(read("golf_baseline.log"))
    # the codec-named total wins over the raw "Total submission size: 67272625 bytes" before it
    assert (golf["artifact_bytes"], golf["model_bytes"], golf["code_bytes"]) == (15860000, 15812345, 47642)
    assert (golf["model_params"], golf["peak_memory_mib"]) == (17059912, 10240)
    assert (golf["steps"], golf["total_steps"], golf["training_seconds"]) == (13780, 20000, 600.038)
    ttt = parse_log(read("golf_ttt_phased.log"))
    assert ttt["artifact_bytes"] == 15940380 and ttt["model_bytes"] == 15893222  # quantized+brotli
    assert ttt["training_seconds"] == 600.0 and ttt["steps"] == 4961  # "train_time: 10.0m"
    assert parse_log(read("golf_int6_roundtrip.log"))["artifact_bytes"] == 15495222  # int6+zstd
    assert parse_log(read("golf_sliding_window_eval.log"))["artifact_bytes"] == 15766030  # quantized+pergroup
    karpathy = parse_log(read("karpathy_autoresearch.log"))
    assert karpathy["artifact_bytes"] is None  # it has no artifact
    assert karpathy["peak_memory_mib"] == 45060.2 and karpathy["training_seconds"] == 300.1
    assert karpathy["steps"] == 953 and karpathy["model_params"] == 50_300_000


def test_a_traceback_or_cuda_error_after_the_score_is_a_crash():
    text = read("golf_traceback_after_score.log")
    r = parse_log(text)
    assert r["crashed"] is True and r["val_bpb"] is None and r["val_loss"] is None
    assert "CUDA error: an illegal memory access" in r["error"]
    assert f"line {line_no(text, 'AcceleratorError')}" in r["error"]
    assert r["last_val_bpb"] == 1.17868431  # what it printed before dying, in its own field
    assert r["metric_line_no"] == line_no(text, "final_int6_roundtrip_exact")


def test_warnings_and_shutdown_noise_after_the_score_are_not_a_crash():
    r = parse_log(read("golf_warnings_after_score.log"))
    assert r["crashed"] is False and r["val_bpb"] == 1.21456789
    # the same traceback without "Exception ignored in" before it is a crash
    text = read("golf_warnings_after_score.log").replace("Exception ignored in:", "While shutting down:")
    assert parse_log(text)["crashed"] is True


def test_a_crash_before_the_score_names_the_error():
    r = parse_log(read("golf_oom_before_score.log"))
    assert r["crashed"] is True and r["val_bpb"] is None
    assert "CUDA out of memory" in r["error"] and r["last_val_bpb"] == 1.569
    r = parse_log('Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad shape\n')
    assert r["crashed"] is True and "ValueError: bad shape" in r["error"]


def test_a_timeout_is_a_crash():
    r = parse_log(read("golf_timeout.log"))
    assert r["crashed"] is True and r["timed_out"] is True and r["val_bpb"] is None
    assert "killed after the 900s wall-clock timeout" in r["error"] and r["last_val_bpb"] == 1.569
    # even when the score was printed before the run hung and was killed
    r = parse_log(read("golf_baseline.log") + "[autoresearch] killed after the 900s wall-clock timeout\n")
    assert r["crashed"] is True and r["timed_out"] is True and r["val_bpb"] is None


def test_a_non_finite_score_or_training_loss_is_a_crash():
    r = parse_log(read("golf_nan_score.log"))
    assert r["crashed"] is True and r["val_bpb"] is None and r["val_loss"] is None and "nan" in r["error"]
    json.dumps(r, allow_nan=False)  # JSON-safe
    r = parse_log(read("golf_baseline.log").replace("train_loss:2.7832", "train_loss:nan"))
    assert r["crashed"] is True and "non-finite training loss" in r["error"] and r["val_bpb"] is None
    r = parse_log(read("karpathy_fail.log"))  # karpathy's script prints FAIL and exits
    assert r["crashed"] is True and r["val_bpb"] is None and r["steps"] == 41


def test_issue_14_item_9_a_log_cut_inside_the_final_number_is_not_a_result():
    r = parse_log(read("golf_cut_mid_number.log"))
    assert r["crashed"] is True and r["val_bpb"] is None
    assert "ends mid-line" in r["error"] and "val_bpb:1.2" in r["error"]
    assert r["last_val_bpb"] == 1.2204  # the last complete value, in its own field
    r = parse_log("val_bpb:1.2")
    assert r["crashed"] is True and r["val_bpb"] is None and r["last_val_bpb"] is None
    # cut anywhere inside the last score line of a whole log: never a value, always a crash
    text = read("golf_baseline.log")
    start = text.index("final_int8_zlib_roundtrip_exact")
    for cut in range(start + 1, text.index("\n", start), 7):
        r = parse_log(text[:cut])
        assert r["crashed"] is True and r["val_bpb"] is None, text[start:cut]


def test_a_whole_exact_line_without_its_newline_is_confirmed_by_its_rounded_twin():
    r = parse_log(read("golf_exact_without_newline.log"))
    assert r["crashed"] is False and r["val_bpb"] == 1.19692464
    # alone, the same line could be cut mid-number: refused
    lonely = read("golf_exact_without_newline.log").replace("sliding val_bpb:1.1969 ", "")
    assert parse_log(lonely)["crashed"] is True


def test_prefixes_ansi_and_carriage_returns_do_not_hide_the_score():
    text = read("golf_baseline.log")
    assert "\x1b[0;33m" in text  # the fixture has colour codes
    coloured = text.replace("final_int8_zlib_roundtrip_exact", "\x1b[1;32mfinal_int8_zlib_roundtrip_exact\x1b[0m")
    assert parse_log(coloured)["val_bpb"] == 1.21456789
    ray = "\n".join(f"(RayTrainWorker pid=4242, ip=10.0.0.7) {line}" for line in text.splitlines()) + "\n"
    assert parse_log(ray)["val_bpb"] == 1.21456789
    assert parse_log(text.replace("\n", "\r\n"))["val_bpb"] == 1.21456789
    karpathy = read("karpathy_autoresearch.log")
    assert karpathy.count("\r") > 5  # "\r"-rewritten progress, as the original prints it
    assert parse_log(karpathy)["metric_line_no"] == line_no(karpathy, "val_bpb:")


def test_source_code_in_the_log_is_not_a_score():
    # Parameter Golf logs start with the script's own code
    code = ('    log0(f"final_int8_zlib_roundtrip_exact val_loss:{q_val_loss:.8f} val_bpb:{q_val_bpb:.8f}")\n'
            "    val_bpb = val_loss / math.log(2.0)\n    best_val_bpb = 1e9\n")
    r = parse_log(code + "step:1/10 val_loss:6.9 val_bpb:4.1 train_time:1ms\n")
    assert r["crashed"] is True and r["metric_line"] is None


def test_a_pinned_metric_reads_the_line_the_repository_names():
    text = read("golf_several_scores.log")
    r = parse_log(text, metric=r"final_int6_sliding_window")
    assert r["val_bpb"] == 1.12356596 and r["metric_line_no"] == line_no(text, "final_int6_sliding_window")
    r = parse_log(read("karpathy_autoresearch.log"), metric=r"^val_bpb:")
    assert r["val_bpb"] == 0.9979 and r["crashed"] is False
    # a group picks the number: here a metric that is not val_bpb at all
    r = parse_log(read("karpathy_autoresearch.log"), metric=r"^peak_vram_mb:\s*(\S+)")
    assert r["val_bpb"] == 45060.2
    r = parse_log(text, metric=r"roundtrip_exact val_loss:\S+ val_bpb:(?P<value>\S+)")
    assert r["val_bpb"] == 1.14721825
    # a pinned line the run never printed: a crash, never another line's value
    r = parse_log(text, metric=r"quantized_ttt_phased")
    assert r["crashed"] is True and r["val_bpb"] is None and "quantized_ttt_phased" in r["error"]
    with pytest.raises(MetricError, match="not a regular expression"):
        parse_log(text, metric="final_(")


def test_several_score_like_lines_default_to_the_last_and_name_it():
    text = read("golf_several_scores.log")
    r = parse_log(text)
    assert r["val_bpb"] == 1.336032 and re.search(r"^final_int6_ttt ", r["metric_line"])


def test_empty_and_blank_logs():
    for text in ("", "\n\n", None):
        r = parse_log(text)
        assert r["crashed"] is True and r["val_bpb"] is None and r["steps"] is None


def test_what_counts_as_training_progress():
    progress = ["step:200/20000 val_loss:2.65 val_bpb:1.569", "4000/20000 val_loss: 2.43 val_bpb: 1.11",
                "[rank0]: step 500 | val_bpb 1.3 | val_bpb:1.3", "epoch 3 val_bpb: 1.25", "iter=900 val_bpb=1.4"]
    for line in progress:
        r = parse_log(line + "\n")
        assert r["crashed"] is True and r["val_bpb"] is None and r["last_val_bpb"] is not None, line
    finals = ["done steps:953 val_bpb:0.9912", "eval total_steps:953 val_bpb:0.9912",
              '{"post_ttt_val_bpb": 0.9912, "seed": 42}', "final_int6_sliding_window_s64_exact val_bpb:0.9912"]
    for line in finals:
        assert parse_log(line + "\n")["val_bpb"] == 0.9912, line
