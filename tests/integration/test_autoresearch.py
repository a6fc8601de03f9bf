"""The AutoResearch loop end to end: real git repositories, real training runs of the
golf template (and of a toy research file, where the test is about the team rather
than the training) as Ray tasks on the session's local Ray, researchers as Ray
actors, claims in a real WorkTracker, and the Claude researcher over the scripted
LLM: its prompts carry the file it is asked to change, and its scripted replies go
through the real tool-use parsing and validation."""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
import time
from pathlib import Path

import git
import pytest

from actors.research.config import ResearchConfig, ResearchError
from actors.research.loop import AutoResearch
from actors.research.memory import NOTES_SECTIONS, read_results
from actors.research.researchers import ClaudeResearcher
from actors.research.rules import standing
from actors.research.team import start_autoresearch
from actors.shared.llm_scripted import ScriptedLLM
from tests.support import make_golf_repo, make_toy_repo, set_environ_default

pytestmark = pytest.mark.slow


def proposal(description, direction, content, kind="tweak", edit_format="file"):
    return {"hypothesis": f"{description} lowers val_bpb", "evidence": "see results.tsv", "risk": "it may not",
            "description": description, "direction": direction, "kind": kind, "edit_format": edit_format,
            "content": content}


def source_of_file(params, name):
    """The research file as the researcher showed it to Claude in its request."""
    for block in params["messages"][0]["content"]:
        m = re.fullmatch(rf'<document name="{re.escape(name)}">\n(.*)\n</document>', block["text"], re.S)
        if m:
            return m.group(1)
    raise AssertionError(f"the request does not hold {name}")


def source_of(params):
    return source_of_file(params, "train_gpt.py")


def set_default(name, value, description, direction):
    return lambda params: proposal(description, direction, set_environ_default(source_of(params), name, value))


def add_big_table(params):
    # 16.8M parameters the forward pass never uses: no compute, but int8+zlib of random
    # weights is ~16.8 MB, over the 16,000,000-byte cap.
    src = source_of(params).replace("super().__init__()", "super().__init__()\n        self.big_table = "
                                    "nn.Parameter(torch.randn(4100, 4096) * 0.02)", 1)
    return proposal("add a 4100x4096 lookup table", "bigger embedding", src, kind="structural")


def typo_crash(params):
    return proposal("seed torch earlier", "seeding", source_of(params).replace("torch.manual_seed(SEED)",
                                                                               "torch.manual_seeed(SEED)"))


def still_broken_fix(params):
    # The fix for the typo, as a unified diff applied with git apply; it still crashes.
    source = source_of(params)
    assert "It crashed. The last lines of its log" in str(params["messages"][0]["content"])
    fixed = source.replace("torch.manual_seeed(SEED)", "torch.manual_seed(SEED)\n    raise RuntimeError('still')")
    diff = "".join(difflib.unified_diff(source.splitlines(True), fixed.splitlines(True),
                                        "a/train_gpt.py", "b/train_gpt.py"))
    return proposal("fix the typo", "seeding", diff, edit_format="diff")


def scripted(*replies):
    return ClaudeResearcher(ScriptedLLM(replies, usage={"input_tokens": 1000, "output_tokens": 200}))


@pytest.fixture
def remote_and_repo(tmp_path):
    repo = make_golf_repo(tmp_path / "research")
    remote = git.Repo.init(tmp_path / "remote.git", bare=True)
    repo.create_remote("origin", str(tmp_path / "remote.git"))
    repo.git.push("origin", "main")  # the test's own set-up; the loop must never push
    return repo, remote


