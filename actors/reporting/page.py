"""Put the sections together and write DIR/index.html with its images beside it.

Every file goes through `analysis.files` (written to a temporary name, then
renamed), images first and the page last, so a browser reloading the page
while `--watch` rewrites it sees the old page or the new one, never half of one.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from actors.reporting.cluster import cluster_section, read_claims
from actors.reporting.html import make_env
from actors.reporting.ledger import read_ledger
from actors.reporting.progress_plot import plot_progress
from actors.reporting.readers import Notes
from actors.reporting.research import research_section
from actors.reporting.scaled import scaled_section
from actors.reporting.sweeps import sweeps_section
from analysis.files import atomic_write_bytes, atomic_write_text

IMAGES = "img"  # folder beside index.html that holds the page's PNGs


@dataclass(frozen=True)
class ReportInputs:
    """Where to read from; None leaves a section out (the page says so)."""

    experiments: Path | None = None
    code: Path | None = None
    ledger: Path | None = None
    research: Path | None = None
    sweeps: Path | None = None
    state: Path | None = None


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def _copy_images(sources: list[Path], folder: Path, prefix: str) -> dict[Path, Path]:
    copies = {}
    for i, src in enumerate(sources):
        try:
            data = src.read_bytes()
        except OSError:
            continue  # removed since the scan: the page shows the caption without it
        copies[src] = atomic_write_bytes(folder / f"{prefix}-{i}-{_safe_name(src.name)}", data, fsync=False)
    return copies


def build_report(inputs: ReportInputs, out: Path, refresh_s: float | None = None) -> Path:
    """Read everything, write `out`/index.html (and `out`/img/), return the page's path.
    `refresh_s` makes the browser reload the page that often (for --watch)."""
    out.mkdir(parents=True, exist_ok=True)
    images = out / IMAGES
    cluster_notes, ledger_notes = Notes(), Notes()
    claims, snapshot_time = read_claims(inputs.state, cluster_notes)
    ledger = read_ledger(inputs.ledger, ledger_notes) if inputs.ledger is not None else []
    scaled = scaled_section(inputs.experiments, inputs.code, claims, ledger)
    research = research_section(inputs.research)
    for i, branch in enumerate(research.branches):
        png = plot_progress(branch.rows, images / f"research-{i}-progress.png", title=f"{branch.name}")
        branch.plot = png
    sweeps = sweeps_section(inputs.sweeps)
    copies: dict[Path, Path] = {}
    for i, folder in enumerate(sweeps.folders):
        copies.update(_copy_images(folder.images, images, f"sweep-{i}"))
    cluster = cluster_section(inputs.state, claims, snapshot_time, cluster_notes, scaled.rows, ledger,
                              sweeps.folders)
    html = make_env(out).get_template("index.html.j2").render(
        generated=time.time(), inputs=inputs, refresh_s=refresh_s, scaled=scaled, research=research,
        sweeps=sweeps, copies=copies, cluster=cluster, ledger=ledger, ledger_notes=ledger_notes,
    )
    page = atomic_write_text(out / "index.html", html)
    # Images of an earlier page that this one no longer shows (a branch or sweep gone).
    shown = {p.resolve() for p in copies.values()} | {b.plot.resolve() for b in research.branches if b.plot}
    for old in images.glob("*.png") if images.is_dir() else []:
        if old.resolve() not in shown:
            old.unlink(missing_ok=True)
    return page
