"""The main job on a real `ray start` cluster on this machine, as a user runs it
with `ray job submit`: what it writes, its metrics on the node's Prometheus
endpoint, and no secret anywhere it should not be.

The head is started the way cluster.yaml starts one (token authentication on,
the dashboard on 127.0.0.1, a fixed metrics export port), but so that it leaves
every other Ray instance on the machine alone: loopback only, free ports, its
own --temp-dir (so /tmp/ray/ray_current_cluster, which `ray.init("auto")` reads,
is never written), its own token file (not ~/.ray/auth_token), and it is
stopped by terminating the `ray start --block` process we started, never with
`ray stop` (which kills every Ray process on the host).

The planner is the real Claude planner and LLMClient with a fake ANTHROPIC_API_KEY, pointed by
ANTHROPIC_BASE_URL at a local stand-in for the Messages API that answers with
a valid plan: the key must reach the ScalerAgent that uses it (the stand-in
checks), and appear nowhere else.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from actors.shared.llm import DEFAULT_MODEL
from actors.shared.metrics import prometheus_name
from actors.shared.pricing import cost_usd, price_for
from actors.scaler.agent import REHEARSAL_STEPS, StepFailed, smoke_test
from actors.scaler.judge_claude import TOOL_NAME as JUDGE_TOOL
from actors.scaler.planners import TOOL_NAME
from tests.support import pristine_examples

ROOT = Path(__file__).resolve().parents[2]
RAY_CLI = str(Path(sys.executable).with_name("ray"))
MVE = "001"  # the one scalable MVE left in the copy of the examples
N_MVES = 6  # 001 and 004-008: the copy drops 002 and 003
USAGE = {"input_tokens": 1234, "output_tokens": 567, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 0}
DEFAULT_ADDRESS_FILE = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"


# -- generated code: a scrubbed environment, its own folder, a timeout (no cluster needed) ------


def test_generated_code_runs_without_secrets_or_ray_credentials_in_its_own_folder(tmp_path, monkeypatch):
    folder = tmp_path / "001_scaled"
    folder.mkdir()
    (folder / "train.py").write_text(
        "import json, os\njson.dump({'cwd': os.getcwd(), 'env': dict(os.environ)}, open('seen.json', 'w'))\n")
    planted = {
        "ANTHROPIC_API_KEY": "fake-anthropic-key-" + secrets.token_hex(8), "WANDB_API_KEY": "fake-wandb-" + secrets.token_hex(8),
        "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "auth_token"),
        "RAY_AUTH_MODE": "token", "RAY_ADDRESS": "127.0.0.1:6379", "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
    }
    for k, v in planted.items():
        monkeypatch.setenv(k, v)
    smoke_test(folder, timeout_s=60)
    seen = json.loads((folder / "seen.json").read_text())
    assert Path(seen["cwd"]).resolve() == folder.resolve()
    assert not set(planted) & set(seen["env"])
    dumped = json.dumps(seen["env"])
    assert not [k for k, v in planted.items() if v in dumped]
    assert seen["env"].get("PATH") == os.environ["PATH"]  # what it needs to run is still there


def test_generated_code_that_hangs_is_stopped_by_the_timeout(tmp_path):
    folder = tmp_path / "002_scaled"
    folder.mkdir()
    (folder / "train.py").write_text("import time\ntime.sleep(120)\n")
    t0 = time.time()
    with pytest.raises(StepFailed, match="smoke test timed out after 1s"):
        smoke_test(folder, timeout_s=1)
    assert time.time() - t0 < 30


def test_metrics_are_a_no_op_outside_ray():
    code = (
        "import ray\n"
        "from actors.shared import metrics\n"
        "from actors.shared.pricing import Usage\n"
        "metrics.set_claims_held(3); metrics.record_claims_evicted(2); metrics.record_mve_outcome('scaled')\n"
        "with metrics.training_job_running('a'):\n"
        "    metrics.record_training_spend(1.0, 2.0)\n"
        "metrics.record_llm_usage('m', Usage(input_tokens=1, output_tokens=1, cost_usd=0.1))\n"
        "metrics.record_autoresearch_best('b', 1.0)\n"
        "assert not ray.is_initialized() and not metrics._objects\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# -- helpers ---------------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as err:
        return 0, str(err)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _scrape(url: str) -> list[tuple[str, dict, float]]:
    """Prometheus text from a metrics export endpoint, as (name, labels, value)."""
    status, body = _get(url)
    samples = []
    if status != 200:
        return samples
    for line in body.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            samples.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return samples


def _value(samples, metric: str, **labels) -> float | None:
    """The sum of `metric` over every series with these labels (None if there is none)."""
    name = prometheus_name(metric)
    hits = [v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())]
    return sum(hits) if hits else None


def _base_env() -> dict[str, str]:
    """This process's environment without Ray's variables (the session's own Ray
    instance sets some) and without any real API key."""
    drop = ("RAY_", "ANTHROPIC_", "WANDB_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


class _FakeMessagesAPI:
    """A stand-in for POST /v1/messages: answers each plan request with `plan`
    through the planner's tool, billed at USAGE, and records the API keys it got."""

    def __init__(self, plan: dict):
        self.plan = plan
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                # The SDK sends the key as `x-api-key` or as a bearer token, by version.
                key = self.headers.get("x-api-key") or self.headers.get("authorization", "").removeprefix("Bearer ")
                outer.requests.append({"path": self.path, "api_key": key,
                                       "model": body.get("model"), "tools": [t["name"] for t in body.get("tools", [])]})
                reply = {
                    "id": "msg_cluster_test", "type": "message", "role": "assistant", "model": body.get("model"),
                    "content": [{"type": "tool_use", "id": "toolu_cluster_test", "name": TOOL_NAME, "input": outer.plan}],
                    "stop_reason": "tool_use", "stop_sequence": None, "usage": USAGE,
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _small_plan(mve) -> dict:
    """The plan the stand-in model answers with: the offline planner's, at the
    rehearsal's own size (d128 x 2), so that the smoke test of the full-size
    model does not eat this test's time budget."""
    from actors.scaler.planners import OfflinePlanner
    from actors.scaler.plan import ScalePlan
    from train.estimate import estimate

    plan = OfflinePlanner().design(mve.id, mve.results, title="")
    plan = plan.model_copy(update={"model": plan.model.model_copy(
        update={"d_model": 128, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1 if plan.model.n_kv_heads else None})})
    data = {**plan.model_dump(mode="json"), "title": f"MVE {mve.id} scaled (cluster test): gpt d128x2 on mqar",
            "target_params": estimate(plan.to_train_spec()).params}
    return ScalePlan.model_validate(data).model_dump(mode="json")


@dataclass
class Head:
    proc: subprocess.Popen
    work: Path
    temp_dir: Path
    gcs_address: str
    dashboard: str
    metrics: str
    token: str
    keys: dict[str, str]
    head_env: dict[str, str]
    client_env: dict[str, str]
    api: _FakeMessagesAPI
    address_file_before: bytes | None
    log: Path

    def running(self) -> bool:
        return self.proc.poll() is None


def _ours(head: Head) -> list:
    """Every live process this head started: its process tree, and anything
    that names its temp dir (a worker that left the tree)."""
    import psutil

    procs = {}
    try:
        root = psutil.Process(head.proc.pid)
        for p in [root, *root.children(recursive=True)]:
            procs[p.pid] = p
    except psutil.NoSuchProcess:
        pass
    marker = str(head.temp_dir)
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in arg for arg in (p.info["cmdline"] or [])):
                procs[p.pid] = p
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [p for p in procs.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _stop(head: Head) -> list[str]:
    """Terminate the `ray start --block` we started; it takes its GCS, raylet,
    dashboard and workers down with it. Whatever is left of ours is killed by
    pid. Returns what had to be killed."""
    import psutil

    leftovers = []
    if head.running():
        head.proc.send_signal(signal.SIGTERM)
        try:
            head.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            leftovers.append(f"ray start (pid {head.proc.pid}) ignored SIGTERM")
    deadline = time.time() + 10
    while _ours(head) and time.time() < deadline:
        time.sleep(0.5)
    for p in _ours(head):
        try:
            leftovers.append(f"{p.pid} {' '.join(p.cmdline()[:2])}")
            p.kill()
        except psutil.NoSuchProcess:
            pass
    if head.proc.poll() is None:
        head.proc.kill()
        head.proc.wait(timeout=10)
    return leftovers


# -- the cluster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def examples():
    """A copy of the examples with one scalable MVE (001) and the finished 006."""
    work = Path(tempfile.mkdtemp(prefix="rac", dir="/tmp"))  # short: Ray's socket paths live under it
    shutil.copytree(pristine_examples() / "experiments", work / "examples/experiments")
    shutil.copytree(pristine_examples() / "code", work / "examples/code")
    for mve in ("002", "003"):
        for d in (work / "examples/experiments").glob(f"{mve}_*"):
            shutil.rmtree(d)
    yield work
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def head(examples):
    from actors.scaler.discovery import find_mves

    work = examples
    mve = next(m for m in find_mves(work / "examples/experiments", work / "examples/code") if m.id == MVE)
    assert mve.scalable and [m.id for m in find_mves(work / "examples/experiments", work / "examples/code")
                             if m.scalable] == [MVE]
    api = _FakeMessagesAPI(_small_plan(mve))

    token = secrets.token_hex(32)
    (work / "auth_token").write_text(token)
    (work / "auth_token").chmod(0o600)
    keys = {"ANTHROPIC_API_KEY": "fake-anthropic-key-" + secrets.token_hex(12),
            "WANDB_API_KEY": "fake-wandb-" + secrets.token_hex(12)}
    gcs, dash, metrics, client, agent, agent_grpc, runtime_env, autoscaler_m, dash_m = _free_ports(9)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(work / "auth_token")}
    head_env = {
        **_base_env(), **auth, **keys,
        # Every process of this cluster (the job's driver, Ray Train's helpers)
        # talks to this cluster, whatever else runs on the machine.
        "RAY_ADDRESS": f"127.0.0.1:{gcs}",
        # Loopback only: on Linux `ray start` otherwise swaps 127.0.0.1 for the host's address.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "RAY_metrics_report_interval_ms": "1000",
        # Fixed by default (44217, 44227): two heads on one machine would collide.
        "AUTOSCALER_METRIC_PORT": str(autoscaler_m), "DASHBOARD_METRIC_PORT": str(dash_m),
        "ANTHROPIC_BASE_URL": api.url,
        "WANDB_MODE": "disabled",
    }
    # The submitting user's shell: the token, and API keys exported for other tools.
    client_env = {**_base_env(), **auth, **keys}
    temp_dir = work / "ray"
    log = work / "head.log"
    address_file_before = DEFAULT_ADDRESS_FILE.read_bytes() if DEFAULT_ADDRESS_FILE.exists() else None
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [RAY_CLI, "start", "--head", "--block", "--port", str(gcs), "--node-ip-address", "127.0.0.1",
             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
             "--metrics-export-port", str(metrics), "--ray-client-server-port", str(client),
             "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
             "--runtime-env-agent-port", str(runtime_env), "--num-cpus", "2", "--temp-dir", str(temp_dir),
             "--disable-usage-stats"],
            cwd=work, env=head_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    h = Head(proc, work, temp_dir, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}",
             f"http://127.0.0.1:{metrics}/metrics", token, keys, head_env, client_env, api, address_file_before, log)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and h.running() and _get(f"{h.dashboard}/api/version", token)[0] != 200:
            time.sleep(0.5)
        if _get(f"{h.dashboard}/api/version", token)[0] != 200:
            pytest.fail(f"the head did not come up:\n{log.read_text()[-3000:]}")
        yield h
    finally:
        leftovers = _stop(h)
        api.close()
        assert not leftovers, f"processes of the test cluster outlived `ray start`: {leftovers}"


