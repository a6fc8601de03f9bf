"""The tools of the agentic scaler: everything Claude may do while it scales one MVE.

- `list_files`, `read_file`: the MVE's notes and code, its proposal, and what
  Claude wrote so far (`staging/...`); nothing else on the machine.
- `write_file`, `edit_file`: files of the scaled experiment, in its staging
  folder only. Paths are resolved under it: absolute paths, `..` and symlinks
  that lead out are refused, and so are the files the scaffold generates
  from the plan (README.md, config.yaml, train.py, ...).
- `run_smoke_test`: the plan and the staged files written as a trial
  `code/NNN_scaled/`, and its smoke test run as the agent runs it (a child
  process, the sandbox's environment, no GPU, a timeout); the tail of its output.
- `estimate`: parameters, memory per GPU, GPU-hours and cost of a plan, and
  the hard limits it breaks (a model that is code is built in a child only).
- `submit_scale_plan`, `submit_benchmark_plan`: the final plan, accepted only
  when the smoke test passed on exactly this plan and these files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from actors.scaler.benchmark_job import write_benchmark_experiment
from actors.scaler.sandboxed import PROBE_TIMEOUT_S, sandboxed_fits
from actors.scaler.plan import BenchmarkPlan, ScalePlan, check_relative
from actors.scaler.scaffold import GENERATED, ScaffoldError, inside, write_scaled_experiment
from actors.scaler.steps import run_smoke
from train.spec import format_validation_error

MAX_READ_CHARS = 60_000
MAX_WRITE_BYTES = 256_000


def _plan_schema(model: type) -> dict:
    schema = model.model_json_schema()
    schema["properties"].pop("files", None)  # the files are the staging folder's
    return schema


def tool_specs() -> list[dict]:
    plan, bench = _plan_schema(ScalePlan), _plan_schema(BenchmarkPlan)
    either = {"type": "object", "properties": {"scale_plan": plan, "benchmark_plan": bench},
              "description": "exactly one of scale_plan (a training run) or benchmark_plan (a benchmark job)"}
    path = {"type": "string", "description": "a path relative to the staging folder, e.g. models/model.py"}
    return [
        {"name": "list_files", "description": "List the files you can read: the MVE's notes and code, its "
         "proposal, and the staging folder of the scaled experiment (staging/...).",
         "input_schema": {"type": "object", "properties": {}}},
        {"name": "read_file", "description": "Read one file named as list_files names it.",
         "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
        {"name": "write_file", "description": "Create or replace a file of the scaled experiment (in its staging "
         "folder). The scaffold writes README.md, config.yaml, plan.json, train.py and scripts/ from the plan.",
         "input_schema": {"type": "object", "properties": {"path": path, "content": {"type": "string"}},
                          "required": ["path", "content"]}},
        {"name": "edit_file", "description": "Replace one exact, unique occurrence of old_text in a staged file.",
         "input_schema": {"type": "object", "properties": {"path": path, "old_text": {"type": "string"},
                                                           "new_text": {"type": "string"}},
                          "required": ["path", "old_text", "new_text"]}},
        {"name": "run_smoke_test", "description": "Write the plan and the staged files as a trial experiment and "
         "run its smoke test (CPU, no GPU, a timeout): a training plan builds the model, runs one forward and "
         "backward pass on its data and checks the parameter count and memory; a benchmark plan runs its "
         "smoke_command. Returns whether it passed and the tail of its output.", "input_schema": either},
        {"name": "estimate", "description": "Parameters, memory per GPU, FLOPs per token, GPU-hours and cost of a "
         "training plan, and the hard limits it breaks.", "input_schema": {
            "type": "object", "properties": {"scale_plan": plan}, "required": ["scale_plan"]}},
        {"name": "submit_scale_plan", "description": "Submit the final training plan. Accepted only after "
         "run_smoke_test passed on exactly this plan and the staged files.", "input_schema": plan},
        {"name": "submit_benchmark_plan", "description": "Submit the final benchmark plan (a kernel benchmark MVE "
         "scaled as a benchmark job on up to 2 GPUs). Accepted only after run_smoke_test passed on it.",
         "input_schema": bench},
    ]


def _estimate_in(output: str) -> dict | None:
    """The estimate a passing `train.py --smoke` printed in its report (its last line)."""
    try:
        return json.loads(output.strip().splitlines()[-1]).get("estimate")
    except (IndexError, ValueError, AttributeError):
        return None


@dataclass
class ToolResult:
    text: str
    is_error: bool = False
    submitted: ScalePlan | BenchmarkPlan | None = None


class Workbench:
    """The tools over one MVE's files and one staging folder."""

    def __init__(self, *, mve_id: str, readable: dict[str, Path], staging: Path, code_dir: Path,
                 smoke_timeout_s: float, probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.mve_id, self.readable, self.staging = mve_id, dict(readable), staging.resolve()
        self.code_dir, self.smoke_timeout_s, self.probe_timeout_s = code_dir, smoke_timeout_s, probe_timeout_s
        self.passed: str | None = None  # fingerprint of the plan and files whose smoke test passed last
        self.estimate: dict | None = None  # what that smoke test estimated (train.estimate's fields)
        self.staging.mkdir(parents=True, exist_ok=True)

    # -- dispatch --------------------------------------------------------------

    def call(self, name: str, args: Any) -> ToolResult:
        handler = getattr(self, f"_tool_{name}", None)
        if handler is None:
            return ToolResult(f"unknown tool {name!r}", True)
        if not isinstance(args, dict):
            return ToolResult("the tool input must be an object", True)
        try:
            return handler(**args)
        except TypeError as exc:  # missing or unexpected arguments
            return ToolResult(f"bad arguments for {name}: {exc}", True)
        except (ScaffoldError, ValueError, OSError) as exc:
            return ToolResult(f"{type(exc).__name__}: {exc}", True)

    def staged_files(self) -> dict[str, str]:
        files = {}
        for path in sorted(self.staging.rglob("*")):
            rel = path.relative_to(self.staging).as_posix()
            if path.is_file() and not path.is_symlink() and not any(p.startswith(".") or p == "__pycache__"
                                                                     for p in rel.split("/")):
                files[rel] = path.read_text(errors="replace")
        return files

    # -- reading ---------------------------------------------------------------

    def _tool_list_files(self) -> ToolResult:
        names = sorted(self.readable) + [f"staging/{n}" for n in self.staged_files()]
        return ToolResult("\n".join(names) or "(no files)")

    def _tool_read_file(self, path: str) -> ToolResult:
        if path.startswith("staging/"):
            target = self._staged(path.removeprefix("staging/"))
        elif path in self.readable:
            target = self.readable[path]
        else:
            return ToolResult(f"{path!r} is not a file you can read; list_files names them", True)
        if not target.is_file():
            return ToolResult(f"{path!r} does not exist", True)
        text = target.read_bytes()[: MAX_READ_CHARS * 4].decode("utf-8", errors="replace")
        if "\x00" in text:
            return ToolResult(f"{path!r} is binary", True)
        cut = len(text) > MAX_READ_CHARS
        return ToolResult(text[:MAX_READ_CHARS] + (f"\n[... cut at {MAX_READ_CHARS} characters]" if cut else ""))

    # -- writing ---------------------------------------------------------------

    def _staged(self, rel: str) -> Path:
        check_relative(rel)
        if any(part.startswith(".") for part in rel.split("/")):
            raise ValueError(f"{rel!r}: hidden files and folders are not part of an experiment")
        if rel in GENERATED or rel.startswith("scripts/") or rel.startswith("agent/"):
            raise ValueError(f"{rel!r} is generated by the scaffold from the plan; write the plan instead")
        target = inside(self.staging, rel)
        if target == self.staging:
            raise ValueError(f"{rel!r} is the staging folder itself")
        return target

    def _tool_write_file(self, path: str, content: str) -> ToolResult:
        target = self._staged(path)
        data = content.encode()
        if len(data) > MAX_WRITE_BYTES:
            return ToolResult(f"{path}: {len(data)} bytes is more than the {MAX_WRITE_BYTES} a file may have", True)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return ToolResult(f"wrote {len(data)} bytes to staging/{path}")

    def _tool_edit_file(self, path: str, old_text: str, new_text: str) -> ToolResult:
        target = self._staged(path)
        if not target.is_file():
            return ToolResult(f"staging/{path} does not exist; write_file creates it", True)
        text = target.read_text()
        count = text.count(old_text) if old_text else 0
        if count != 1:
            return ToolResult(f"old_text occurs {count} times in staging/{path}; it must occur exactly once", True)
        target.write_text(text.replace(old_text, new_text))
        return ToolResult(f"edited staging/{path}")

    # -- plans -----------------------------------------------------------------

    def _plan(self, kind: type, raw: Any) -> ScalePlan | BenchmarkPlan:
        if not isinstance(raw, dict):
            raise ValueError("the plan must be an object")
        try:
            plan = kind.model_validate({**raw, "files": self.staged_files()})
        except ValidationError as err:
            raise ValueError(f"the plan is not valid: {format_validation_error(err)}") from None
        if plan.mve_id != self.mve_id:
            raise ValueError(f"mve_id: the plan is for MVE {plan.mve_id}, but this is MVE {self.mve_id}")
        if isinstance(plan, ScalePlan) and plan.model.family == "custom" and plan.model.path not in plan.files:
            raise ValueError(f"model.path {plan.model.path!r} is not a staged file; write it first")
        return plan

    def _fingerprint(self, plan: ScalePlan | BenchmarkPlan) -> str:
        return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()

    def _tool_run_smoke_test(self, scale_plan: Any = None, benchmark_plan: Any = None) -> ToolResult:
        if (scale_plan is None) == (benchmark_plan is None):
            return ToolResult("give exactly one of scale_plan or benchmark_plan", True)
        plan = self._plan(ScalePlan, scale_plan) if scale_plan is not None else self._plan(BenchmarkPlan,
                                                                                           benchmark_plan)
        trial = self.code_dir / f".{plan.name}.trial-{uuid.uuid4().hex[:8]}"
        try:
            if isinstance(plan, ScalePlan):
                folder = write_scaled_experiment(plan, trial, None, "agentic (trial)")
            else:
                folder = write_benchmark_experiment(plan, trial, "agentic (trial)")
            run = run_smoke(folder, self.smoke_timeout_s)
        finally:
            shutil.rmtree(trial, ignore_errors=True)
        if run.ok:
            self.passed, self.estimate = self._fingerprint(plan), _estimate_in(run.tail)
        report = {"passed": run.ok, "summary": run.summary, "seconds": run.seconds, "output_tail": run.tail}
        return ToolResult(json.dumps(report, indent=1), not run.ok)

    def _tool_estimate(self, scale_plan: Any) -> ToolResult:
        plan = self._plan(ScalePlan, scale_plan)
        spec = plan.to_train_spec()
        if plan.model.family == "custom":
            try:
                est = sandboxed_fits(spec.model_dump(mode="json"), plan.files, timeout_s=self.probe_timeout_s)
                problems = []
            except ValueError as exc:
                return ToolResult(f"not within the hard limits, or the model does not build: {exc}", True)
        else:
            from train.estimate import check_fits, estimate
            from train.limits import LimitExceeded

            try:
                est, problems = check_fits(spec).to_dict(), []
            except LimitExceeded as exc:
                est, problems = estimate(spec).to_dict(), [str(exc)]
        keys = ("params", "flops_per_token", "memory_per_gpu_gb", "total_tokens", "compute_hours", "gpu_hours",
                "cost_usd")
        report = {k: est[k] for k in keys} | {"within_hard_limits": not problems, "problems": problems}
        return ToolResult(json.dumps(report, indent=1), bool(problems))

    def _submit(self, kind: type, raw: dict) -> ToolResult:
        plan = self._plan(kind, raw)
        if self.passed != self._fingerprint(plan):
            return ToolResult("run_smoke_test on exactly this plan and the staged files first; it must pass", True)
        return ToolResult(f"accepted: {plan.title}", submitted=plan)

    def _tool_submit_scale_plan(self, **plan: Any) -> ToolResult:
        return self._submit(ScalePlan, plan)

    def _tool_submit_benchmark_plan(self, **plan: Any) -> ToolResult:
        return self._submit(BenchmarkPlan, plan)
