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

from actors.scaler.discovery import find_mves
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
    assert examples["008"].reason == "no verdict found"


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


def test_leftover_scaled_folder_without_results_does_not_block(tree):
    (tree / "code" / "002_scaled").mkdir()
    (tree / "code" / "002_scaled" / "train.py").write_text("# half-written by a failed attempt\n")
    mve = _scan(tree)["002"]
    assert mve.scalable and not mve.scaled
    assert "no results.json" in mve.reason
    (tree / "code" / "002_scaled" / "results.json").write_text("{}")
    mve = _scan(tree)["002"]
    assert not mve.scalable and mve.reason == "already scaled (code/002_scaled/results.json)"


def test_missing_code_dir_means_nothing_scaled(tree):
    shutil.rmtree(tree / "code")
    assert _scan(tree)["006"].scalable


def test_binary_document_is_reported_and_scan_goes_on(tree):
    (tree / "experiments" / "001_gqa_vs_mha_mqar" / "notes.md").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    mves = _scan(tree)
    assert not mves["001"].scalable
    assert "notes.md is not UTF-8 text" in mves["001"].reason
    assert mves["002"].scalable  # the others are still judged


def test_unreadable_document(tree, monkeypatch):
    doc = tree / "experiments" / "002_rope_base_bytes" / "README.md"
    real_read = Path.read_bytes

    def read_bytes(self):
        if self == doc:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    mve = _scan(tree)["002"]
    assert not mve.scalable
    assert mve.reason == "cannot read README.md: Permission denied"


def test_folder_without_documents(tree):
    folder = tree / "experiments" / "009_empty"
    folder.mkdir()
    (folder / "README.md").mkdir()  # not a file: no document
    mve = _scan(tree)["009"]
    assert not mve.scalable
    assert mve.reason == "no results document (README.md, results.md or another *.md)"


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
    assert "DO NOT PROCEED" in by_id["004"]["reason"]
    assert by_id["006"]["reason"] == "already scaled (code/006_scaled/results.json)"


def test_cli_table():
    out = _cli()  # defaults: examples/experiments, examples/code
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "SLUG", "SCALABLE", "REASON"]
    row = next(line for line in lines if line.startswith("004"))
    assert row.split()[2] == "no"
    assert lines[0].index("SCALABLE") == row.index("no")  # columns line up
    assert "8 MVE(s), 3 scalable" in out.stdout


@pytest.mark.parametrize("flag", ["--experiments", "--code", "--proposals"])
def test_cli_missing_dir(tmp_path, flag):
    args = {"--experiments": str(EXAMPLES / "experiments"), "--code": str(EXAMPLES / "code")}
    args[flag] = str(tmp_path / "missing")
    out = _cli(*[x for kv in args.items() for x in kv])
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and str(tmp_path / "missing") in out.stderr
    assert "Traceback" not in out.stderr
