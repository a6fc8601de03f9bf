"""wait_task, the agents' wait on a training task: a task cancelled from outside
(a stop cancels the agent's task with its children, and the child can end before
the agent polls) is a stop, never a failure of the MVE. Found by the chaos test:
the claim was released as failed and the next runs skipped the MVE."""

from __future__ import annotations

import threading
import time

import pytest
import ray

from actors.shared.stopping import Stopped, wait_task


@ray.remote(num_cpus=0, max_retries=0)
def _sleeps(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


def _cancel_soon(ref, after_s: float = 0.5) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(after_s), ray.cancel(ref, force=True)), daemon=True)
    t.start()
    return t


def test_a_task_cancelled_from_outside_is_a_stop(ray_cluster):
    ref = _sleeps.remote(60)
    _cancel_soon(ref)
    with pytest.raises(Stopped, match="stopped by the operator"):
        wait_task(ref, poll_s=5.0)  # the cancellation lands before the next poll


def test_a_cancelled_task_with_its_lease_lost_is_the_lost_lease(ray_cluster):
    class Lost(Exception):
        pass

    ref = _sleeps.remote(60)
    _cancel_soon(ref)
    with pytest.raises(Lost):
        wait_task(ref, lost=lambda: True, on_lost=lambda: Lost("lease lost"), poll_s=5.0)


def test_a_task_that_finishes_or_fails_is_returned_or_raised(ray_cluster):
    assert wait_task(_sleeps.remote(0.1), poll_s=0.05) == "finished"

    @ray.remote(num_cpus=0, max_retries=0)
    def fails():
        raise ValueError("a real failure of the work")

    with pytest.raises(ray.exceptions.RayTaskError, match="a real failure of the work"):
        wait_task(fails.remote(), poll_s=0.05)
