"""`python -m actors.report`: what a user types, and what a mistake looks like."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from actors.report import main

ROOT = Path(__file__).resolve().parents[3]


def test_writes_the_page_and_prints_its_path(overnight, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["--out", str(out), "--experiments", str(overnight.experiments), "--research", str(overnight.research),
            "--sweeps", str(overnight.sweeps), "--state", str(overnight.state)]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    html = (out / "index.html").read_text()
    # --code and --ledger default to the folders beside --experiments.
    assert "002_scaled: gpt 25.30M on bytes" in html and "scaled by hand" in html


@pytest.mark.parametrize("flags, message", [
    (["--experiments", "{tmp}/nope"], "error: --experiments: {tmp}/nope does not exist"),
    (["--research", "{tmp}/file.txt"], "error: --research: {tmp}/file.txt is not a folder"),
    (["--state", "{tmp}/file.txt"], "is not a work-tracker state file"),
    (["--ledger", "{tmp}"], "error: --ledger: {tmp} is a folder, not a file"),
    (["--watch", "0"], "error: --watch must be a positive number of seconds"),
])
def test_a_bad_flag_is_one_error_line_and_exit_2(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.setenv("RAY_AUTORESEARCH_STATE", str(tmp_path / "none.parquet"))
    (tmp_path / "file.txt").write_text("not parquet\n")
    argv = ["--out", str(tmp_path / "out")] + [f.format(tmp=tmp_path) for f in flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_watch_rewrites_the_page_until_sigterm(overnight, tmp_path):
    out = tmp_path / "report"
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.report", "--out", str(out), "--experiments", str(overnight.experiments),
         "--state", str(overnight.state), "--research", str(overnight.research), "--watch", "0.2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == str(out / "index.html")
        assert "late_run" not in (out / "index.html").read_text()
        # A run that finishes while the page is watched shows on a later rewrite.
        from train.ledger import append_entry

        from tests.unit.reporting.conftest import ledger_entry

        append_entry(overnight.ledger, ledger_entry("late_run: gpt on bytes", 0.1, 0.2))
        for _ in range(50):
            assert "rewrote" in proc.stdout.readline()
            if "late_run" in (out / "index.html").read_text():
                break
        else:
            pytest.fail("the page never showed the new ledger entry")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr.read() == ""
