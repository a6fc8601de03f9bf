"""Finding scalable MVEs: verdict parsing, criteria, blockers, the folder scan
over the shipped examples, and `python -m actors.scaler scan`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actors.scaler.discovery import critical_blocker, find_mves, parse_verdict, success_criteria_met
from tests.support import pristine_examples

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = pristine_examples()  # as shipped, whatever ran in this checkout
EXPECTED_SCALABLE = {"001", "002", "003"}

# --- verdicts ---------------------------------------------------------------------

POSITIVE = [
    ("**Verdict: PROCEED**", "PROCEED"),
    ("Verdict: proceed", "proceed"),
    ("verdict: Proceed.", "Proceed"),
    ("## Decision\n\n✅ Scale up", "Scale up"),
    ("## Verdict\n\nAfter three seeds:\n\n**PROCEED**", "**PROCEED**"),
    ("Recommendation: proceed to full-scale", "proceed"),
    ("_Success_", "_Success_"),
    ("🚀 Scale up", "Scale up"),
    ("✅ PROCEED", "PROCEED"),
    ("> **Decision:** SUCCESS", "SUCCESS"),
    ("| Verdict | **PROCEED** |", "**PROCEED**"),
    ("Decision: GO", "GO"),
    ("Verdict: ✅", "✅"),
    ("Final verdict — scale-up", "scale-up"),
    ("**Verdict**\n\n_scale up_", "_scale up_"),
    ("Outcome: successful", "successful"),
    ("Verdict: PROCEED — no failures observed in 3 seeds", "PROCEED"),
    ("## Verdict ✅ PROCEED", "PROCEED"),
    # A verdict line outranks shouted words elsewhere in the document.
    ("Verdict: PROCEED\n\nSeed 2 FAILED once on a bad node and was re-run.", "PROCEED"),
    # Code fences hold logs, not verdicts.
    ("```\nFAILED: connection reset\n```\n\n**SUCCESS**", "**SUCCESS**"),
]

NEGATIVE = [
    ("❌ DO NOT PROCEED — success criteria not met", "DO NOT PROCEED"),
    ("Verdict: not successful (FAIL)", "not successful"),
    ("Verdict: not successful, do not scale up", "not successful"),
    ("SUCCESS criteria not met", "SUCCESS criteria not met"),
    ("Verdict: don't proceed", "don't proceed"),
    ("Verdict: don’t proceed", "don’t proceed"),
    ("Decision: we do not proceed", "do not proceed"),
    ("Verdict: unsuccessful", "unsuccessful"),
    ("**FAILED**", "**FAILED**"),
    ("Verdict: _abandoned_", "_abandoned_"),
    ("Decision: ABANDON", "ABANDON"),
    ("Verdict: ❌", "❌"),
    ("Verdict: PROCEED? No — the gain FAILED to replicate", "FAILED"),
    ("Verdict: no-go", "no-go"),
    ("Outcome: not a success", "not a success"),
    ("## Verdict\n\nDO NOT PROCEED", "DO NOT PROCEED"),
    ("Recommendation: not worth scaling", "not worth scaling"),
    ("Verdict: SUCCESS criteria not met", "SUCCESS criteria not met"),
    # A negative verdict line outranks a shouted positive word elsewhere.
    ("**SUCCESS** on seed 1 only.\n\nVerdict: fail", "fail"),
    # With no verdict line, standalone words decide, negatives winning.
    ("# Notes\n\n**PROCEED**\n\n| recall >= 0.9 | 0.71 | FAIL |", "FAIL"),
]


@pytest.mark.parametrize("text,evidence", POSITIVE)
def test_positive_verdicts(text, evidence):
    v = parse_verdict(text, "README.md")
    assert (v.label, v.evidence, v.source) == ("positive", evidence, "README.md")


@pytest.mark.parametrize("text,evidence", NEGATIVE)
def test_negative_verdicts_win(text, evidence):
    v = parse_verdict(text, "results.md")
    assert (v.label, v.evidence) == ("negative", evidence)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# 008 Muon vs AdamW\n\nSeed 3 is still running. No call yet.",
        "The success of GQA at this size suggests we may proceed later.",  # prose, not a verdict
        "If recall >= 0.9, PROCEED; otherwise DO NOT PROCEED.",  # a decision rule
        "Status: done ✅",  # a run state, not a judgement
        "Verdict: TBD",
        "## SUCCESS CRITERIA\n- [x] recall >= 0.9",
    ],
)
def test_no_verdict(text):
    assert parse_verdict(text).label == "unknown"


# --- success criteria and blockers ---------------------------------------------------


@pytest.mark.parametrize(
    "text,met",
    [
        ("# Results\nval_bpb 1.40", True),  # no section: nothing to fail
        ("## Success criteria\n- [x] recall >= 0.9\n- [X] params within 1%", True),
        ("### Acceptance criteria\n1. [x] stable\n2. [x] faster", True),
        ("**Success criteria**\n- recall >= 0.9: met ✅\n\nOther notes.", True),
        ("## Success criteria\n| recall | 0.93 | ✅ |\n| bpb | 1.40 | ✅ |", True),
        ("## Success criteria\n- [x] recall >= 0.9\n- [ ] params within 1%", False),
        ("## Success criteria\n| recall | 0.93 | ✅ |\n| bpb | 1.52 | ❌ |", False),
        ("## Success criteria\n- recall >= 0.9 — NOT MET (0.41)", False),
        ("Success criteria: not met", False),
        ("We stopped early: success criteria not met.", False),
    ],
)
def test_success_criteria(text, met):
    ok, reason = success_criteria_met(text)
    assert ok is met
    assert ("not met" in reason) is (not met)


@pytest.mark.parametrize(
    "text,blocker",
    [
        ("Blocker: the eval split overlaps training", "Blocker: the eval split overlaps training"),
        ("**Critical blocker:** no GPU quota", "**Critical blocker:** no GPU quota"),
        ("## Blockers\n- Tokenizer bug corrupts 2% of bytes\n", "- Tokenizer bug corrupts 2% of bytes"),
        ("## Blockers\n\nThe licence forbids redistribution.\n", "The licence forbids redistribution."),
        ("Status: BLOCKED on the data licence", "Status: BLOCKED on the data licence"),
        ("Blockers: none", None),
        ("Blocker: n/a", None),
        ("No critical blockers.", None),
        ("## Blockers\n- None.\n\nRecommendation: proceed", None),
        ("## Blockers\n- ~~GPU quota~~ resolved 2024-05-01\n- [x] tokenizer bug", None),
        ("Critical blocker: eval leak — resolved by re-splitting", None),
        ("## Non-blocking issues\n- the loader is slow", None),
    ],
)
def test_critical_blocker(text, blocker):
    assert critical_blocker(text) == blocker


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
