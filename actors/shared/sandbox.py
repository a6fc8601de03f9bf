"""The one environment every child process we start gets: an allowlist.

Generated code (a scaled experiment's smoke test) and training scripts
(AutoResearch runs) see what they need to run, and nothing else: no API keys,
no cloud credentials, no Ray address or cluster token.

- passed: PATH, HOME, USER, locale, TMPDIR, PYTHONPATH, VIRTUAL_ENV,
  LD_LIBRARY_PATH, CPU threading (OMP_*, MKL_*), and with `gpu=True` what
  CUDA, NCCL and PyTorch's allocator read (CUDA_*, NCCL_*, NVIDIA_*, ...);
- never, not even as an override: a name that is a secret by its words (KEY,
  TOKEN, SECRET, PASSWORD, CREDENTIAL: `WANDB_API_KEY`, `HF_TOKEN`,
  `AWS_SECRET_ACCESS_KEY`; `TOKENIZER_PATH` is not one) or any RAY_* variable.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Mapping

log = logging.getLogger(__name__)

_PASS_EXACT = frozenset({"PATH", "HOME", "USER", "LANG", "LANGUAGE", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
                         "LD_LIBRARY_PATH"})
_PASS_PREFIXES = ("LC_", "OMP_", "MKL_")
_GPU_PREFIXES = ("CUDA_", "NCCL_", "NVIDIA_", "TORCH_CUDA_ARCH", "PYTORCH_CUDA_ALLOC")
# A secret word as a part of the name: "_KEY", "API_KEY_FILE", "CREDENTIALS".
_SECRET = re.compile(r"(?:^|_)[A-Z0-9]*(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)S?(?:_|$)")


def is_secret(name: str) -> bool:
    return bool(_SECRET.search(name.upper()))


def _refused(name: str) -> bool:
    return name.upper().startswith("RAY_") or is_secret(name)


def child_env(overrides: Mapping[str, object] | None = None, *, gpu: bool = True,
              base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: the allowlisted part of `base` (this
    process's environment by default), then `overrides`. `gpu=False`: the child
    sees no GPU (CUDA_VISIBLE_DEVICES is empty), e.g. a CPU-only smoke test."""
    base = os.environ if base is None else base
    prefixes = _PASS_PREFIXES + (_GPU_PREFIXES if gpu else ())
    env = {k: v for k, v in base.items()
           if (k in _PASS_EXACT or k.startswith(prefixes)) and not _refused(k)}
    env["PYTHONUNBUFFERED"] = "1"  # logs arrive as they are written
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    for k, v in (overrides or {}).items():
        if _refused(str(k)):
            log.warning("not passing %s to a child process: secrets and RAY_* settings stay out", k)
            continue
        env[str(k)] = str(v)
    return env


def redact_secrets(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with the value of every secret-named variable of `env` (this
    process's environment by default) replaced by "[redacted]": for what we
    write down (an agentic session's transcript), whoever produced the text."""
    env = os.environ if env is None else env
    for name, value in env.items():
        if is_secret(name) and isinstance(value, str) and len(value) >= 8:
            text = text.replace(value, "[redacted]")
    return text
