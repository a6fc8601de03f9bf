"""The scan on research folders written in the styles teams use (corpus/*/):
every number's status against what a careful reader concludes (expected.yaml),
and what the flat layout brings with it (proposals named in READMEs, shared
logs, update logs that disagree, unreadable files). No Ray, no network."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from actors.scaler.discovery import scan
from tests.support import pristine_examples

CORPUS = Path(__file__).parent / "corpus"

# flat/ and heldout/ shaped the heuristics; blind/ was written after them and is not tuned on:
# there the scan must never scale what a reader would not, and when it does not understand
# the notes it must say "no verdict" rather than guess.
def _cases(*corpora):
    return [(c, mve_id, want) for c in corpora
            for mve_id, want in sorted(yaml.safe_load((CORPUS / c / "expected.yaml").read_text()).items())]


CASES = _cases("flat", "heldout")
BLIND = _cases("blind")
_SCANS: dict[str, dict] = {}


def scanned(corpus: str):
    if corpus not in _SCANS:
        root = CORPUS / corpus
        result = scan(root / "experiments", root / "code", root / "proposals")
        _SCANS[corpus] = {"result": result, "by_id": {m.id: m for m in result.mves}}
    return _SCANS[corpus]


@pytest.mark.parametrize("corpus, mve_id, want", CASES, ids=[f"{c}-{i}" for c, i, _ in CASES])
def test_status_is_what_a_reader_concludes(corpus, mve_id, want):
    mve = scanned(corpus)["by_id"].get(mve_id)
    assert mve is not None, f"{mve_id} not found"
    assert mve.status == want["status"], f"{want['style']}: {mve.reason}"
    assert mve.scalable is (want["status"] == "scalable")


@pytest.mark.parametrize("corpus, mve_id, want", BLIND, ids=[f"{c}-{i}" for c, i, _ in BLIND])
def test_on_notes_it_was_not_tuned_on_it_is_right_or_says_it_does_not_know(corpus, mve_id, want):
    mve = scanned(corpus)["by_id"][mve_id]
    assert mve.status in (want["status"], "no_verdict"), f"{want['style']}: {mve.reason}"
    assert not mve.scalable or want["status"] == "scalable"


def test_every_number_found_is_one_the_reader_expected():
    for corpus in {c for c, _, _ in CASES + BLIND}:
        expected = yaml.safe_load((CORPUS / corpus / "expected.yaml").read_text())
        assert set(scanned(corpus)["by_id"]) == set(expected), corpus


def test_the_scan_says_what_it_read_and_what_it_could_not():
    result = scanned("flat")["result"]
    assert result.files_read == 55 and result.files_seen == 66
    assert [(p.name, why.split(" (")[0]) for p, why in result.unreadable] == [("047_results.md", "047_results.md looks binary")]
    assert any("active_work.json holds the old tracker's state" in n for n in result.notes)
    assert result.judges() == {"heuristics": 44}


def test_flat_layout_records_carry_their_code_proposal_and_evidence():
    m = scanned("flat")["by_id"]
    gated = m["021"]
    assert gated.layout == "flat" and gated.path == gated.code_path == CORPUS / "flat/code/021"
    assert gated.proposal == CORPUS / "flat/proposals/021-gated-residual.md"  # named by a link in its README
    assert gated.results["benchmark"] == "bytes"  # code/021/results.json: the offline planner's facts
    assert m["028"].proposal.name == "028-rmsnorm-free.md" and m["028"].slug == "rmsnorm-free"
    assert m["066"].layout == "folder" and m["066"].code_path == CORPUS / "flat/code/066"
    assert "2 code folders (032, 032_dyt)" in m["032"].reason and "2 logs" in m["032"].reason
    # Logs and update logs that disagree are quoted, and overruled.
    assert any("update-log-2024-06-14.md says 'ABANDON'" in n for n in m["036"].notes)
    assert any("the structured verdict ('verdict: DEBUG' in code/033/results.yaml) governs" in n for n in m["033"].notes)
    assert "last: 'Awaiting results...'" in m["027"].reason
    assert any("leftover of a failed attempt of ours" in n for n in m["057"].notes)


def test_a_planner_reads_the_mves_own_files_in_both_layouts():
    flat = scanned("flat")["by_id"]["021"]
    names = {str(p.relative_to(flat.root)) for p in flat.source_files()}
    assert {"experiments/021_results.md", "code/021/models/gated.py", "code/021/config.yaml",
            "code/021/results.json", "proposals/021-gated-residual.md"} <= names
    assert not any("022" in n or "active_work" in n for n in names)
    examples = pristine_examples()
    folder = next(m for m in scan(examples / "experiments", examples / "code").mves if m.id == "003")
    names = {p.name for p in folder.source_files()}
    assert {"notebook.md", "swiglu.py", "results.json", "003_swiglu_mlp_bytes.md"} <= names
