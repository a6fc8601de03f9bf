"""scripts/check_golf_records.py on a small records tree of our own making, laid out like
openai/parameter-golf's records/: which records the parser reads as recorded, which not
and why, which logs it calls crashes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LOGS = Path(__file__).parent / "fixtures" / "logs"


def _script():
    """scripts/ is not a package: load the checker from its file, as `python scripts/...` runs it."""
    spec = importlib.util.spec_from_file_location("check_golf_records", ROOT / "scripts" / "check_golf_records.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


checker = _script()


def record(root: Path, name: str, submission: dict | str | None, logs: dict[str, str]) -> Path:
    folder = root / "track_10min_16mb" / name
    folder.mkdir(parents=True)
    if submission is not None:
        text = submission if isinstance(submission, str) else json.dumps(submission, indent=2)
        (folder / "submission.json").write_text(text)
    for dest, fixture in logs.items():
        shutil.copy(LOGS / fixture, folder / dest)
    return folder


def second_seed(folder: Path, value: str) -> None:
    """A second seed's log: the baseline's, with another exact score."""
    text = (LOGS / "golf_baseline.log").read_text().replace("val_bpb:1.21456789", f"val_bpb:{value}")
    (folder / "train_seed42.log").write_text(text.replace("val_bpb:1.2146 ", f"val_bpb:{float(value):.4f} "))


def check(tmp_path: Path, capsys, *args) -> tuple[str, list[dict]]:
    out = tmp_path / "result.json"
    assert checker.main([str(tmp_path / "records"), "--json", str(out), *args]) == 0
    return capsys.readouterr().out, json.loads(out.read_text())


def test_records_read_as_recorded_or_not_and_why(tmp_path, capsys):
    root = tmp_path / "records"
    # the mean of two seeds, as most records give it (to 8 decimals)
    mean = record(root, "a_mean", {"val_bpb": round((1.21456789 + 1.21356789) / 2, 8)},
                  {"train_seed1337.log": "golf_baseline.log"})
    second_seed(mean, "1.21356789")
    # to 5 decimals, from seeds rounded first: within one unit of the last decimal
    five = record(root, "b_five_places", {"val_bpb": 1.21407}, {"train_seed1337.log": "golf_baseline.log"})
    second_seed(five, "1.21356789")
    # the newer formats, each its own record
    record(root, "c_ttt", '{"val_bpb": 1.06443847}', {"train_seed0.log": "golf_ttt_phased.log"})
    record(root, "d_int6", {"val_bpb": 1.12356596}, {"train.log": "golf_int6_sliding_window.log",
                                                     "train_copy.log": "golf_int6_sliding_window.log"})
    # one run's score, not the mean of the logs beside it
    one = record(root, "e_one_run", {"val_bpb": 1.21456789}, {"train.log": "golf_baseline.log"})
    second_seed(one, "1.22000000")
    # the run reports its TTT score last; the record counts its sliding-window score
    record(root, "f_other_line", {"val_bpb": 1.12356596, "seed_results": {"42": {"val_bpb": 1.12356596}}},
           {"train_seed42.log": "golf_several_scores.log"})
    record(root, "g_crash", {"val_bpb": 1.17868431}, {"train.log": "golf_traceback_after_score.log"})
    record(root, "h_no_score", {"name": "x"}, {"train.log": "golf_baseline.log"})
    record(root, "i_no_logs", {"val_bpb": 1.2}, {})
    record(root, "j_logs_only", None, {"train.log": "golf_cut_mid_number.log"})

    out, results = check(tmp_path, capsys)
    by_name = {Path(r["path"]).name: r for r in results}
    recorded = sorted(n for n, r in by_name.items() if r["recorded"])
    assert recorded == ["a_mean", "b_five_places", "c_ttt", "d_int6"]
    assert by_name["d_int6"]["logs"][1]["duplicate_of"].endswith("train.log")  # a copy counts once
    assert by_name["e_one_run"]["category"] == "one run" and "train.log's score" in by_name["e_one_run"]["why"]
    assert by_name["f_other_line"]["category"] == "another line"
    assert "line 6" in by_name["f_other_line"]["why"] and "line 5" in by_name["f_other_line"]["why"]
    assert by_name["g_crash"]["category"] == "crash"
    assert by_name["h_no_score"]["why"] == "no val_bpb in submission.json"
    assert by_name["i_no_logs"]["why"] == "no train logs"
    assert by_name["j_logs_only"]["why"] == "no submission.json"

    assert "record folders: 10; with train logs and a val_bpb: 7" in out
    assert "read as recorded: 4 of 7" in out
    # every log is parsed, those of folders not compared too
    assert "logs: 13 (1 byte-identical copies counted once); called crashes: 2" in out
    crash_lines = [line for line in out.splitlines() if line.startswith("track_") and "train.log" in line
                   and ("failed after the score line" in line or "ends mid-line" in line)]
    assert len(crash_lines) == 2

    # pinning the metric reads the record that counts another line
    _, pinned = check(tmp_path, capsys, "--metric", "final_int6_sliding_window_exact")
    assert {Path(r["path"]).name: r for r in pinned}["f_other_line"]["recorded"] is True


def test_bad_input(tmp_path, capsys):
    assert checker.main([str(tmp_path / "no")]) == 2
    assert capsys.readouterr().err.startswith("error:")
    (tmp_path / "empty").mkdir()
    assert checker.main([str(tmp_path / "empty")]) == 2
    assert "no submission.json" in capsys.readouterr().err
    assert checker.main([str(tmp_path / "empty"), "--metric", "("]) == 2
    assert "not a regular expression" in capsys.readouterr().err
