"""What runs next and when an experiment is decided, from the rows alone (pure)."""

from __future__ import annotations

import pytest

from actors.research.rules import ResultRow, standing
from actors.research.schedule import Policy, final_verdicts, judge, plan_jobs

B = "b" * 40  # the baseline commit


def base_rows(values=(3.30, 3.32, 3.31)):
    return [ResultRow(0, B, v, 0.6, "keep", "baseline", "baseline", f"baseline seed {i + 1}", seed=i + 1)
            for i, v in enumerate(values)]


def run(n, commit, val, status="pending", seed=1, base=B, kind="tweak"):
    return ResultRow(n, commit, val, 0.6, status, kind, "LR up", f"exp {n}", seed=seed, base=base,
                     fingerprint=f"fp{n}")


def decided(n, commit, val, status, base=B):
    """An experiment decided on its first run (one row: the run and the decision)."""
    return ResultRow(n, commit, val, 0.6, status, "tweak", "LR up", f"exp {n}", seed=1, runs=1, base=base)


POLICY = Policy(baseline_seeds=3, alpha=0.05, max_seeds=4, rescore=True)


def test_the_baseline_seeds_come_first_and_nothing_is_decided_before_them():
    rows = base_rows((3.30,)) + [run(1, "c1", 2.0)]
    jobs = plan_jobs(standing(rows), POLICY, B)
    assert [(j.kind, j.seed) for j in jobs] == [("baseline", 2), ("baseline", 3)]
    assert judge(standing(rows), 1, POLICY).status == "pending"  # a huge gain, but no noise measured yet
    rows += base_rows()[1:]
    assert [v.status for _, v in final_verdicts(standing(rows), POLICY)] == ["keep"]


def test_a_small_gain_asks_for_seeds_of_the_candidate_then_of_the_best_until_it_is_decided():
    rows = base_rows() + [run(1, "c1", 3.300)]
    v = judge(standing(rows), 1, POLICY)
    assert v.status == "pending" and v.job.kind == "seed" and (v.job.commit, v.job.seed) == ("c1", 2)
    # Two idle researchers: the second runs the best's next seed meanwhile.
    assert [(j.commit, j.seed) for j in plan_jobs(standing(rows), POLICY, B) if j.kind == "seed"] == [("c1", 2), (B, 4)]
    rows += [run(1, "c1", 3.302, "seed", 2), run(1, "c1", 3.298, "seed", 3), run(1, "c1", 3.301, "seed", 4)]
    v = judge(standing(rows), 1, POLICY)
    assert v.status == "discard" and "4 seeds" in v.why  # max_seeds reached, gain unproven
    # The same gain when the best has fewer runs than the candidate: the best gets a seed.
    rows = base_rows() + [run(1, "c1", 3.309), run(1, "c1", 3.308, "seed", 2), run(1, "c1", 3.310, "seed", 3),
                          run(1, "c1", 3.309, "seed", 4)]
    job = judge(standing(rows), 1, Policy(baseline_seeds=3, max_seeds=6)).job
    assert (job.commit, job.seed) == (B, 4)
    # One seeded run is one job, whichever experiment asks for it.
    assert plan_jobs(standing(rows), Policy(baseline_seeds=3, max_seeds=6), B)[0].key == f"run:{B[:12]}:4"


def test_a_result_on_an_older_base_is_remeasured_on_the_head_or_discarded_against_its_own_base():
    rows = base_rows() + [decided(1, "c1", 3.0, "keep"), run(2, "c2", 3.20, base=B), run(3, "c3", 3.35, base=B)]
    s = standing(rows)
    assert s.head_commit == "c1"
    v2, v3 = judge(s, 2, POLICY), judge(s, 3, POLICY)
    assert v2.status == "pending" and v2.job.kind == "combine" and v2.job.onto == "c1" and v2.job.commit == "c2"
    assert v3.status == "discard" and "own base" in v3.why  # no gain even where it was measured
    # The combination measured on the head is then judged against the head.
    rows += [run(2, "c2x", 2.80, base="c1")]
    assert judge(standing(rows), 2, POLICY).status == "keep"


def test_kept_commits_are_rescored_once_on_the_held_out_split():
    rows = base_rows() + [decided(1, "c1", 3.0, "keep")]
    jobs = [j for j in plan_jobs(standing(rows), POLICY, B) if j.kind == "holdout"]
    assert [(j.n, j.commit) for j in jobs] == [(0, B), (1, "c1")]
    rows.append(ResultRow(0, B, None, None, "holdout", "baseline", "holdout", "h", holdout_bpb=3.4))
    assert [j.commit for j in plan_jobs(standing(rows), POLICY, B)] == ["c1"]
    assert plan_jobs(standing(rows), Policy(baseline_seeds=3), B) == []  # no re-score command: no job


def test_a_crash_with_another_seed_decides_the_experiment():
    rows = base_rows() + [run(1, "c1", 3.300), run(1, "c1", None, "seed", 2)]
    assert judge(standing(rows), 1, POLICY).status == "crash"


@pytest.mark.parametrize("values, mean", [((3.30, 3.32, 3.31), 3.31), ((2.0, 2.0, 2.0), 2.0)])
def test_the_head_is_the_mean_of_its_seeded_runs(values, mean):
    s = standing(base_rows(values))
    assert s.head_bpb == pytest.approx(mean) and s.baseline_runs == list(values)
