"""`python -m actors.autoresearch parse-log`: the score, the line it was read from, crashed or
not; --metric and a repository's own metric; bad input ends in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actors.research.cli import main as ar_main

ROOT = Path(__file__).resolve().parents[3]
LOGS = Path(__file__).parent / "fixtures" / "logs"


def parse_log_cli(capsys, *args) -> tuple[int, str, str]:
    code = ar_main(["parse-log", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def field(out: str, name: str) -> str:
    for line in out.splitlines():
        if line.startswith(name + " "):
            return line[len(name):].strip()
    raise AssertionError(f"no {name!r} in:\n{out}")


@pytest.mark.parametrize("name,value,line_no,line", [
    ("golf_baseline.log", "1.21456789", 25, "final_int8_zlib_roundtrip_exact val_loss:2.05123456 val_bpb:1.21456789"),
    ("golf_int6_roundtrip.log", "1.17868431", 13, "final_int6_roundtrip_exact val_loss:1.99017762"),
    ("golf_int6_sliding_window.log", "1.12356596", 11, "final_int6_sliding_window_exact val_loss:1.89708903"),
    ("golf_sliding_window_eval.log", "1.1550826", 8, "final_sliding_window_eval_exact stride:64"),
    ("golf_ttt_phased.log", "1.06443847", 18, "quantized_ttt_phased val_loss:2.32938594 val_bpb:1.06443847"),
    ("karpathy_autoresearch.log", "0.9979", 12, "val_bpb:          0.997900"),  # "\r" is no new line
])
def test_prints_the_score_its_line_and_that_it_did_not_crash(capsys, name, value, line_no, line):
    code, out, err = parse_log_cli(capsys, LOGS / name)
    assert code == 0 and err == ""
    assert field(out, "val_bpb").split()[0] == value
    assert field(out, "score line").startswith(f"{line_no}: {line}")
    assert field(out, "crashed") == "no"


def test_a_crash_prints_no_score_and_why(capsys):
    code, out, _ = parse_log_cli(capsys, LOGS / "golf_traceback_after_score.log")
    assert code == 0
    assert field(out, "val_bpb") == "none: the run crashed"
    assert field(out, "crashed").startswith("yes: failed after the score line (line 11: torch.AcceleratorError")
    assert field(out, "last val_bpb").startswith("1.17868431 (")
    code, out, _ = parse_log_cli(capsys, LOGS / "golf_cut_mid_number.log")
    assert field(out, "crashed").startswith("yes: the log ends mid-line")


def test_json_has_every_field(capsys):
    code, out, _ = parse_log_cli(capsys, LOGS / "golf_cut_mid_number.log", "--json")
    r = json.loads(out)
    assert code == 0 and r["crashed"] is True and r["val_bpb"] is None and r["last_val_bpb"] == 1.2204
    assert {"metric_line", "metric_line_no", "artifact_bytes", "peak_memory_mib", "training_seconds",
            "timed_out"} <= set(r)


def test_metric_pins_the_line_from_the_flag_or_the_repository(capsys, tmp_path):
    log = LOGS / "golf_several_scores.log"
    _, out, _ = parse_log_cli(capsys, log)
    assert field(out, "score line").startswith("6: final_int6_ttt")
    _, out, _ = parse_log_cli(capsys, log, "--metric", "final_int6_sliding_window_exact")
    assert field(out, "val_bpb").startswith("1.12356596") and field(out, "score line").startswith("5: ")
    assert field(out, "metric") == "pinned: final_int6_sliding_window_exact"
    (tmp_path / "program.md").write_text("# research\n\nmetric: `final_int6_roundtrip_exact`\n")
    _, out, _ = parse_log_cli(capsys, log, "--repo", tmp_path)
    assert field(out, "val_bpb").startswith("1.14721825") and field(out, "score line").startswith("4: ")


def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    for args, words in [((tmp_path / "missing.log",), "cannot read log"),
                        ((LOGS / "golf_baseline.log", "--metric", "final_("), "not a regular expression"),
                        ((LOGS / "golf_baseline.log", "--repo", tmp_path / "nope"), "is not a folder")]:
        code, out, err = parse_log_cli(capsys, *args)
        assert code == 2 and out == "" and err.startswith("error:") and words in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    (tmp_path / "autoresearch.toml").write_text("metric = '['\n")
    code, _, err = parse_log_cli(capsys, LOGS / "golf_baseline.log", "--repo", tmp_path)
    assert code == 2 and "autoresearch.toml" in err and "not a regular expression" in err


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "actors.autoresearch", "parse-log", str(LOGS / "golf_baseline.log")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "25: final_int8_zlib_roundtrip_exact" in proc.stdout and "crashed      no" in proc.stdout


def test_runs_from_inside_a_karpathy_style_repository(tmp_path):
    # its train.py must not shadow our `train` package
    (tmp_path / "train.py").write_text("print('SHADOWED: the research script ran on import'); raise SystemExit(3)\n")
    log = LOGS / "karpathy_autoresearch.log"
    proc = subprocess.run([sys.executable, "-m", "actors.autoresearch", "parse-log", str(log)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SHADOWED" not in proc.stdout and "12: val_bpb:          0.997900" in proc.stdout
