"""Ask the model probe (`python -m actors.scaler.model_probe`) a question about
code we did not write, in a child process: the sandbox's environment (no
secrets, no GPU), a timeout, one JSON answer.

- `probe(request)`: the raw exchange (the offline port asks "port");
- `sandboxed_fits(spec, files)`: `train.estimate.check_fits` of a spec whose
  model is code (an MVE's, or Claude's), with `files` laid out as the scaled
  folder will hold them. Where a plan meets the hard limits
  (`ScalePlan.checked_estimate`) a model that is code is built only here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

from actors.shared.sandbox import child_env
from actors.shared.stopping import run_child

PROBE_TIMEOUT_S = 180.0


class ProbeFailed(Exception):
    """The child did not answer (it crashed, or ran past its timeout); the message says how."""


def probe(request: dict, *, cwd: Path | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> dict:
    """Send `request` to the model probe and return its answer (a dict)."""
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        req = Path(tmp) / "request.json"
        req.write_text(json.dumps(request))
        try:
            proc = run_child([sys.executable, "-m", "actors.scaler.model_probe", str(req)], cwd=cwd or tmp,
                             env=child_env(gpu=False), timeout_s=timeout_s)
        except subprocess.TimeoutExpired:
            raise ProbeFailed(f"importing the code took longer than {timeout_s:.0f}s; it was stopped") from None
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProbeFailed(f"the model probe failed (exit {proc.returncode}): {tail[:400]}") from None
    if not isinstance(answer, dict):
        raise ProbeFailed("the model probe answered something other than an object")
    return answer


def sandboxed_fits(spec_json: dict, files: dict[str, str], *, timeout_s: float = PROBE_TIMEOUT_S) -> dict:
    """The estimate (train.estimate's fields) of a spec whose model file is
    among `files` (relative paths), within the hard limits; ValueError with
    the problem (a limit it breaks, or why the model does not build)."""
    with tempfile.TemporaryDirectory(prefix="fits-") as tmp:
        root = Path(tmp).resolve()
        for rel, text in files.items():
            target = (root / rel).resolve()
            if PurePosixPath(rel).is_absolute() or root not in target.parents:
                raise ValueError(f"file path {rel!r} escapes the experiment folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        try:
            answer = probe({"op": "fits", "spec": spec_json}, cwd=root, timeout_s=timeout_s)
        except ProbeFailed as exc:
            raise ValueError(str(exc)) from None
    if not answer.get("ok"):
        raise ValueError(answer.get("error") or "the model could not be built")
    return answer["estimate"]
