"""Finding scalable MVEs: the folder scan over the shipped examples and odd
trees, and `python -m actors.scaler scan`. How documents are read is test_verdicts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actors.scaler.discovery import find_mves, scan
from actors.scaler.ownership import write_marker
from tests.support import pristine_examples

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = pristine_examples()  # as shipped, whatever ran in this checkout
EXPECTED_SCALABLE = {"001", "002", "003"}

# --- scanning the shipped examples ----------------------------------------------------


@pytest.fixture(scope="module")
def examples():
    mves = find_mves(EXAMPLES / "experiments", EXAMPLES / "code")
    return {m.id: m for m in mves}


def test_examples_scalable_set(examples):
    assert {i for i, m in examples.items() if m.scalable} == EXPECTED_SCALABLE
    assert sorted(examples) == ["001", "002", "003", "004", "005", "006", "007", "008"]  # _template ignored
    for i in EXPECTED_SCALABLE:
        assert examples[i].reason.startswith("positive verdict (")
        assert "not scaled" in examples[i].reason and "unclaimed" in examples[i].reason


def test_examples_negatives_name_the_phrase(examples):
    assert examples["004"].verdict.label == "negative"
    assert "'DO NOT PROCEED' in results.md" in examples["004"].reason
    assert examples["005"].verdict.label == "negative"
    assert "'not successful' in README.md" in examples["005"].reason
    assert "unchecked" in examples["005"].reason


def test_examples_already_scaled_blocked_and_undecided(examples):
    scaled = examples["006"]
    assert scaled.verdict.label == "positive" and scaled.scaled and not scaled.scalable
    assert scaled.reason == "already scaled (code/006_scaled/results.json)"
    assert not examples["007"].scalable and examples["007"].reason.startswith("critical blocker (")
    assert "validation shard" in examples["007"].reason
    assert examples["008"].status == "pending" and "(in progress)" in examples["008"].reason


def test_examples_carry_planner_facts(examples):
    for m in examples.values():
        assert m.results["benchmark"] in ("mqar", "bytes")
        assert m.results["model_family"] in ("gpt", "rnn")
        assert m.results["metric"] in ("accuracy", "val_bpb")
        assert 50_000 <= m.results["params"] <= 500_000
    assert examples["001"].proposal.name == "001_gqa_vs_mha_mqar.md"
    assert "Full-scale plan" in examples["003"].proposal.read_text()
    assert examples["008"].proposal is None
    assert [d.name for d in examples["003"].docs] == ["notebook.md"]


# --- scanning edge cases (a copy of the examples under tmp_path) -------------------------


@pytest.fixture
def tree(tmp_path):
    for sub in ("experiments", "code", "proposals"):
        shutil.copytree(EXAMPLES / sub, tmp_path / sub)
    return tmp_path


def _scan(tree, **kw):
    return {m.id: m for m in find_mves(tree / "experiments", tree / "code", **kw)}


def test_claimed_ids_are_excluded(tree):
    mves = _scan(tree, claimed={"001", "scale:003"})
    assert {i for i, m in mves.items() if m.scalable} == {"002"}
    assert mves["001"].reason == "claimed by another agent"


def test_leftover_of_ours_does_not_block_and_a_folder_of_theirs_does(tree):
    leftover = tree / "code" / "002_scaled"
    leftover.mkdir()
    (leftover / "train.py").write_text("# half-written by someone\n")
    mve = _scan(tree)["002"]  # no marker: the user's, scaled by hand
    assert mve.status == "scaled_by_hand" and not mve.scalable and not mve.scaled
    assert "code/002_scaled/ has no marker of ours" in mve.reason
    write_marker(leftover, mve_id="002")  # ours: the leftover of a failed attempt
    mve = _scan(tree)["002"]
    assert mve.scalable and not mve.scaled
    assert "no results.json" in mve.reason and any("set aside" in n for n in mve.notes)
    (leftover / "results.json").write_text("{}")
    mve = _scan(tree)["002"]
    assert not mve.scalable and mve.status == "scaled" and mve.reason == "already scaled (code/002_scaled/results.json)"


def test_a_hand_written_variant_folder_counts_as_scaled_by_hand(tree):
    (tree / "code" / "001_scaled_v2").mkdir()
    (tree / "code" / "001_scaled_v2" / "README.md").write_text("# planned by hand\n")
    mve = _scan(tree)["001"]
    assert mve.status == "scaled_by_hand" and "001_scaled_v2" in mve.reason


def test_missing_code_dir_means_nothing_scaled(tree):
    shutil.rmtree(tree / "code")
    assert _scan(tree)["006"].scalable


def test_binary_document_is_reported_and_scan_goes_on(tree):
    (tree / "experiments" / "001_gqa_vs_mha_mqar" / "notes.md").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    mves = _scan(tree)
    assert not mves["001"].scalable
    assert mves["001"].status == "unreadable" and "notes.md looks binary" in mves["001"].reason
    assert mves["002"].scalable  # the others are still judged


def test_unreadable_document(tree, monkeypatch):
    doc = tree / "experiments" / "002_rope_base_bytes" / "README.md"
    real_open = Path.open

    def open_(self, *args, **kwargs):
        if self == doc:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    result = scan(tree / "experiments", tree / "code")
    mve = next(m for m in result.mves if m.id == "002")
    assert not mve.scalable and mve.status == "unreadable"
    assert mve.reason.startswith("cannot read README.md: Permission denied")
    assert [(p.name, why) for p, why in result.unreadable] == [("README.md", "cannot read README.md: Permission denied")]


def test_folder_without_documents_is_pending_and_an_empty_one_is_no_mve(tree):
    folder = tree / "experiments" / "009_code_only"
    folder.mkdir()
    (folder / "train.py").write_text("print('not run yet')\n")
    empty = tree / "experiments" / "010_empty"
    (empty / "README.md").mkdir(parents=True)  # a folder, not a document: nothing to read
    mves = _scan(tree)
    assert not mves["009"].scalable and mves["009"].status == "pending"
    assert mves["009"].reason == "no results document (README.md, results.md or another *.md)"
    assert "010" not in mves


def test_non_mve_folders_ignored_and_duplicate_ids_flagged(tree):
    exp = tree / "experiments"
    (exp / "notes").mkdir()
    (exp / "12_short_id").mkdir()
    (exp / "001-dash").mkdir()
    shutil.copytree(exp / "002_rope_base_bytes", exp / "002_rope_base_v2")
    mves = find_mves(exp, tree / "code")
    assert [m.id for m in mves].count("002") == 2
    assert all(not m.scalable and "duplicate id 002" in m.reason for m in mves if m.id == "002")
    assert {m.id for m in mves} == {f"00{i}" for i in range(1, 9)}  # the odd names are skipped


def test_malformed_results_json_is_noted(tree):
    (tree / "experiments" / "001_gqa_vs_mha_mqar" / "results.json").write_text("{not json")
    mve = _scan(tree)["001"]
    assert mve.results == {} and mve.scalable
    assert "results.json is not valid JSON" in mve.reason


def test_missing_experiments_dir_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_mves(tmp_path / "nowhere", tmp_path / "code")


# --- the command line ---------------------------------------------------------------


def _cli(*args):
    # From the pristine copy's parent, so the defaults (examples/experiments,
    # examples/code) name the shipped examples.
    env = dict(os.environ, RAY_ADDRESS="local", PYTHONPATH=str(ROOT))  # never look for a cluster
    return subprocess.run(
        [sys.executable, "-m", "actors.scaler", "scan", *args],
        cwd=EXAMPLES.parent, env=env, capture_output=True, text=True, timeout=60,
    )


def test_cli_json_lines():
    out = _cli("--experiments", str(EXAMPLES / "experiments"), "--code", str(EXAMPLES / "code"), "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["001", "002", "003", "004", "005", "006", "007", "008"]
    assert {r["id"] for r in rows if r["scalable"] is True} == EXPECTED_SCALABLE
    by_id = {r["id"]: r for r in rows}
    assert "DO NOT PROCEED" in by_id["004"]["reason"] and by_id["004"]["status"] == "negative"
    assert by_id["006"]["reason"] == "already scaled (code/006_scaled/results.json)"
    assert {r["judge"] for r in rows} == {"heuristics"} and {r["layout"] for r in rows} == {"folder"}
    assert out.stderr.startswith("read ")  # the summary goes to stderr, stdout stays JSON


def test_cli_table():
    out = _cli()  # defaults: examples/experiments, examples/code
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "SLUG", "STATUS", "LAYOUT", "REASON"]
    row = next(line for line in lines if line.startswith("004"))
    assert row.split()[2] == "negative"
    assert lines[0].index("STATUS") == row.index("negative")  # columns line up
    assert "8 MVE(s): 3 scalable, 1 pending, 2 negative, 1 blocked, 1 scaled" in out.stdout
    assert "judged by: heuristics (8)" in out.stdout


def test_cli_on_a_folder_with_files_but_no_mve_says_what_it_looked_for(tmp_path):
    research = tmp_path / "research"
    (research / "experiments").mkdir(parents=True)
    (research / "experiments" / "063_results.md").write_text("Verdict: PROCEED\n")
    (research / "notes.md").write_text("# our notes\n")
    out = _cli("--experiments", str(research), "--code", str(research))  # the research folder, not experiments/
    assert out.returncode == 0, out.stderr
    assert "0 MVE(s)" in out.stdout and "no MVE found: looked for folders experiments/NNN_slug/" in out.stdout
    assert f"did you mean --experiments {research / 'experiments'}" in out.stdout


def test_cli_judge_claude_without_a_key_is_one_clear_error(tmp_path):
    env_key = os.environ.pop("ANTHROPIC_API_KEY", None)
    try:
        out = _cli("--experiments", str(EXAMPLES / "experiments"), "--code", str(EXAMPLES / "code"),
                   "--judge", "claude")
    finally:
        if env_key is not None:
            os.environ["ANTHROPIC_API_KEY"] = env_key
    assert out.returncode == 2 and out.stderr.startswith("error: --judge claude needs ANTHROPIC_API_KEY")
    assert "Traceback" not in out.stderr and out.stdout == ""


@pytest.mark.parametrize("flag", ["--experiments", "--code", "--proposals"])
def test_cli_missing_dir(tmp_path, flag):
    args = {"--experiments": str(EXAMPLES / "experiments"), "--code": str(EXAMPLES / "code")}
    args[flag] = str(tmp_path / "missing")
    out = _cli(*[x for kv in args.items() for x in kv])
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and str(tmp_path / "missing") in out.stderr
    assert "Traceback" not in out.stderr