def test_six_scripted_iterations_keep_discard_crash_and_cap(ray_cluster, remote_and_repo, tmp_path):
    repo, remote = remote_and_repo
    remote_refs_before = {r.path: r.commit.hexsha for r in remote.refs}
    script = [
        set_default("LEARNING_RATE", "5e-3", "LEARNING_RATE 1e-3 -> 5e-3", "LEARNING_RATE up"),
        set_default("LEARNING_RATE", "1e-5", "LEARNING_RATE 5e-3 -> 1e-5", "LEARNING_RATE down"),
        add_big_table,
        typo_crash,
        still_broken_fix,
        set_default("ITERATIONS", "45", "ITERATIONS 30 -> 45", "ITERATIONS up"),
        set_default("LEARNING_RATE", "1e-4", "LEARNING_RATE 5e-3 -> 1e-4", "LEARNING_RATE down"),
    ]
    researcher = scripted(*script)
    # The held-out re-score has its own test; here it would only add runs.
    loop = AutoResearch(ResearchConfig(repo=Path(repo.working_tree_dir), tag="t6", timeout_s=120, rescore=""),
                        researcher)
    summary = loop.run(6)

    requests = researcher.llm.requests
    assert researcher.llm.remaining == 0 and len(requests) == 7
    assert sum("It crashed" in str(r["messages"][0]["content"]) for r in requests) == 1  # one fix asked for
    assert summary["llm_tokens"] == 7 * 1200 and summary["llm_cost_usd"] > 0
    rows = read_results(Path(repo.working_tree_dir) / "results.tsv")
    base = [r for r in rows if r.kind == "baseline"]
    exps = [r for r in rows if r.is_experiment]
    assert len(base) == 3 and all(r.val_bpb for r in base) and len({r.val_bpb for r in base}) == 3  # 3 seeds
    assert [(r.n, r.status) for r in exps] == [(1, "keep"), (2, "discard"), (3, "discard"), (4, "crash"),
                                               (5, "keep"), (6, "discard")]
    assert exps[0].val_bpb < min(r.val_bpb for r in base) - 0.5  # 6.05 -> ~4.76 here
    assert exps[1].val_bpb > exps[0].val_bpb
    assert exps[2].artifact_mb > 16.0  # over the 16,000,000-byte cap: discarded whatever its val_bpb
    assert exps[3].val_bpb is None and "first version crashed" in exps[3].description
    assert exps[4].val_bpb < exps[0].val_bpb
    for r in exps:
        assert r.reasoning.startswith("REASONING | Hypothesis:")
    assert exps[0].p_value < 0.05 and exps[4].p_value < 0.05 and exps[1].p_value > 0.5

    # The branch head is the best commit, and its file is the kept one.
    assert repo.active_branch.name == "autoresearch/t6"
    assert repo.head.commit.hexsha == exps[4].commit == summary["best_commit"]
    assert 'os.environ.get("ITERATIONS", 45)' in (Path(repo.working_tree_dir) / "train_gpt.py").read_text()
    assert not repo.is_dirty(untracked_files=False)
    # Every discarded (and crashed) commit is reachable from a tag, the crashed first try included.
    tagged = {t.commit.hexsha for t in repo.tags}
    for r in exps:
        if r.status != "keep":
            assert r.commit in tagged, r
    assert "autoresearch/t6/discard/4-crashed" in [t.name for t in repo.tags]
    # One commit per experiment on the branch: baseline commit + 2 kept experiments.
    subjects = [c.summary for c in repo.iter_commits("autoresearch/t6")]
    assert subjects[:2] == ["autoresearch 5: ITERATIONS 30 -> 45", "autoresearch 1: LEARNING_RATE 1e-3 -> 5e-3"]

    # results.tsv and notes.md are untracked and excluded.
    exclude = (Path(repo.git_dir) / "info" / "exclude").read_text()
    assert "results.tsv" in exclude and "notes.md" in exclude
    assert "results.tsv" not in repo.git.status("--porcelain")
    notes = (Path(repo.working_tree_dir) / "notes.md").read_text()
    for section in NOTES_SECTIONS:
        assert f"## {section}" in notes
    assert "ANALYSIS" in notes and "Lesson:" in notes and "### 6." in notes
    assert "over the 16,000,000-byte cap" in notes
    assert re.search(r"## Best Known Config\s+- commit `" + exps[4].commit[:10], notes)
    # Logs saved, one per run.
    logs = sorted(p.name for p in (Path(repo.working_tree_dir) / ".autoresearch" / "logs" / "t6").glob("*.log"))
    assert logs[:9] == ["001.log", "002.log", "003.log", "004-fix.log", "004.log", "005.log", "006.log",
                        "baseline-1.log", "baseline-2.log"]
    assert all(name.startswith(("00", "baseline-")) for name in logs)  # extra seeds, if any, are logged too

    # Never pushed: the remote is exactly as the test left it.
    assert {r.path: r.commit.hexsha for r in remote.refs} == remote_refs_before
    assert not any("autoresearch" in r.path for r in remote.refs)


