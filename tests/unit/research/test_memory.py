"""results.tsv and notes.md, and the loop's rules read off them (no Ray, no git)."""

from __future__ import annotations

import pytest

from actors.research.memory import NOTES_SECTIONS, append_result, read_notes, read_results, render_notes
from actors.research.rules import (
    ResearchLogError,
    ResultRow,
    dead_ends,
    needs_structural_change,
    regressed,
    standing,
)


def base(commit="c0", values=(3.30, 3.32)):
    return [ResultRow(0, commit, v, 0.6, "keep", "baseline", "baseline", f"baseline run {i + 1}", seed=i + 1)
            for i, v in enumerate(values)]


def exp(n, status, val, direction="LR up", kind="tweak", commit=None):
    return ResultRow(n, commit or f"c{n}", val, 0.6 if val else None, status, kind, direction, f"exp {n}", seed=1,
                     runs=1)


def test_round_trip_keeps_every_field_and_flattens_tabs_and_newlines(tmp_path):
    path = tmp_path / "results.tsv"
    rows = base() + [ResultRow(1, "abc", 3.1234567891, 0.627100, "keep", "tweak", "LR\tup",
                               "desc\nwith newline", "REASONING\nHypothesis: x\tsee exp 0\n")]
    for r in rows:
        append_result(path, r)
    back = read_results(path)
    assert len(back) == 3
    assert back[2].val_bpb == pytest.approx(3.12345679, abs=1e-8)  # 8 decimals, as _exact prints
    assert back[2].direction == "LR | up" and back[2].description == "desc | with newline"
    assert back[2].reasoning == "REASONING | Hypothesis: x | see exp 0"
    assert back == rows[:2] + [back[2]] and back[0].seed == 1 and back[2].seed is None
    # The seed's six columns first, in its order; then ours, the researcher among them.
    header = path.read_text().splitlines()[0].split("\t")
    assert header[:6] == ["commit", "val_bpb", "artifact_mb", "status", "reasoning", "description"]
    assert {"n", "researcher", "seed", "p_value", "fingerprint", "holdout_bpb"} <= set(header[6:])


def test_a_results_file_of_the_one_researcher_loop_reads_and_is_rewritten_on_append(tmp_path):
    path = tmp_path / "results.tsv"
    old = ["n\tcommit\tval_bpb\tartifact_mb\tstatus\tkind\tdirection\tdescription\treasoning",
           "0\tc0\t3.30000000\t0.600000\tkeep\tbaseline\tbaseline\tbaseline run 1\tr",
           "0\tc0\t3.32000000\t0.600000\tkeep\tbaseline\tbaseline\tbaseline run 2\tr",
           "1\tc1\t3.10000000\t0.600000\tkeep\ttweak\tLR up\tLR 1 -> 2\tREASONING"]
    path.write_text("\n".join(old) + "\n")
    rows = read_results(path)
    assert [r.seed for r in rows] == [1, 2, 1]  # every old row was one run
    s = standing(rows)
    assert s.head_commit == "c1" and s.baseline_runs == [3.30, 3.32]
    append_result(path, exp(2, "discard", 3.2))
    assert path.read_text().splitlines()[0].startswith("commit\tval_bpb\tartifact_mb\tstatus\treasoning")
    assert read_results(path)[:3] == rows and len(read_results(path)) == 4


def test_unreadable_results_are_a_clear_error(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text("commit\tval_bpb\n")
    with pytest.raises(ResearchLogError, match="header"):
        read_results(path)
    with pytest.raises(ResearchLogError, match="status"):
        ResultRow(1, "c", 1.0, 1.0, "maybe")


def test_baseline_mean_is_the_head_and_its_seed_spread_the_noise():
    s = standing(base())
    assert s.head_bpb == pytest.approx(3.31) and s.noise_floor == pytest.approx(0.02 / 2 ** 0.5)
    assert s.noise.df == 1 and s.head_commit == s.best_commit == "c0"


def test_keeps_move_the_head_and_discards_do_not():
    rows = base() + [exp(1, "keep", 3.20), exp(2, "discard", 3.25), exp(3, "crash", None), exp(4, "keep", 3.10)]
    s = standing(rows)
    assert (s.head_commit, s.head_bpb, s.best_commit, s.experiments) == ("c4", 3.10, "c4", 4)
    assert s.gains == pytest.approx([0.11, 0.0, 0.0, 0.10])


def test_three_discards_in_a_row_in_one_direction_are_a_dead_end():
    rows = base() + [exp(1, "discard", 3.4, "LR up"), exp(2, "discard", 3.4, "depth up"),
                     exp(3, "crash", None, "lr  UP"), exp(4, "discard", 3.5, "LR up")]
    assert dead_ends(rows) == {"lr up": [1, 3, 4]}  # directions compare case- and space-insensitively
    # A keep in that direction breaks the run.
    rows2 = base() + [exp(1, "discard", 3.4), exp(2, "keep", 3.2), exp(3, "discard", 3.4), exp(4, "discard", 3.4)]
    assert dead_ends(rows2) == {}


def test_five_experiments_under_0_001_call_for_a_structural_change():
    rows = base() + [exp(1, "keep", 3.10)]
    rows += [exp(n, "discard", 3.2, f"d{n}") for n in range(2, 6)]
    assert not needs_structural_change(rows)  # experiment 1 gained 0.21
    rows.append(exp(6, "keep", 3.0995, "d6"))  # gained 0.0005 < 0.001
    assert needs_structural_change(rows)
    rows.append(exp(7, "discard", 3.2, "arch", kind="structural"))  # answers the call
    assert not needs_structural_change(rows)


def test_a_regression_across_kept_commits_is_detected():
    # Simplifications may be kept within the noise (sd 0.00707 here); two of them drift past it.
    rows = base(values=(3.30, 3.31)) + [exp(1, "keep", 3.10, kind="simplification"),
                                        exp(2, "keep", 3.106, kind="simplification")]
    assert not regressed(standing(rows))
    rows.append(exp(3, "keep", 3.116, kind="simplification"))
    s = standing(rows)
    assert regressed(s) and s.best_commit == "c1"
    rows.append(ResultRow(3, "c1", 3.10, 0.6, "backtrack", "tweak", "backtrack", "reset to c1", runs=1))
    assert not regressed(standing(rows)) and standing(rows).head_commit == "c1"


def test_notes_have_every_section_and_read_back(tmp_path):
    rows = base() + [exp(1, "keep", 3.2), *(exp(n, "discard", 3.4, "LR down") for n in (2, 3, 4))]
    text = render_notes(branch="autoresearch/x", file="train_gpt.py", rows=rows, ideas=["try warmup", "tie"],
                        log_text="### 1. exp 1 (keep, c1)\n\nREASONING\n", cap_bytes=16_000_000)
    for section in NOTES_SECTIONS:
        assert f"\n## {section}\n" in text
    assert "lr down: 3 discards in a row (experiments 2, 3, 4)" in text
    assert "- 1. exp 1: val_bpb 3.2000 (-0.1100, 1 seed)" in text
    assert "commit `c1` (branch `autoresearch/x`): val_bpb 3.2000 over 1 seed" in text
    assert "seed-to-seed noise sd 0.0141 (1 df)" in text
    path = tmp_path / "notes.md"
    path.write_text(text)
    ideas, log_text = read_notes(path)
    assert ideas == ["try warmup", "tie"] and log_text.startswith("### 1. exp 1")
