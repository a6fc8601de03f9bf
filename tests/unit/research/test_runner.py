"""One experiment run as a subprocess: log, exit code, timeout, scrubbed environment (no Ray)."""

from __future__ import annotations

import os
import time

from actors.research.runner import run_script
from actors.shared.sandbox import child_env


def test_a_timeout_kills_the_run_and_everything_it_started(tmp_path):
    pidfile = tmp_path / "child.pid"
    source = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "print('step:1/10 train_loss:5.0', flush=True)\n"
        "time.sleep(600)\n"
    )
    t0 = time.monotonic()
    result = run_script(source, "train_gpt.py", timeout_s=3)
    assert result.timed_out and result.failed and time.monotonic() - t0 < 30
    assert "step:1/10" in result.log and "killed after the 3s wall-clock timeout" in result.log
    child = int(pidfile.read_text())
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{child}") and time.time() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{child}")  # the grandchild died with the group


def test_exit_code_and_log_of_a_finished_run():
    result = run_script("import sys\nprint('hello')\nsys.exit(3)\n", "train_gpt.py", timeout_s=60)
    assert not result.timed_out and result.returncode == 3 and result.failed
    assert result.log.strip() == "hello"


def test_secrets_and_ray_settings_never_reach_the_run(monkeypatch):
    base = {"PATH": "/bin", "HOME": "/h", "ANTHROPIC_API_KEY": "fake-anthropic-key", "WANDB_API_KEY": "w",
            "RAY_AUTH_TOKEN": "t", "RAY_ADDRESS": "a:1", "AWS_SECRET_ACCESS_KEY": "s", "CUDA_VISIBLE_DEVICES": "0",
            "NCCL_DEBUG": "INFO", "CUDA_API_KEY": "k"}
    env = child_env({"MAX_WALLCLOCK_SECONDS": "30"}, base=base)
    assert env["PATH"] == "/bin" and env["CUDA_VISIBLE_DEVICES"] == "0" and env["NCCL_DEBUG"] == "INFO"
    assert env["MAX_WALLCLOCK_SECONDS"] == "30"
    for secret in ("ANTHROPIC_API_KEY", "WANDB_API_KEY", "RAY_AUTH_TOKEN", "RAY_ADDRESS", "AWS_SECRET_ACCESS_KEY",
                   "CUDA_API_KEY"):
        assert secret not in env
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-anthropic-key-should-not-leak")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    result = run_script("import os\nprint(sorted(os.environ))\n", "train_gpt.py", timeout_s=60)
    assert "ANTHROPIC_API_KEY" not in result.log and "RAY_ADDRESS" not in result.log
    assert "'CUDA_VISIBLE_DEVICES'" in result.log  # a CPU run is told it has no GPU