def test_existing_branch_is_refused_without_resume(ray_cluster, tmp_path):
    repo = make_golf_repo(tmp_path / "r")
    repo.create_head("autoresearch/dup")
    loop = AutoResearch(ResearchConfig(repo=Path(repo.working_tree_dir), tag="dup"), scripted())
    with pytest.raises(ResearchError, match="already exists.*--resume"):
        loop.run(1)
    assert repo.active_branch.name == "main"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


def _wait_for(check, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while not check():
        assert time.time() < deadline, f"{what} within {timeout_s:.0f}s"
        time.sleep(0.25)


def _live_claims(namespace: str) -> list:
    import ray

    from actors.tracker.actor import ACTOR_NAME

    tracker = ray.get_actor(ACTOR_NAME, namespace=namespace)
    return [c for c in ray.get(tracker.list_claims.remote("claimed")) if c.work_id.startswith("autoresearch:")]


def test_a_cancelled_or_killed_researcher_stops_its_run_releases_its_claims_and_resume_runs_it(
        ray_cluster, make_tracker, tmp_path):
    import ray

    make_tracker()
    repo = make_toy_repo(tmp_path / "r")
    root = Path(repo.working_tree_dir)
    pidfile = tmp_path / "run.pid"
    hang = lambda params: proposal(  # noqa: E731
        "sleep before training", "sleeping", re.sub(r'"""\n', f'"""\nimport time\nopen({str(pidfile)!r}, "w").write('
                                                       'str(__import__("os").getpid()))\ntime.sleep(3600)\n',
                                                       source_of_file(params, "train.py"), count=1))
    cfg = dict(repo=root, file="train.py", tag="kill", rescore="", tracker_namespace=make_tracker.namespace)
    worktree = root / ".autoresearch" / "worktrees" / "kill" / "r0"

    # 1. Cancelled (what Ctrl-C in actors.main does): the run is stopped, the claims released.
    team = start_autoresearch(ResearchConfig(**cfg, timeout_s=600), scripted(hang), name="ar-kill-1")
    ref = team.run.remote(5)
    _wait_for(lambda: pidfile.exists() and pidfile.read_text(), 120, "experiment 1 started")
    pid = int(pidfile.read_text())
    ray.cancel(ref)
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.RayTaskError)):
        ray.get(ref, timeout=60)
    _wait_for(lambda: not _alive(pid), 30, "the training run stopped")
    assert _live_claims(make_tracker.namespace) == []
    rows = read_results(root / "results.tsv")
    assert [r.kind for r in rows] == ["baseline"] * 3
    unmeasured = git.Repo(worktree).head.commit
    assert unmeasured.summary == "autoresearch 1: sleep before training"  # committed, never measured
    assert repo.heads["autoresearch/kill"].commit.hexsha == rows[0].commit

    # 2. Resumed, the unmeasured commit runs again; its researcher is killed: the team goes on
    # and ends, and the tracker drops the dead researcher's claims at once.
    pidfile.unlink()
    team = start_autoresearch(ResearchConfig(**cfg, timeout_s=600, resume=True), scripted(), name="ar-kill-2")
    ref = team.run.remote(1)
    _wait_for(lambda: pidfile.exists() and pidfile.read_text(), 120, "experiment 1 started again")
    assert any(c.owner.startswith("r0@actor:") for c in _live_claims(make_tracker.namespace))
    ray.kill(ray.get_actor("ar-kill-2-r0", namespace=make_tracker.namespace), no_restart=True)
    summary = ray.get(ref, timeout=120)
    assert summary["stop_reason"] == "researcher r0 died"
    _wait_for(lambda: not _alive(int(pidfile.read_text())), 30, "the run died with its researcher")
    _wait_for(lambda: _live_claims(make_tracker.namespace) == [], 30, "the dead researcher's claims dropped")

    # 3. Resumed again with a 3-second timeout: experiment 1 is measured at last, as a crash.
    team = start_autoresearch(ResearchConfig(**cfg, timeout_s=3, resume=True), scripted(), name="ar-kill-3")
    summary = ray.get(team.run.remote(1), timeout=120)
    rows = read_results(root / "results.tsv")
    assert [(r.n, r.status, r.commit) for r in rows if r.is_experiment] == [(1, "crash", unmeasured.hexsha)]
    assert [r.kind for r in rows].count("baseline") == 3  # the baseline is not run again
    assert "timed out after 3s" in (root / "notes.md").read_text()
    assert repo.heads["autoresearch/kill"].commit.hexsha == rows[0].commit == summary["best_commit"]
    assert "autoresearch/kill/discard/1" in [t.name for t in repo.tags]
    assert _live_claims(make_tracker.namespace) == []  # the branch lease too