def _ray(args: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RAY_CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def job(head):
    """`ray job submit --working-dir . -- python -m actors.main --scalers 2 --once` on
    the copy of the examples; polls the job and the metrics endpoint until it ends."""
    ex = head.work / "examples"
    submission_id = f"cluster-test-{secrets.token_hex(4)}"
    # --no-autoresearch: this test is about the scalers; AutoResearch has its own tests.
    # --planner single: the stand-in API answers every request with the plan (the agentic
    # session has its own tests, tests/integration/test_scaler_agentic.py).
    entrypoint = ["python", "-m", "actors.main", "--scalers", "2", "--once", "--no-autoresearch", "--planner", "single",
                  "--experiments", str(ex / "experiments"), "--code", str(ex / "code"),
                  "--state", str(head.work / "state.parquet")]
    out = _ray(["job", "submit", "--address", head.dashboard, "--submission-id", submission_id,
                "--working-dir", ".", "--no-wait", "--", *entrypoint], head.client_env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    status, max_seen, driver_cwd = None, {"claims_held": 0.0, "training_jobs_running": 0.0}, set()
    deadline = time.time() + 300
    while time.time() < deadline:
        code, body = _get(f"{head.dashboard}/api/jobs/{submission_id}", head.token)
        status = json.loads(body)["status"] if code == 200 else None
        samples = _scrape(head.metrics)
        for name in max_seen:
            max_seen[name] = max(max_seen[name], _value(samples, name) or 0.0)
        driver_cwd |= _driver_cwds(head)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(1.0)
    logs = _ray(["job", "logs", "--address", head.dashboard, submission_id], head.client_env)
    info = json.loads(_get(f"{head.dashboard}/api/jobs/{submission_id}", head.token)[1])
    assert status == "SUCCEEDED", f"job {status}: {info.get('message')}\n{logs.stdout[-4000:]}"
    return SimpleNamespace(id=submission_id, info=info, logs=logs.stdout + logs.stderr, max_seen=max_seen,
                           submit_output=out.stdout + out.stderr, driver_cwd=driver_cwd)


def _driver_cwds(head: Head) -> set[str]:
    """Where the job's driver (`python -m actors.main`) runs."""
    cwds = set()
    for p in _ours(head):
        try:
            if p.cmdline()[1:3] == ["-m", "actors.main"]:
                cwds.add(p.cwd())
        except Exception:
            continue
    return cwds


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.slow
def test_ray_job_submit_scales_the_mve_on_a_token_authenticated_cluster(head, job):
    # Token authentication is on: the dashboard refuses a request without it.
    assert _get(f"{head.dashboard}/api/version")[0] == 401
    assert _get(f"{head.dashboard}/api/version", "not-the-token")[0] == 403
    # What the job wrote: the scaled experiment, trained, recorded.
    ex = head.work / "examples"
    results = json.loads((ex / f"code/{MVE}_scaled/results.json").read_text())
    assert results["mode"].startswith("laptop rehearsal") and results["steps"] == REHEARSAL_STEPS
    assert results["val_loss"] < results["val_loss_at_start"]
    assert results["planner"] == f"anthropic:{DEFAULT_MODEL}"
    assert {k: results["llm"][k] for k in USAGE} == USAGE
    assert f"{MVE}_scaled" in (ex / "experiments/EXPERIMENTS.md").read_text()
    assert sorted(p.name for p in (ex / "code").iterdir()) == [f"{MVE}_scaled", "006_scaled"]
    assert "scaled 1, failed 0" in job.logs
    # The job ran the code it was given: the uploaded working directory (without
    # .venv, .git and what .gitignore ignores) is where its modules were imported
    # from (__pycache__ is not uploaded; the job's imports wrote it there).
    uri = job.info["runtime_env"]["working_dir"]
    assert re.fullmatch(r"gcs://_ray_pkg_[0-9a-f]+\.zip", uri), uri
    [pkg] = {p.resolve() for p in head.temp_dir.glob(
        f"session_*/runtime_resources/working_dir_files/{uri[len('gcs://'):-len('.zip')]}")}
    assert (pkg / "actors/main.py").is_file() and (pkg / "cluster.yaml").is_file()
    assert not any((pkg / d).exists() for d in (".venv", ".git", "runs"))
    assert job.driver_cwd and {Path(c).resolve() for c in job.driver_cwd} == {pkg}  # `python -m` imports from there
    # Isolation: the cluster recorded its address in its own temp dir, not where
    # `ray.init(address="auto")` elsewhere on this machine would find it.
    assert (head.temp_dir / "ray_current_cluster").read_text().strip() == head.gcs_address
    now = DEFAULT_ADDRESS_FILE.read_bytes() if DEFAULT_ADDRESS_FILE.exists() else None
    assert now == head.address_file_before


@pytest.mark.cluster
@pytest.mark.slow
def test_metrics_endpoint_shows_what_the_job_did(head, job):
    # During the run: one training job, one claim.
    assert job.max_seen["training_jobs_running"] == 1
    assert job.max_seen["claims_held"] == 1
    # Every request is billed USAGE: the one plan, and the judge's (see the secrets test).
    n = len(head.api.requests)
    expected_cost = n * cost_usd(price_for(DEFAULT_MODEL), **USAGE)
    want = {("mves", (("status", "scaled"),)): 1.0,
            ("llm_tokens", (("kind", "input"), ("model", DEFAULT_MODEL))): n * 1234.0,
            ("llm_tokens", (("kind", "output"), ("model", DEFAULT_MODEL))): n * 567.0,
            ("llm_tokens", (("kind", "cache_write"), ("model", DEFAULT_MODEL))): n * 100.0,
            ("llm_cost_usd", (("model", DEFAULT_MODEL),)): expected_cost,
            ("claims_held", ()): 0.0}
    got = _wait_for(head, want)
    assert got == pytest.approx(want), got
    samples = _scrape(head.metrics)
    assert _value(samples, "mves", status="failed") is None  # nothing failed, nothing counted
    assert _value(samples, "training_jobs_running") in (0, None)  # the agents are gone: 0, or aged out

    # The rest, recorded where they are in real life: an eviction by a real
    # WorkTracker, and AutoResearch's best val_bpb and a GPU job's spend from an actor.
    code = f"""
import sys, time, ray
from actors.shared import metrics
from actors.tracker.actor import connect_tracker
tracker = connect_tracker({str(head.work / "evict.parquet")!r}, ttl_s=0.5, sweep_interval_s=3600, namespace="metrics-check")
assert ray.get(tracker.claim.remote("scale:999", "agent-that-dies")) is not None
time.sleep(1.0)
assert len(ray.get(tracker.evict_stale.remote())) == 1

@ray.remote(num_cpus=0)
class StandIn:
    def keep(self, branch, val_bpb):
        metrics.record_autoresearch_best(branch, val_bpb)
    def spend(self, gpu_hours, usd):
        metrics.record_training_spend(gpu_hours, usd)

a = StandIn.remote()
ray.get([a.keep.remote("autoresearch/cluster-test", 1.2345), a.spend.remote(1.5, 3.0)])
print("recorded", flush=True)
sys.stdin.read()  # keep the actor, and its gauge, alive until the test has scraped
"""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=head.head_env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "recorded", proc.stderr.read()[-3000:] if proc.poll() is not None else line
        want2 = {("claims_evicted", ()): 1.0, ("gpu_hours", ()): 1.5, ("training_cost_usd", ()): 3.0,
                 ("best_val_bpb", (("branch", "autoresearch/cluster-test"),)): 1.2345}
        got2 = _wait_for(head, want2)
        assert got2 == pytest.approx(want2), got2
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_for(head: Head, want: dict, timeout_s: float = 20.0) -> dict:
    """Scrape until every wanted series has its value (metrics are exported
    every second here), or the deadline; returns the last values seen."""
    deadline = time.time() + timeout_s
    while True:
        samples = _scrape(head.metrics)
        got = {key: _value(samples, key[0], **dict(key[1])) for key in want}
        if all(got[k] is not None and abs(got[k] - want[k]) < 1e-6 for k in want) or time.time() > deadline:
            return got
        time.sleep(0.5)


@pytest.mark.cluster
@pytest.mark.slow
def test_secrets_reach_only_the_process_that_uses_them(head, job):
    # The Anthropic key reached the ScalerAgents that judged and planned with it:
    # one plan; the judge's requests got a plan back (this stand-in knows one
    # tool), so the heuristics decided, and each process that scans (the driver's
    # first report, the two agents) asked about each MVE's unchanged files once
    # (ask + one feedback retry), not on every rescan.
    requests = head.api.requests
    assert {r["api_key"] for r in requests} == {head.keys["ANTHROPIC_API_KEY"]}
    assert {r["path"] for r in requests} == {"/v1/messages"}
    assert sum(r["tools"] == [TOOL_NAME] for r in requests) == 1
    judged = [r for r in requests if r["tools"] == [JUDGE_TOOL]]
    assert len(judged) == len(requests) - 1 and len(judged) <= 2 * 3 * N_MVES
    # ... and nothing else has it, nor the W&B key, nor the cluster's token.
    secrets_ = {**head.keys, "ray auth token": head.token}
    # Not in the job as Ray stores it (`ray job list`, the dashboard): no env_vars in its runtime_env.
    assert "env_vars" not in (job.info.get("runtime_env") or {})
    places = {"job info": json.dumps(job.info), "ray job logs": job.logs, "ray job submit": job.submit_output}
    ex = head.work / "examples"
    for path in [ex / "experiments/EXPERIMENTS.md", head.work / "state.parquet",
                 *sorted(p for p in (ex / f"code/{MVE}_scaled").rglob("*") if p.is_file())]:
        places[str(path.relative_to(head.work))] = path.read_bytes().decode(errors="replace")
    leaks = [f"{what} in {where}" for where, text in places.items() for what, s in secrets_.items() if s in text]
    # Every file Ray wrote for this cluster: session logs, job driver logs, the
    # unpacked working dir, runtime resources.
    scanned = 0
    for path in {p.resolve() for p in head.temp_dir.rglob("*")}:
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            leaks += [f"{what} in {path}" for what, s in secrets_.items()
                      if s.encode() in data]
    assert scanned > 50 and list(head.temp_dir.glob("session_*/logs/job-driver-*.log"))
    assert not leaks, leaks
