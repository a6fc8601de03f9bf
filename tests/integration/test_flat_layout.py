"""`actors.main` on the bundled flat-layout example (a copy), on the session's
local Ray: it finds the flat MVEs, scaffolds the scalable one (--no-launch: no
training), never touches the hand-written code/014_scaled/, and sets a leftover
of its own aside instead of deleting it."""

import shutil
import uuid
from pathlib import Path

import pytest
import ray

from actors.main import main
from actors.scaler.ownership import MARKER, is_ours, write_marker
from actors.tracker.actor import stop_tracker
from tests.support import pristine_examples


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")


def _every_byte(folder: Path) -> dict:
    """Names, bytes, modes and modification times of everything under `folder`."""
    out = {}
    for p in sorted([folder, *folder.rglob("*")]):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (p.read_bytes() if p.is_file() else None, st.st_mode, st.st_mtime_ns)
    return out


@pytest.mark.slow
def test_main_scales_the_flat_example_and_leaves_the_hand_written_folder_byte_for_byte(ray_cluster, tmp_path,
                                                                                       capsys):
    flat = tmp_path / "flat"
    shutil.copytree(pristine_examples() / "flat", flat)
    hand = flat / "code/014_scaled"
    assert not is_ours(hand)
    before = _every_byte(hand)
    # One scalable MVE keeps the test short (a smoke test is ~30 s on a busy 2-core box): 018 loses its results.
    (flat / "experiments/018_results.md").unlink()
    # A leftover of a failed attempt of ours, for 011: it must be set aside, not deleted.
    leftover = flat / "code/011_scaled"
    leftover.mkdir()
    (leftover / "smoke.log").write_text("RuntimeError: CUDA out of memory\n")
    write_marker(leftover, mve_id="011")
    leftover_bytes = _every_byte(leftover)

    namespace = f"test-{uuid.uuid4().hex[:8]}"
    argv = ["--scalers", "1", "--experiments", str(flat / "experiments"), "--code", str(flat / "code"),
            "--state", str(tmp_path / "state.parquet"), "--namespace", namespace, "--once", "--no-autoresearch",
            "--no-launch"]
    try:
        assert main(argv) == 0
        out = capsys.readouterr().out
        records = {c.work_id: c for c in ray.get(ray.get_actor("work_tracker", namespace=namespace)
                                                   .list_claims.remote())}
    finally:
        stop_tracker(namespace=namespace)

    assert _every_byte(hand) == before  # not one byte, mode or timestamp changed
    assert "scale:014" not in records  # never even claimed
    assert ("9 MVE(s): 1 scalable, 2 pending, 2 negative, 1 blocked, 1 no verdict, 1 duplicate, "
            "1 scaled by hand") in out
    assert "  014 scaled by hand: scaled by hand: code/014_scaled/ has no marker of ours" in out
    assert is_ours(flat / "code/011_scaled") and (flat / "code/011_scaled/config.yaml").is_file()  # scaffolded
    assert records["scale:011"].result == {"reason": "--no-launch"} and list(records) == ["scale:011"]
    assert "planned 0, scaffolded 1" in out
    [aside] = (flat / "code").glob(".011_scaled.replaced-*")
    assert _every_byte(aside)["smoke.log"][0] == leftover_bytes["smoke.log"][0]
    assert _every_byte(aside)[MARKER][0] == leftover_bytes[MARKER][0]
    assert sorted(p.name for p in (flat / "code").iterdir() if not p.name.startswith(".")) == [
        "011", "011_scaled", "012", "013", "014", "014_scaled", "016", "016_dyt", "018"]
