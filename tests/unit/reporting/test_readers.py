"""Reading what other parts write, as they write it today and as their formats grow."""

from __future__ import annotations

from actors.reporting.ledger import entries_for, read_ledger
from actors.reporting.research import research_section
from tests.unit.reporting.conftest import ledger_entry, write_research


def test_ledger_entries_read_back_with_their_results(tmp_path):
    from train.ledger import append_entry

    path = tmp_path / "EXPERIMENTS.md"
    path.write_text("# Experiments\n\n## 006_scaled — by hand\n- GPUs: 2 x A100, 3.1 h\n")
    append_entry(path, ledger_entry("003_scaled: gpt 25.30M on bytes", 1.25, 2.5))
    append_entry(path, ledger_entry("003_scaled: gpt 25.30M on bytes", 0.5, 1.0))  # a rerun
    entries = read_ledger(path)
    assert [e.title for e in entries] == ["006_scaled — by hand", "003_scaled: gpt 25.30M on bytes",
                                         "003_scaled: gpt 25.30M on bytes"]
    assert entries[0].time is None and entries[0].results == {} and "3.1 h" in entries[0].text
    assert entries[1].time == "2023-11-14T22:13:20Z"
    assert (entries[1].metric("gpu_hours"), entries[1].metric("cost_usd")) == (1.25, 2.5)
    assert [e.index for e in entries_for(entries, "003_scaled")] == [1, 2]
    assert [e.run_name for e in entries_for(entries, "006_scaled")] == ["006_scaled"]
    assert read_ledger(tmp_path / "missing.md") == []


def test_results_tsv_of_today_keeps_gains_and_dead_ends(tmp_path):
    write_research(tmp_path)
    logs = tmp_path / ".autoresearch/logs/test"
    for name in ("baseline-2.log", "002.log"):
        (logs / name).write_text("val_bpb: 1.5\n")
    (branch,) = research_section(tmp_path).branches
    assert branch.name == "autoresearch/test"
    assert [(r.n, r.log.name) for r in branch.rows if r.log] == [(0, "baseline-2.log"), (2, "002.log")]
    assert (branch.baseline_bpb, round(branch.noise_floor, 6)) == (1.51, 0.02)
    assert [(r.n, round(r.gain, 6)) for r in branch.keeps] == [(1, 0.11), (6, 0.05)]
    assert (branch.best_bpb, branch.best_commit) == (1.35, "9" * 40)
    assert [r.status for r in branch.experiments] == ["keep", "discard", "discard", "discard", "crash", "keep"]
    assert branch.dead_ends == ["learning_rate up: 3 discards in a row (experiments 2, 3, 4); change direction"]
    assert not branch.has_p_values and not branch.has_heldout and branch.researchers == []


def test_results_tsv_read_by_column_name_with_new_columns_and_a_half_written_row(tmp_path):
    """The shared results.tsv of several researchers: the seed's six columns first, extra
    columns after (any order), and a row cut short by a writer still appending."""
    (tmp_path / "results.tsv").write_text(
        "commit\tval_bpb\tartifact_mb\tstatus\treasoning\tdescription\tresearcher\tkind\tp_value\theldout_bpb\tseed\n"
        "aaaa\t1.50\t0.6\tkeep\tseed\tbaseline\tr0\tbaseline\t\t\t1\n"
        "bbbb\t1.40\t0.7\tkeep\twhy\tMODEL_DIM up\tr1\ttweak\t0.003\t1.43\t1\n"
        "cccc\t1.45\t0.7\tdiscard\twhy\tLR x2\tr0\ttweak\t0.4\t\t1\n"
        "dddd\t1.38\t0.7\tkeep\twhy\tdepth\tr0\ttweak\t0.01\t1.44\t2\n"
        "eeee\t1.6\n")
    (branch,) = research_section(tmp_path).branches
    assert [r.commit for r in branch.rows] == ["aaaa", "bbbb", "cccc", "dddd"]  # eeee has no status yet
    kept = branch.keeps
    assert [(r.p_value, r.heldout_bpb, round(r.gap, 6)) for r in kept] == [(0.003, 1.43, 0.03), (0.01, 1.44, 0.06)]
    assert [round(r.gain, 6) for r in kept] == [0.1, 0.02]
    assert [(s.name, s.experiments, s.keeps, s.discards, s.best_bpb) for s in branch.researchers] == [
        ("r0", 2, 1, 1, 1.38), ("r1", 1, 1, 0, 1.40)]
    assert branch.rows[0].n is None  # no `n` column: the page shows "-"


def test_parked_branches_are_read_too(tmp_path):
    write_research(tmp_path)
    write_research(tmp_path / ".autoresearch" / "branches" / "autoresearch__old")
    names = [b.name for b in research_section(tmp_path).branches]
    assert names == ["autoresearch/test", "autoresearch/old"]
