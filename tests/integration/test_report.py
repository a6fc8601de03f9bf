"""The report page of a small real run, as a user sees it: in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import make_golf_repo, pristine_examples

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "<script>window.__injected = 1</script>"


@pytest.fixture(scope="session")  # session-scoped: checked before the session's Ray starts
def chromium() -> tuple[str, str]:
    """Chromium and chromedriver (Debian's chromium and chromium-driver), or a skip
    saying so before any run is spent on the test."""
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("needs Chromium and chromedriver, which are not installed here "
                    "(Debian: apt-get install chromium chromium-driver)")
    return browser, driver


def _headless(chromium: tuple[str, str]):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(chromium[1]), options=options)


@pytest.fixture
def small_run(ray_cluster, make_tracker, tmp_path, monkeypatch):
    """`actors.main` on one positive MVE (a CPU rehearsal) with AutoResearch beside it
    on the small golf template (its two baseline runs: enough for a plot and a table)."""
    from actors.main import main

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    examples = tmp_path / "examples"
    (examples / "experiments").mkdir(parents=True)
    mve = next((pristine_examples() / "experiments").glob("002_*"))
    shutil.copytree(mve, examples / "experiments" / mve.name)
    state = tmp_path / "state.parquet"
    make_tracker(state)
    repo = make_golf_repo(tmp_path / "research")
    argv = ["--scalers", "1", "--experiments", str(examples / "experiments"), "--code", str(examples / "code"),
            "--state", str(state), "--namespace", make_tracker.namespace,
            "--autoresearch-repo", repo.working_tree_dir, "--autoresearch-tag", "main",
            "--autoresearch-iterations", "0"]
    assert main(argv) == 0
    return examples, Path(repo.working_tree_dir), state


@pytest.mark.slow
def test_the_page_of_a_small_real_run_in_headless_chromium(chromium, small_run, tmp_path):
    from actors.research.memory import read_results
    from actors.research.rules import standing
    from selenium.webdriver.common.by import By

    examples, repo, state = small_run
    # Someone notes something in the ledger by hand, markup and all.
    ledger = examples / "experiments" / "EXPERIMENTS.md"
    with ledger.open("a") as f:
        f.write(f"\n## note by hand\n- the smoke test printed {SCRIPT}\n")
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "actors.report", "--out", str(out), "--experiments",
                           str(examples / "experiments"), "--research", str(repo), "--state", str(state)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "index.html")

    results = json.loads((examples / "code/002_scaled/results.json").read_text())
    rows = read_results(repo / "results.tsv")
    browser = _headless(chromium)
    try:
        browser.get((out / "index.html").as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert images and all(done and width > 0 for _, done, width in images), images
        row = browser.find_element(By.ID, "mve-002").text
        assert "scaled" in row and f"{results['val_bpb']:.4f}" in row and "1.4050" in row  # scaled vs the MVE
        assert browser.find_element(By.ID, "count-scaled").text == "1"
        ledger_link = browser.find_element(By.CSS_SELECTOR, "#mve-002 a[href^='#ledger-']")
        ledger_link.click()
        entry = browser.find_element(By.ID, ledger_link.get_attribute("href").split("#")[1])
        assert entry.text.startswith("002_scaled:")
        best = standing(rows).best_bpb
        assert browser.find_element(By.ID, "research-0-best").text == f"{best:.4f}"
        runs = browser.find_elements(By.CSS_SELECTOR, "table.runs tbody tr")
        assert [r.find_elements(By.TAG_NAME, "td")[4].text for r in runs] == [
            f"{r.val_bpb:.4f}" if r.val_bpb is not None else "-" for r in rows]
        # The note's markup is shown as text and never ran.
        assert SCRIPT in browser.find_element(By.TAG_NAME, "body").text
        assert browser.execute_script("return window.__injected") is None
        browser.execute_script("window.scrollTo(0, 0)")
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(height, 8000))
        shot = tmp_path / "report.png"  # kept out of the repository
        assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:4] == b"\x89PNG"
    finally:
        browser.quit()