def test_two_researcher_actors_share_the_branch_and_never_run_a_change_twice(ray_cluster, make_tracker, tmp_path):
    """`python -m actors.autoresearch run --researchers 2 --iterations 2` (offline)."""
    from actors.research.cli import main as ar_main

    make_tracker()
    repo = make_toy_repo(tmp_path / "r")
    root = Path(repo.working_tree_dir)
    harness = (root / "prepare.py").read_bytes()
    # --seed 15: the offline proposers of r0 and r1 (seeds 15 and 16) both try a knob that helps
    # first (WIDTH up, DEPTH up), so whichever proposes first makes a keep, however the two
    # interleave (with seed 0 all four first tries go the wrong way: nothing is kept).
    assert ar_main(["run", "--repo", str(root), "--file", "train.py", "--researchers", "2", "--iterations", "2",
                    "--tag", "two", "--offline", "--rescore", "python prepare.py rescore {artifact} {file}",
                    "--seed", "15", "--namespace", make_tracker.namespace]) == 0
    rows = read_results(root / "results.tsv")
    decisions = [r for r in rows if r.is_experiment]
    assert len(decisions) == 4 and {r.researcher for r in decisions} == {"r0", "r1"}
    assert len({r.fingerprint for r in decisions}) == 4  # no change ran twice
    s = standing(rows)
    assert repo.heads["autoresearch/two"].commit.hexsha == s.head_commit
    assert s.head_bpb == min(s.mean(c) for c in s.kept)
    assert repo.git.diff("main", "autoresearch/two", "--name-only").split() == ["train.py"]
    assert (root / "prepare.py").read_bytes() == harness
    assert set(s.holdout) == set(s.kept)  # every kept commit re-scored on the held-out split
    assert _live_claims(make_tracker.namespace) == []


def test_cli_refuses_bad_input_without_traceback(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "actors.autoresearch", "run", *args], capture_output=True,
                              text=True, timeout=60)

    p = run("--repo", str(tmp_path / "missing"))
    assert p.returncode == 2 and "is not a folder" in p.stderr and "Traceback" not in p.stderr
    p = run("--tag", "bad tag!")
    assert p.returncode == 2 and "--tag" in p.stderr and "Traceback" not in p.stderr
    p = run("--set", "NOEQUALS")
    assert p.returncode == 2 and "NAME=VALUE" in p.stderr
    p = run("--iterations", "-1")
    assert p.returncode == 2 and "--iterations" in p.stderr


def test_main_job_runs_the_loop_beside_the_scalers(ray_cluster, make_tracker, tmp_path):
    """`python -m actors.main` starts AutoResearch next to the ScalerAgents (here with
    nothing to scale), and a second round continues the same branch."""
    import shutil

    from actors.main import main

    make_tracker()
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    src = Path(__file__).resolve().parents[2] / "examples" / "experiments"
    shutil.copytree(next(src.glob("004_*")), experiments / next(src.glob("004_*")).name)  # a negative MVE
    repo = make_toy_repo(tmp_path / "research", file="train_gpt.py")  # the loop, not the training, is tested
    argv = ["--scalers", "1", "--experiments", str(experiments), "--code", str(tmp_path / "code"),
            "--namespace", make_tracker.namespace, "--autoresearch-repo", repo.working_tree_dir,
            "--autoresearch-tag", "main", "--autoresearch-iterations", "0", "--researchers", "2"]
    assert main(argv) == 0  # the baseline is enough here
    rows = read_results(Path(repo.working_tree_dir) / "results.tsv")
    assert [r.kind for r in rows] == ["baseline"] * 3 and {r.researcher for r in rows} == {"r0", "r1"}
    assert repo.active_branch.name == "autoresearch/main"
    # The branch exists: main continues it, and does not run the baseline again.
    assert main(argv) == 0
    assert read_results(Path(repo.working_tree_dir) / "results.tsv") == rows
