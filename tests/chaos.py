"""Interrupt the main job at random points, rerun it, and check nothing was lost.

Shared by the chaos test (a few interruptions) and `scripts/bench_chaos.py`
(as many as you like). Each round starts `python -m actors.main` on a copy of the
examples, joined to a Ray cluster the caller gives (RAY_ADDRESS), and interrupts
it with one of:

- SIGINT or SIGTERM to the driver (Ctrl-C, `ray job stop`): a graceful stop;
- SIGKILL of the driver: its job ends, its agents die with it;
- `ray.kill` of one agent while the job goes on.

After the interrupted rounds one normal run finishes the work. `check()` then
says what a user would check: every scalable MVE scaled exactly once (one
results.json, one ledger entry), no claim held, none of the user's files
changed, no half-written folder left in place.
"""

from __future__ import annotations

import hashlib
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("SIGINT", "SIGTERM", "SIGKILL", "ray.kill")
GOES_ON_S = 15.0  # after `ray.kill` of an agent, how long the job runs on before it is stopped


@dataclass
class ChaosRun:
    examples: Path
    state: Path
    namespace: str
    env: dict
    scalers: int = 2
    seed: int = 0
    log: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "actors.main", "--scalers", str(self.scalers), "--no-autoresearch",
                "--experiments", str(self.examples / "experiments"), "--code", str(self.examples / "code"),
                "--state", str(self.state), "--namespace", self.namespace]

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def interrupt(self, kind: str, after_s: float) -> tuple[int | None, float]:
        """One round interrupted by `kind` `after_s` seconds in; returns (exit code, seconds to stop)."""
        import ray

        proc = self.start()
        time.sleep(after_s)
        t0 = time.monotonic()
        if proc.poll() is not None:
            self.log.append(f"{kind}: the run ended before the interruption (exit {proc.returncode})")
            return proc.returncode, 0.0
        if kind == "ray.kill":
            agents = [a for a in ray.util.list_named_actors(all_namespaces=True)
                      if a["namespace"] == self.namespace and a["name"].startswith("scaler-")]
            if agents:
                victim = random.Random(self.seed).choice(sorted(a["name"] for a in agents))
                ray.kill(ray.get_actor(victim, namespace=self.namespace), no_restart=True)
            try:  # the job goes on without it for a while; then the operator stops it
                out, _ = proc.communicate(timeout=GOES_ON_S)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
                out, _ = proc.communicate(timeout=300)
        else:
            proc.send_signal(getattr(signal, kind))
            out, _ = proc.communicate(timeout=300)
        took = time.monotonic() - t0
        self.log.append(f"{kind} after {after_s:.0f}s: exit {proc.returncode} in {took:.1f}s; "
                        + (out.strip().splitlines() or ["(no output)"])[-1][:200])
        return proc.returncode, took

    def finish(self) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.command(), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=900)
        summary = [line for line in proc.stdout.splitlines() if line.startswith(("0", "1", "2", "scaled "))]
        self.log.append(f"final run: exit {proc.returncode}; " + " | ".join(summary))
        return proc


def fingerprint(paths: list[Path]) -> dict[str, str]:
    """Every file under `paths`, by content hash: what the user wrote must not change."""
    out = {}
    for root in paths:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


LEDGER = "EXPERIMENTS.md"  # the one file of the user's we write to: appended to, never changed


def user_files(examples: Path) -> list[Path]:
    ours = re.compile(r"^\.?\d{3}_scaled")
    return [examples / "experiments", examples / "proposals",
            *[p for p in (examples / "code").iterdir() if not ours.match(p.name) or p.name == "006_scaled"]]


def fingerprint_user_files(examples: Path) -> dict[str, str]:
    return {k: v for k, v in fingerprint(user_files(examples)).items() if not k.endswith(LEDGER)}


def check(examples: Path, tracker, scalable: list[str], ledger_entries_before: int) -> list[str]:
    """What is wrong after the final run ([] when nothing is)."""
    import ray

    problems = []
    for mve in scalable:
        if not (examples / f"code/{mve}_scaled/results.json").is_file():
            problems.append(f"{mve} has no results.json")
    claims = ray.get(tracker.list_claims.remote())
    live = [c.work_id for c in claims if c.live]
    if live:
        problems.append(f"claims still held: {live}")
    done = [c.work_id for c in claims if c.state.value == "done"]
    if sorted(done) != sorted(f"scale:{m}" for m in scalable):
        problems.append(f"done in the tracker: {sorted(done)}")
    ledger = (examples / "experiments/EXPERIMENTS.md").read_text()
    entries = ledger.count("\n## ") - ledger_entries_before
    if entries != len(scalable):
        problems.append(f"{entries} new ledger entries for {len(scalable)} scaled MVEs")
    for p in (examples / "code").iterdir():
        if re.fullmatch(r"\d{3}_scaled", p.name) and not (p / "results.json").exists() and p.name != "006_scaled":
            problems.append(f"{p.name} is half-written and still in place")
    return problems
