"""One local Ray instance for the whole test session, sized to 2 CPUs."""

import os
import uuid

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
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
