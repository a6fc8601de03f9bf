"""The environment of child processes: an allowlist, no secrets, no Ray settings."""

from __future__ import annotations

import json
import subprocess
import sys

from actors.shared.sandbox import child_env, is_secret

BASE = {"PATH": "/usr/bin:/bin", "HOME": "/h", "LANG": "C.UTF-8", "LC_CTYPE": "C.UTF-8", "PYTHONPATH": "/src",
        "VIRTUAL_ENV": "/venv", "OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": "0", "NCCL_DEBUG": "INFO",
        "ANTHROPIC_API_KEY": "fake-anthropic-key", "WANDB_API_KEY": "w", "HF_TOKEN": "h", "AWS_SECRET_ACCESS_KEY": "s",
        "GOOGLE_APPLICATION_CREDENTIALS": "/c.json", "CUDA_API_KEY": "k", "RAY_ADDRESS": "a:1",
        "RAY_AUTH_TOKEN": "t", "SSH_AUTH_SOCK": "/tmp/ssh", "EDITOR": "vi"}
SECRETS = ("ANTHROPIC_API_KEY", "WANDB_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "GOOGLE_APPLICATION_CREDENTIALS",
           "CUDA_API_KEY", "RAY_ADDRESS", "RAY_AUTH_TOKEN")


def test_only_the_allowlist_passes():
    env = child_env(base=BASE)
    assert {k: env[k] for k in ("PATH", "HOME", "LANG", "LC_CTYPE", "PYTHONPATH", "VIRTUAL_ENV", "OMP_NUM_THREADS",
                                "CUDA_VISIBLE_DEVICES", "NCCL_DEBUG")} == {
        k: BASE[k] for k in ("PATH", "HOME", "LANG", "LC_CTYPE", "PYTHONPATH", "VIRTUAL_ENV", "OMP_NUM_THREADS",
                             "CUDA_VISIBLE_DEVICES", "NCCL_DEBUG")}
    assert not set(SECRETS) & set(env) and "SSH_AUTH_SOCK" not in env and "EDITOR" not in env


def test_a_cpu_child_sees_no_gpu():
    env = child_env(base=BASE, gpu=False)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and "NCCL_DEBUG" not in env and env["OMP_NUM_THREADS"] == "2"


def test_overrides_pass_unless_they_are_secrets_or_ray_settings():
    env = child_env({"MAX_WALLCLOCK_SECONDS": 30, "TOKENIZER_PATH": "/t.model", "WANDB_API_KEY": "x",
                     "RAY_ADDRESS": "b:2"}, base=BASE)
    assert env["MAX_WALLCLOCK_SECONDS"] == "30" and env["TOKENIZER_PATH"] == "/t.model"
    assert "WANDB_API_KEY" not in env and "RAY_ADDRESS" not in env
    assert [n for n in ("TOKENIZER_PATH", "NUM_KV_PAIRS", "KEYBOARD", "PATH") if is_secret(n)] == []
    assert all(is_secret(n) for n in SECRETS if not n.startswith("RAY_"))


def test_a_real_child_sees_none_of_the_secrets(monkeypatch):
    for k in SECRETS:
        monkeypatch.setenv(k, "planted-" + k)
    out = subprocess.run([sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
                         env=child_env(), capture_output=True, text=True, timeout=60)
    seen = json.loads(out.stdout)
    assert not set(SECRETS) & set(seen) and "planted-" not in out.stdout
