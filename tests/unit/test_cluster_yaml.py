"""cluster.yaml is a cluster Ray can launch, and says what the README promises;
the Grafana dashboard shipped beside it shows every application metric."""

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from actors.shared.metrics import METRICS, prometheus_name
from train.limits import MAX_GPUS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _ray_validates(config):
    """What `ray up` does with a cluster file: the schema, then defaults, then checks."""
    jsonschema.validate(config, SCHEMA)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_ray_accepts_the_cluster_file(config):
    prepared = _ray_validates(config)
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("typo", [
    lambda c: c.__setitem__("idle_timeout_minute", c.pop("idle_timeout_minutes")),
    lambda c: c["available_node_types"]["gpu_2x_a100_spot"].__setitem__("min_worker", 0),
    lambda c: c["available_node_types"]["gpu_8x_a100"]["resources"].__setitem__("GPU", 8.5),
    lambda c: c.__setitem__("head_node_type", "head_gpu"),
], ids=["top-level key", "node-type key", "fractional GPU count", "unknown head type"])
def test_a_typo_fails_validation(config, typo):
    typo(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _ray_validates(config)


def test_node_types_are_a_cpu_head_and_a100_workers_that_scale_from_zero(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["GPU"] == 0 and head["resources"]["CPU"] > 0
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpus = sorted(t["resources"]["GPU"] for t in workers.values())
    assert gpus == [MAX_GPUS, 8]  # one scaled experiment's worth, and whole nodes for sweeps
    for name, t in workers.items():
        assert t["min_workers"] == 0, f"{name} must autoscale from zero"
        assert t["max_workers"] >= 1
        assert {"CPU", "GPU", "memory"} <= set(t["resources"]), f"{name}: resources written out"
        assert t["resources"].get("accelerator_type:A100") == 1
        assert "a2-ultragpu" in t["node_config"]["machineType"]  # A100 80GB machines
    spot = [name for name, t in workers.items() if t["node_config"].get("scheduling", {}).get("provisioningModel") == "SPOT"]
    assert spot == ["gpu_2x_a100_spot"]
    assert head["node_config"].get("scheduling", {}).get("provisioningModel") != "SPOT"
    assert 0 < config["idle_timeout_minutes"] <= 30


def test_setup_installs_the_synced_working_tree(config):
    assert config["file_mounts"]["~/ray-autoresearch"] == "."
    assert ".gitignore" in config["rsync_filter"]
    setup = "\n".join(config["setup_commands"])
    assert re.search(r"pip install .*-e ~/ray-autoresearch", setup)
    assert "--python 3.11" in setup


def test_ray_starts_with_token_auth_loopback_dashboard_and_fixed_metrics_port(config):
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    for cmd in (head, workers):
        assert "export RAY_AUTH_MODE=token" in cmd
        assert "--metrics-export-port=8080" in cmd
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--head" in head and "--include-dashboard=true" in head
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in (ROOT / "cluster.yaml").read_text()


def test_secrets_are_read_on_the_node_that_needs_them_and_never_written_in_the_file(config):
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "ANTHROPIC_API_KEY" in head and "ANTHROPIC_API_KEY" not in workers
    assert "WANDB_API_KEY" in workers and "WANDB_API_KEY" not in head
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"(ANTHROPIC_API_KEY|WANDB_API_KEY)=[\"']?[A-Za-z0-9]", text), "a key written into the file"
    assert "runtime_env" not in json.dumps(config)  # (the comments may warn about it)


def test_every_node_gets_the_storage_bucket_and_the_access_to_write_it(config):
    from train.storage import STORAGE_ENV, parse_storage

    setup = next(c for c in config["setup_commands"] if "~/.ray-autoresearch/storage" in c)
    uri = re.search(r'echo "([^"]+)" > ~/.ray-autoresearch/storage', setup).group(1)
    assert parse_storage(uri).uri.startswith("gs://")  # a bucket, never a node's own disk
    assert re.search(r"storage\s+# CHANGE ME", (ROOT / "cluster.yaml").read_text())
    for cmds in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert f'export {STORAGE_ENV}="$(cat ~/.ray-autoresearch/storage)"' in " ".join(cmds)
    for name, t in config["available_node_types"].items():
        if name == config["head_node_type"]:
            continue  # `ray up` gives the head ray-autoscaler-sa-v1, with roles/storage.objectAdmin
        [account] = t["node_config"]["serviceAccounts"]
        assert account["email"].startswith("ray-autoscaler-sa-v1@")
        assert "https://www.googleapis.com/auth/cloud-platform" in account["scopes"]


# -- the Grafana dashboard -------------------------------------------------------------


def _exprs():
    dash = json.loads((ROOT / "monitoring/grafana_dashboard.json").read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    return dash, {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}


def test_grafana_dashboard_shows_every_application_metric_beside_ray_gpu_panels():
    dash, exprs = _exprs()
    everything = " ".join(exprs.values())
    for name in METRICS:
        assert prometheus_name(name) in everything, f"no panel shows {prometheus_name(name)}"
    assert "ray_node_gpus_utilization" in exprs["GPU utilisation"]
    assert "ray_node_gram_used" in exprs["GPU memory used"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dash["templating"]["list"])


def test_metric_names_are_valid_prometheus_names_with_our_prefix():
    for name in METRICS:
        assert re.fullmatch(r"ray_autoresearch_[a-z0-9_]+", prometheus_name(name))
