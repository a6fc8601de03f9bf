"""Shared storage for checkpoints, sweeps and the tracker's state, against a real
S3 API (moto's server on 127.0.0.1, see conftest), and the refusal of a local
path on a cluster of several nodes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from train.storage import Storage, exists, read_bytes, run_key

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples/specs/tiny_cpu.yaml"


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


def _kill_new_train_workers(started: float) -> list[str]:
    """SIGKILL the Ray Train workers that started after `started` (this test's only)."""
    ps = subprocess.run(["ps", "-eo", "pid=,etimes=,args="], capture_output=True, text=True).stdout
    age_limit = time.time() - started + 1
    pids = [line.split()[0] for line in ps.splitlines()
            if "ray::RayTrainWorker" in line and int(line.split()[1]) <= age_limit]
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    return pids


@pytest.mark.slow
def test_training_checkpoints_to_s3_and_resumes_from_the_bucket_after_a_worker_is_killed(ray_cluster, bucket,
                                                                                        tmp_path):
    # (This is also the suite's test of resume after a worker failure: the same Ray
    # Train path as with a local folder, the checkpoint read back from the bucket.)
    from train.evaluate import evaluate_checkpoint
    from train.run import run
    from train.spec import TrainSpec

    spec = TrainSpec.from_yaml(TINY).with_overrides([
        "logging.tensorboard=false", "budget.max_steps=60", "budget.eval_interval=10", "budget.eval_batches=2",
        "name=killme"])
    out = tmp_path / "out"
    experiment = Storage(bucket).join("runs", run_key(out), "killme")
    killed = {}

    def registered_step() -> int | None:
        # The controller records a checkpoint it has registered in this snapshot,
        # in the bucket: only then has a restart something to resume from.
        try:
            snap = json.loads(read_bytes(experiment.join("checkpoint_manager_snapshot.json")) or b"null")
            return snap["latest_checkpoint_result"]["metrics"]["step"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def kill_worker_after_first_checkpoint():
        deadline = time.time() + 120
        while time.time() < deadline and registered_step() is None:
            time.sleep(0.2)
        killed["after_step"] = registered_step()
        killed["pids"] = _kill_new_train_workers(started)

    started = time.time()
    killer = threading.Thread(target=kill_worker_after_first_checkpoint)
    killer.start()
    results = run(spec, out_dir=out, ledger=None, storage=bucket)
    killer.join()
    assert killed.get("pids"), "no training worker was found to kill"
    assert killed["after_step"] is not None, "no checkpoint was registered in the bucket before the run ended"
    assert results["resumed_from_step"] is not None and results["resumed_from_step"] >= killed["after_step"]
    assert results["steps"] == 60 and results["stop_reason"] == "max_steps"

    # results.json points into the bucket, and nothing of the run is kept on local disk but results.
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["storage"] == experiment.uri
    assert on_disk["checkpoint"].startswith(experiment.uri + "/checkpoint_")
    assert exists(Storage(on_disk["checkpoint"]).join("model.pt"))
    assert not (out / "ray_results").exists()
    # The checkpoint in the bucket holds the final weights: evaluating it gives the run's numbers.
    again = evaluate_checkpoint(spec, on_disk["checkpoint"])
    assert again["val_loss"] == pytest.approx(results["val_loss"], rel=1e-4)


def _finished_trials(root: Path) -> dict[str, str]:
    out = {}
    for path in root.glob("hs_g*n*/trial_*/result.json"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        try:
            if lines and json.loads(lines[-1]).get("finished") == 1.0:
                out[str(path.parent.relative_to(root))] = path.read_text()
        except json.JSONDecodeError:
            continue
    return out


@pytest.mark.slow
def test_a_sweep_keeps_its_state_in_s3_and_resumes_from_it_when_its_folder_is_gone(ray_env, bucket, tmp_path,
                                                                                   monkeypatch, capfd):
    out = tmp_path / "hw"
    storage = f"{bucket}/team"
    cmd = [sys.executable, "-m", "tune.hw_scaling", "--local", "--gpu-counts", "1", "--node-counts", "1",
           "--max-trials", "2", "--batch-size", "2", "--max-parallel-jobs", "1", "--out", str(out),
           "--sampler", "tpe", "--storage", storage, "--no-analyze"]
    for item in ("d_model=32", "n_layers=1", "n_heads=2", "seq_len=32", "seqs_per_gpu=2", "steps=20",
                 "eval_interval=10", "eval_seqs=32", "max_bytes=200000", "target_score=0.2"):
        cmd += ["--set", item]
    env = {**ray_env, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}

    # 1. Interrupt (Ctrl+C) once the first trial has finished.
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log1 = []
    for line in proc.stdout:
        log1.append(line)
        if line.startswith("[hs_g1n1] trial") and "finished (1/2)" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    log1 = "".join(log1) + rest
    assert proc.returncode == 130, log1
    before = _finished_trials(out)
    assert before, log1
    experiment = Storage(storage).join("sweeps", "hw", "hs_g1n1")
    assert exists(experiment.join("hw_meta.json")) and _has_tune_state(experiment), log1

    # 2. The node that drove it is gone, with its folder; --resume continues from the bucket.
    shutil.rmtree(out)
    from tune.hw_scaling import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")
    assert main([*cmd[3:], "--resume"]) == 0
    log2 = capfd.readouterr().out
    assert f"resuming {experiment.display}" in log2
    after = _finished_trials(out)
    for trial, text in before.items():
        assert after[trial] == text, f"{trial} was run again"
    assert len(after) == 2, log2
    assert json.loads((out / "hs_g1n1/hw_meta.json").read_text())["max_trials"] == 2


def _has_tune_state(experiment: Storage) -> bool:
    import pyarrow.fs

    fs, path = experiment.filesystem()
    names = [i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(path))]
    return any(n.startswith("experiment_state") for n in names)


def test_a_tracker_without_its_state_file_comes_back_from_the_bucket_with_its_claims_and_larger_tokens(
        make_tracker, bucket, tmp_path):
    import ray

    from actors.tracker.actor import stop_tracker

    state = tmp_path / "head-disk/work_tracker.parquet"
    handle = make_tracker(state, storage=bucket, copy_interval_s=0.2)
    grants = [ray.get(handle.claim.remote(f"scale:00{i}", f"scaler-{i}")) for i in (1, 2, 3)]
    assert ray.get(handle.release.remote("scale:003", grants[2].token, "done", {"val_loss": 2.5}))
    info = ray.get(handle.info.remote())
    deadline = time.time() + 30
    while info["copied_commits"] < info["commits"]:  # the copy is a few seconds behind at most
        assert time.time() < deadline, info
        time.sleep(0.1)
        info = ray.get(handle.info.remote())
    assert info["storage_copy"] == f"{bucket}/tracker/work_tracker.parquet" and info["copy_error"] is None

    # The head node is lost: its tracker and its disk.
    stop_tracker(namespace=make_tracker.namespace)
    shutil.rmtree(state.parent)
    handle = make_tracker(state, storage=bucket)
    info = ray.get(handle.info.remote())
    assert info["loaded_from"] == "storage"
    claims = {c.work_id: c for c in ray.get(handle.list_claims.remote())}
    assert [claims[f"scale:00{i}"].state.value for i in (1, 2, 3)] == ["claimed", "claimed", "done"]
    assert claims["scale:003"].result == {"val_loss": 2.5}
    assert ray.get(handle.claim.remote("scale:001", "scaler-9")) is None  # still held
    fresh = ray.get(handle.claim.remote("scale:004", "scaler-4"))
    assert fresh.token > max(g.token for g in grants)
    assert state.is_file()  # and it is the local state again


TWO_NODES = textwrap.dedent('''
    import json, os, subprocess, sys
    from pathlib import Path

    import ray
    from ray.cluster_utils import Cluster

    from train.storage import StorageError, check_every_node_reaches, parse_storage

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    env.pop("RAY_AUTORESEARCH_STORAGE", None)
    out = os.path.join(sys.argv[1], "out")
    p = subprocess.run([sys.executable, "-m", "train.run", sys.argv[3], "--no-ledger", "--out", out], env=env,
                       capture_output=True, text=True, timeout=300)
    report = {"rc": p.returncode, "stderr": p.stderr[-3000:], "out_exists": os.path.exists(out)}
    # A folder every node sees (both nodes share this disk here) passes as a shared mount.
    ray.init(address=cluster.address)
    check_every_node_reaches(parse_storage(sys.argv[2]), Path(out), workers_need_gpu=False)
    report["shared_ok"] = True
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(report))
''')


@pytest.mark.slow
@pytest.mark.cluster
def test_a_local_path_on_a_multi_node_cluster_is_refused_before_training_starts(tmp_path):
    # Its own two-node cluster on loopback, in a child process: the session's Ray is not disturbed.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", TWO_NODES, str(tmp_path), str(tmp_path / "shared"), str(TINY)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["rc"] == 2, report
    [line] = [line for line in report["stderr"].splitlines() if line.startswith("error:")]
    assert "this Ray cluster has 2 nodes" in line and "set --storage s3://BUCKET/PREFIX" in line, line
    assert "RAY_AUTORESEARCH_STORAGE" in line and "Traceback" not in report["stderr"]
    assert not report["out_exists"], "a refused run left its folder behind"
    assert report["shared_ok"]
    assert not list((tmp_path / "shared").glob(".reachable-*")), "the marker file was left behind"
