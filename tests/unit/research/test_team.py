"""The AutoResearch team in one process (no Ray): real git repositories and worktrees,
real runs of a toy research file as child processes (a fraction of a second each,
val_bpb with a known optimum and seeded noise), the Claude researcher over
ScriptedLLM. What a user checks: the branch, the tags, results.tsv, notes.md."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import git
import pytest

from actors.research.cli import main as ar_main
from actors.research.config import ResearchConfig, ResearchError
from actors.research.loop import AutoResearch, Cancelled
from actors.research.memory import read_results
from actors.research.researchers import ClaudeResearcher
from actors.research.rules import standing
from actors.research.runner import run_local
from actors.research.significance import p_value, pooled_noise
from actors.research.team import research_progress, run_local_team
from actors.shared.llm_scripted import ScriptedLLM
from tests.support import make_toy_repo

RESCORE = "python prepare.py rescore {artifact} {file}"


def config(repo, **kw) -> ResearchConfig:
    values = dict(repo=Path(repo.working_tree_dir), file="train.py", tag="t", offline=True, rescore=RESCORE,
                  timeout_s=60)
    return ResearchConfig(**{**values, **kw})


def proposal(description, direction, content, edit_format="file", kind="tweak"):
    return {"hypothesis": f"{description} lowers val_bpb", "evidence": "see results.tsv", "risk": "it may not",
            "description": description, "direction": direction, "kind": kind, "edit_format": edit_format,
            "content": content}


def document(params, name):
    for block in params["messages"][0]["content"]:
        m = re.fullmatch(rf'<document name="{re.escape(name)}">\n(.*)\n</document>', block["text"], re.S)
        if m:
            return m.group(1)
    raise AssertionError(f"the request does not hold {name}")


def edit(old, new, description, direction):
    return lambda params: proposal(description, direction, document(params, "train.py").replace(old, new, 1))


def document_text(root):
    return (root / "train.py").read_text()


def scripted(*replies):
    return ClaudeResearcher(ScriptedLLM(replies))


def experiments(rows):
    return [(r.n, r.status) for r in rows if r.is_experiment]


def test_a_change_to_the_harness_is_refused_and_a_changed_harness_never_runs(tmp_path):
    repo = make_toy_repo(tmp_path / "r")
    root = Path(repo.working_tree_dir)
    harness = (root / "prepare.py").read_text()

    def cheat(params):  # lower the score by changing how it is computed
        new = harness.replace("HOLDOUT_PENALTY = 0.02", "HOLDOUT_PENALTY = -1.0").replace(
            "f.write(repr(score))", "f.write(repr(score - 1.0))")
        diff = "".join(difflib.unified_diff(harness.splitlines(True), new.splitlines(True),
                                            "a/prepare.py", "b/prepare.py"))
        return proposal("score the model more kindly", "evaluation", diff, edit_format="diff")

    def overwrite_at_run_time(params):
        return proposal("rewrite the harness first", "evaluation", document(params, "train.py").replace(
            "import prepare", "open('prepare.py', 'a').write('\\n')\nimport prepare", 1))

    llm = ScriptedLLM([cheat, overwrite_at_run_time,
                       edit("0.01))", "0.03))", "LEARNING_RATE 0.01 -> 0.03", "LEARNING_RATE up")])
    run_local_team(config(repo), 1, ClaudeResearcher(llm), runner=run_local)

    assert len(llm.requests) == 3  # asked again after each refusal, with the reason
    feedback = [m["content"][0]["content"] for m in llm.requests[1]["messages"][1:] if m["role"] == "user"]
    assert "the diff changes prepare.py, which is protected" in feedback[0]
    feedback = str(llm.requests[2]["messages"])
    assert "names the protected file prepare.py" in feedback
    rows = read_results(root / "results.tsv")
    assert experiments(rows) == [(1, "keep")]
    # The harness is the same in every commit of the repository, kept or discarded.
    for sha in repo.git.rev_list("--all").split():
        assert (repo.commit(sha).tree / "prepare.py").data_stream.read().decode() == harness
    assert "Protected (never changed): `prepare.py`" in (root / "notes.md").read_text()

    # A harness changed behind the loop's back is never run: here an experiment commit left
    # unmeasured in researcher r0's worktree also changes prepare.py; resuming would run it.
    worktree = git.Repo(root / ".autoresearch" / "worktrees" / "t" / "r0")
    worktree.head.reset(repo.heads["autoresearch/t"].commit, index=True, working_tree=True)
    (Path(worktree.working_tree_dir) / "prepare.py").write_text(harness.replace("0.02", "0.0"))
    (Path(worktree.working_tree_dir) / "train.py").write_text(document_text(root) + "\n# wider\n")
    worktree.index.add(["prepare.py", "train.py"])
    worktree.index.commit("autoresearch 2: wider\n\nDirection: width up\nKind: tweak\n")
    before = (root / "results.tsv").read_text()
    with pytest.raises(ResearchError, match="protected file prepare.py differs"):
        run_local_team(config(repo, resume=True), 1, scripted(
            edit("WIDTH\", 64", "WIDTH\", 96", "WIDTH 64 -> 96", "WIDTH up")), runner=run_local)
    assert (root / "results.tsv").read_text() == before


def test_a_small_gain_is_sent_to_extra_seeds_before_the_t_test_decides(tmp_path):
    repo = make_toy_repo(tmp_path / "r")
    root = Path(repo.working_tree_dir)
    small = edit("bonus = 0.0", "bonus = 0.006", "bonus 0 -> 0.006", "bonus up")  # 0.6 of the seed noise
    run_local_team(config(repo, max_seeds=6), 1, scripted(small), runner=run_local)

    rows = read_results(root / "results.tsv")
    first = next(r for r in rows if r.n == 1)
    assert first.status == "pending" and first.seed == 1  # one run could not decide it
    extra = [r for r in rows if r.n == 1 and r.status == "seed"]
    assert extra and all(r.seed > 1 for r in extra)
    [decision] = [r for r in rows if r.is_experiment]
    cand = [r.val_bpb for r in rows if r.commit == first.commit and r.is_run]
    best = [r.val_bpb for r in rows if r.commit == first.base and r.is_run]
    assert decision.runs == len(cand) >= 2 and decision.val_bpb == pytest.approx(sum(cand) / len(cand))
    # The decision is the one-sided t-test over every seeded group, as recorded.
    groups = {}
    for r in rows:
        if r.is_run and r.val_bpb is not None:
            groups.setdefault(r.commit, []).append(r.val_bpb)
    p = p_value(cand, best, pooled_noise(groups.values()))
    assert decision.p_value == pytest.approx(p, rel=1e-3)
    assert decision.status == ("keep" if p < 0.05 else "discard")
    assert f"p = {p:.3g}" in (root / "notes.md").read_text()
    assert (decision.status == "keep") == (repo.heads["autoresearch/t"].commit.hexsha == first.commit)


def test_two_researchers_share_one_memory_and_never_run_a_change_twice(tmp_path, capsys):
    repo = make_toy_repo(tmp_path / "r")
    root = Path(repo.working_tree_dir)
    harness = (root / "prepare.py").read_bytes()
    summary = run_local_team(config(repo, researchers=2), 3, runner=run_local)

    rows = read_results(root / "results.tsv")
    decisions = [r for r in rows if r.is_experiment]
    assert {r.researcher for r in decisions} == {"r0", "r1"}  # both ran experiments
    assert len(decisions) == 6 and summary["experiments"] == 6 and summary["pending"] == 0
    fps = [r.fingerprint for r in decisions]
    assert len(set(fps)) == len(fps) and all(fps)  # no change ran twice
    s = standing(rows)
    branch = repo.heads["autoresearch/t"].commit
    assert branch.hexsha == s.head_commit == summary["best_commit"]
    assert s.head_bpb == min(s.mean(c) for c in s.kept)  # the branch is at the best kept commit
    assert repo.git.diff("main", "autoresearch/t", "--name-only").split() == ["train.py"]
    assert (root / "prepare.py").read_bytes() == harness
    tags = {t.commit.hexsha for t in repo.tags}
    for r in decisions:
        if r.status != "keep":
            assert r.commit in tags
    # Held-out re-scores of the kept commits (the toy harness adds 0.02), in notes.md.
    assert [s.holdout[c] - s.mean(c) for c in s.kept] == pytest.approx([0.02] * len(s.kept), abs=0.011)
    notes = (root / "notes.md").read_text()
    assert "## Held-out Check" in notes and notes.count("held-out ") >= len(s.kept)
    assert (root / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"results.tsv", "notes.md", "progress.png"} <= set(
        (Path(repo.git_dir) / "info" / "exclude").read_text().split())
    assert not repo.is_dirty(untracked_files=False)

    # The progress line of actors.main: per researcher what it does, experiments, keeps/discards, best.
    line = research_progress(config(repo, researchers=2))
    assert line.startswith(f"autoresearch best {s.head_bpb:.4f}: r0 [finished] ")
    for name in ("r0", "r1"):
        mine = [r for r in decisions if r.researcher == name]
        assert f"{name} [finished] {len(mine)} exp {sum(r.status == 'keep' for r in mine)}k/" in line

    assert ar_main(["status", "--repo", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"autoresearch/t: best val_bpb {s.head_bpb:.4f}")
    table = {line.split()[0]: line.split() for line in out.splitlines()[2:4]}
    for name in ("r0", "r1"):
        mine = [r for r in decisions if r.researcher == name]
        assert table[name][1:5] == [str(len(mine))] + [str(sum(r.status == k for r in mine))
                                                       for k in ("keep", "discard", "crash")]


def test_a_stopped_researcher_leaves_its_unmeasured_commit_and_resume_runs_it(tmp_path):
    repo = make_toy_repo(tmp_path / "r")
    root = Path(repo.working_tree_dir)
    loop = None

    def stop_after_commit(n, phase, seconds, details):
        if phase == "commit":
            loop.stop_event.set()  # as a cancelled Ray task: stop before the run

    loop = AutoResearch(config(repo, rescore=None), on_phase=stop_after_commit)
    with pytest.raises(Cancelled):
        loop.run(2)
    rows = read_results(root / "results.tsv")
    assert [r.kind for r in rows] == ["baseline"] * 3
    worktree = git.Repo(root / ".autoresearch" / "worktrees" / "t" / "r0")
    unmeasured = worktree.head.commit
    assert unmeasured.summary.startswith("autoresearch 1:")
    assert repo.heads["autoresearch/t"].commit.hexsha == rows[0].commit

    summary = AutoResearch(config(repo, rescore=None, resume=True)).run(1)
    rows = read_results(root / "results.tsv")
    assert [r.kind for r in rows].count("baseline") == 3  # not run again
    [decision] = [r for r in rows if r.is_experiment]
    assert decision.n == 1 and decision.commit == unmeasured.hexsha and summary["experiments"] == 1


def test_mistakes_in_the_new_flags_are_refused_before_ray(tmp_path, capsys):
    repo = make_toy_repo(tmp_path / "r")
    root = str(repo.working_tree_dir)
    cases = [(["--file", "train.py", "--protect", "train.py"], "--file train.py is protected"),
             (["--file", "train.py", "--set", "SEED=3"], "--set SEED: the loop sets SEED"),
             (["--file", "train.py", "--protect", "data/missing.bin"], "--protect data/missing.bin: not in"),
             (["--file", "train.py", "--significance", "1.5"], "--significance"),
             (["--file", "train.py", "--rescore", "python score.py"], "--rescore")]
    for args, message in cases:
        assert ar_main(["run", "--repo", root, "--tag", "x", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1, err
    assert [h.name for h in repo.heads] == ["main"] and not (Path(root) / ".autoresearch").exists()
