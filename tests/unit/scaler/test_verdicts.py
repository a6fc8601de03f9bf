"""Reading an MVE's documents: verdicts, success criteria and blockers
(pure text, no folders)."""

from __future__ import annotations

import pytest

from actors.scaler.criteria import critical_blocker, success_criteria_met
from actors.scaler.verdicts import parse_verdict

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
