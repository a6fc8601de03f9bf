"""The loop offline on a repository laid out like karpathy/autoresearch (examples/karpathy_style):
train.py prints its summary block after `---`, prepare.py owns data and evaluation. Real
git, real training runs as Ray tasks on the session's local Ray: it keeps and discards on
val_bpb alone (no artifact limit), writes the line it read, and never edits prepare.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import git
import pytest

from actors.research.config import ResearchConfig
from actors.research.loop import AutoResearch
from actors.research.memory import read_results

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "karpathy_style"
FILES = ("prepare.py", "train.py", "program.md")


@pytest.fixture
def karpathy_repo(tmp_path):
    root = tmp_path / "autoresearch"
    root.mkdir()
    for name in FILES:
        shutil.copy(EXAMPLE / name, root / name)
    repo = git.Repo.init(root, initial_branch="master")
    repo.index.add(list(FILES))
    who = git.Actor("test", "test@localhost")
    repo.index.commit("karpathy-style example", author=who, committer=who)
    return repo


def test_offline_loop_keeps_and_discards_on_val_bpb_and_never_edits_prepare(ray_cluster, karpathy_repo):
    repo = karpathy_repo
    root = Path(repo.working_tree_dir)
    start = repo.head.commit
    # 30 steps on 200 kB: a few seconds a run; deterministic (train.py's SEED is a constant, so
    # the seeds the loop exports change nothing), so the noise is 0 and every comparison exact.
    # Seed 56 makes the offline proposer try a longer warm-up first (less learning in 30 steps:
    # worse), then a higher learning rate (better): one discard and one keep in two runs.
    cfg = ResearchConfig(repo=root, file="train.py", tag="kst", offline=True, timeout_s=180, seed=56,
                         baseline_seeds=2, env={"MAX_STEPS": "30", "DATA_BYTES": "200000"})
    summary = AutoResearch(cfg).run(2)

    rows = read_results(root / "results.tsv")
    base = [r for r in rows if r.kind == "baseline"]
    exps = [r for r in rows if r.is_experiment]
    assert len(base) == 2 and base[0].val_bpb == base[1].val_bpb  # same run twice, same score
    assert [r.n for r in exps] == [1, 2]
    statuses = [r.status for r in exps]
    assert "keep" in statuses and "discard" in statuses and "crash" not in statuses
    # keep exactly when val_bpb beat the kept head (noise 0: the t-test is exact); no artifact anywhere
    head = base[0].val_bpb
    for r in exps:
        assert r.artifact_mb is None
        assert r.status == ("keep" if r.val_bpb < head else "discard"), (r, head)
        head = r.val_bpb if r.status == "keep" else head
    kept = [r for r in exps if r.status == "keep"]
    assert summary["best_val_bpb"] == kept[-1].val_bpb == head < base[0].val_bpb

    # the branch is at the last kept commit; every commit and discard tag changed train.py only
    assert repo.active_branch.name == "autoresearch/kst"
    assert repo.head.commit.hexsha == kept[-1].commit == summary["best_commit"]
    commits = list(repo.iter_commits(f"{start.hexsha}..autoresearch/kst")) + \
        [t.commit for t in repo.tags if t.name.startswith("autoresearch/kst/discard/")]
    assert len(commits) == 2
    for c in commits:
        assert list(c.stats.files) == ["train.py"], c.summary
        assert (c.tree / "prepare.py").hexsha == (start.tree / "prepare.py").hexsha
    assert not repo.is_dirty(untracked_files=False)

    # the ANALYSIS block names the line the score came from, and memory and time instead of an artifact
    notes = (root / "notes.md").read_text()
    assert notes.count("Score line: ") == 2 and "val_bpb:          " in notes
    assert "peak memory" in notes and "artifact" not in notes.split("## ")[-1].split("ANALYSIS")[1]
