"""The whole page, built from an overnight written by the system's own writers."""

from __future__ import annotations

import json

from actors.reporting.page import ReportInputs, build_report
from tests.unit.reporting.conftest import SCRIPT, ledger_entry, write_research
from tests.unit.reporting.page_text import Page


def _inputs(o, **kw) -> ReportInputs:
    return ReportInputs(**{"experiments": o.experiments, "code": o.code, "ledger": o.ledger, "research": o.research,
                           "sweeps": o.sweeps, "state": o.state, **kw})


def test_every_section_holds_the_numbers_of_its_files(overnight, tmp_path):
    out = tmp_path / "report"
    page_path = build_report(_inputs(overnight), out)
    assert page_path == out / "index.html"
    page = Page(page_path.read_text())

    # Scaled experiments: 002 scaled by our agent with its metric beside the MVE's and baseline's.
    results = json.loads((overnight.code / "002_scaled/results.json").read_text())
    row = page.text_of("mve-002")
    assert "scaled" in row and "val_bpb" in row
    assert f"{results['val_bpb']:.4f}" in row and "1.4050" in row and "1.4120" in row  # scaled, MVE, baseline
    assert "0.50" in row and "$1.00" in row and results["plan"]["title"] in row
    assert "scaled by hand" in page.text_of("mve-006")  # the bundled 006_scaled has no plan.json
    assert "failed" in page.text_of("mve-001") and "smoke test failed: out of memory" in page.text_of("mve-001")
    assert "running" in page.text_of("mve-003") and "scaler-3" in page.text_of("mve-003")
    assert "negative" in page.text_of("mve-004") and "DO NOT PROCEED" in page.text_of("mve-004")  # the scan's status
    assert page.text_of("count-scaled") == "1"
    # Its ledger link lands on its entry; the folder and README links point at the files.
    hrefs = page.attrs("a", "href")
    anchor = next(h for h in hrefs if h.startswith("#ledger-"))
    assert page.text_of(anchor[1:]).startswith("002_scaled: gpt 25.30M on bytes")
    readme = next(h for h in hrefs if h.endswith("002_scaled/README.md"))
    assert (out / readme).resolve() == (overnight.code / "002_scaled/README.md").resolve()

    # Research: the progress plot, the keeps with their gains, the dead end.
    assert page.text_of("research-0-best") == "1.3500"
    assert "+0.1100" in page.text and "+0.0500" in page.text  # 1.51 -> 1.40 -> 1.35
    assert "learning_rate up: 3 discards in a row" in page.text

    # Sweeps: the recommendation per priority, the fit, both plots copied beside the page.
    assert "research hs_g1n1" in page.text and "ray_results" not in page.text
    assert "power_law_fit.json" in page.text and "r2" in page.text
    images = page.attrs("img", "src")
    assert len(images) == 4  # progress, scaling.png, fom.png, scaling_law_plot.png
    for src in images:
        assert (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The cluster: the claim held now, the eviction and failure, LLM spend by model, GPU-hours.
    assert "scale:003" in page.text_of("claims-held") and "scale:002" not in page.text_of("claims-held")
    assert "evicted" in page.text and "autoresearch:/repo:autoresearch/test" in page.text
    llm = page.text_of("llm")
    assert "claude-sonnet-4-5" in llm and "15000" in llm and "$0.0810" in llm
    spend = page.text_of("spend")
    assert "0.50 $1.00" in spend and "0.75 $1.50" in spend  # results.json; the two ledger entries
    assert "-" in page.text_of("mve-004")  # what a file does not have shows as "-"


def test_strings_from_experiment_files_show_as_text_and_never_run(overnight, tmp_path):
    """Script and markup in any file an experiment writes is shown as the text it is."""
    from train.ledger import append_entry

    odd = overnight.experiments / '009_<img_src=x_onerror="alert(1)">'  # a folder name can hold markup too
    odd.mkdir()
    (odd / "README.md").write_text(f"# odd\n\nDecision: PROCEED\n\n## Success criteria\n\n- [ ] loss < 1 {SCRIPT}\n")
    append_entry(overnight.ledger, ledger_entry("note", 0.0, 0.0, observations=[f"the run printed {SCRIPT}"]))
    write_research(overnight.research / "other", extra_row_description=f"try {SCRIPT}")
    out = tmp_path / "report"
    html = build_report(_inputs(overnight, research=overnight.research / "other"), out).read_text()

    page = Page(html)
    assert [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed")] == []
    assert all(not name.startswith("on") for _, attrs in page.tags for name in attrs)
    assert page.text.count(SCRIPT) >= 3  # the MVE's criterion, the ledger note, the results.tsv description
    assert '009_<img_src=x_onerror="alert(1)">' in page.text
    # The folder's link is a relative path, percent-encoded, that still finds the folder.
    link = next(h for h in page.attrs("a", "href") if "009_" in h)
    assert "<" not in link and '"' not in link
    from urllib.parse import unquote

    assert (out / unquote(link)).resolve() == odd.resolve()


def test_missing_and_partial_sources_show_dashes_and_notes_not_errors(tmp_path):
    """A laptop with only an experiments folder: the other sections say what is missing."""
    experiments = tmp_path / "experiments"
    (experiments / "001_idea").mkdir(parents=True)
    (experiments / "001_idea" / "README.md").write_text("# idea\n\nVerdict: PROCEED\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "results.tsv").write_text("commit\tval_bpb\tstatus\n")  # header only: the loop just started
    html = build_report(ReportInputs(experiments=experiments, research=repo,
                                     state=tmp_path / "no-state.parquet"), tmp_path / "out").read_text()
    page = Page(html)
    assert "pending" in page.text_of("mve-001")
    assert "No sweeps folder given" in page.text and "no WorkTracker state at" in page.text
    assert "Nothing kept yet" in page.text
    assert page.attrs("img", "src") == []  # no run with a val_bpb: no plot


def test_rewriting_leaves_no_temporary_files_and_no_stale_images(overnight, tmp_path):
    out = tmp_path / "report"
    build_report(_inputs(overnight), out, refresh_s=30)
    assert len(list((out / "img").glob("*.png"))) == 4
    build_report(_inputs(overnight, sweeps=None), out, refresh_s=30)  # the sweeps are gone now
    assert [p.name for p in (out / "img").iterdir()] == ["research-0-progress.png"]
    assert not [p.name for p in out.rglob("*") if p.name.startswith(".")]
    assert '<meta http-equiv="refresh" content="30">' in (out / "index.html").read_text()
