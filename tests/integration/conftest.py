"""One local Ray instance for the whole test session, sized to 2 CPUs, and a
real S3 API (moto's server) on 127.0.0.1 that every process of it can reach."""

import logging
import os
import uuid

import pytest


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on loopback for the session. Processes find it the usual
    way, through the AWS_* environment (fake credentials: moto takes any), which
    is set before the session's Ray starts so that its workers inherit it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bucket(s3_endpoint):
    """A new, empty bucket on the session's S3 server: its s3:// URI."""
    import pyarrow.fs

    name = f"test-{uuid.uuid4().hex[:10]}"
    host = s3_endpoint.removeprefix("http://")
    pyarrow.fs.S3FileSystem(endpoint_override=host, scheme="http", region="us-east-1",
                            allow_bucket_creation=True).create_dir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    import ray

    # Ray Train's controller polls its workers every 2 s by default, so every run
    # waits up to 2 s after its workers finish; the test runs are seconds long.
    # Set before ray.init: worker processes inherit the raylet's environment.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def ray_env(ray_cluster):
    """The environment a subprocess needs to join the session's Ray instance."""
    return {**os.environ, "RAY_ADDRESS": ray_cluster}


@pytest.fixture
def make_tracker(ray_cluster, tmp_path):
    """Start WorkTrackers in a namespace of their own; kill them afterwards."""
    from actors.tracker.actor import connect_tracker, stop_tracker

    namespace = f"test-{uuid.uuid4().hex[:8]}"

    def make(state_path=None, **kwargs):
        return connect_tracker(state_path or tmp_path / "state.parquet", namespace=namespace, **kwargs)

    make.namespace = namespace
    yield make
    stop_tracker(namespace=namespace)
