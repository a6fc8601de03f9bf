"""Progress you can see: what each researcher does now (a small JSON file per
researcher, rewritten at every phase), the table `python -m actors.autoresearch
status` and `actors.main` print, and the PNG beside results.tsv (val_bpb per
experiment, the kept ones marked, the running best).

Everything here reads files, so that the status of a team can be shown while it
runs, after it stopped, and from another process.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from actors.research.rules import ResultRow, standing
from actors.shared.cli import format_table
from analysis.files import atomic_write_text

STATUS_KIND = "status"


def write_status(folder: Path, researcher: str, **fields) -> None:
    atomic_write_text(Path(folder) / f"{researcher}.json",
                      json.dumps({"researcher": researcher, "updated": time.time(), **fields}))


def read_statuses(folder: Path) -> list[dict]:
    out = []
    for path in sorted(Path(folder).glob("r*.json"), key=lambda p: (len(p.stem), p.stem)):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def researcher_counts(rows: list[ResultRow]) -> dict[str, dict]:
    """Per researcher: experiments decided, keeps, discards, crashes, runs, best kept val_bpb."""
    out: dict[str, dict] = {}
    for r in rows:
        if not r.researcher:
            continue
        c = out.setdefault(r.researcher, {"experiments": 0, "keep": 0, "discard": 0, "crash": 0, "runs": 0,
                                          "best": None})
        if r.is_run:
            c["runs"] += 1
        if r.is_experiment:
            c["experiments"] += 1
            c[r.status] += 1
            if r.status == "keep" and r.val_bpb is not None and (c["best"] is None or r.val_bpb < c["best"]):
                c["best"] = r.val_bpb
    return out


def status_lines(rows: list[ResultRow], statuses: list[dict], branch: str) -> str:
    """The status of a team: one line on the branch, then one row per researcher."""
    s = standing(rows)
    counts = researcher_counts(rows)
    names = [st["researcher"] for st in statuses] + sorted(set(counts) - {st["researcher"] for st in statuses})
    by_name = {st["researcher"]: st for st in statuses}
    table = []
    for name in names:
        st, c = by_name.get(name, {}), counts.get(name, {})
        best = c.get("best")
        now = st.get("doing", "") if st.get("state") != "stopped" else f"stopped ({st.get('doing', '')})"
        table.append((name, c.get("experiments", 0), c.get("keep", 0), c.get("discard", 0), c.get("crash", 0),
                      c.get("runs", 0), "-" if best is None else f"{best:.4f}", now or "-"))
    head = (f"{branch}: best val_bpb {s.head_bpb:.4f} at {s.head_commit[:10]}" if s.head_bpb is not None
            else f"{branch}: no completed run yet")
    if s.baseline_bpb is not None:
        head += f" (baseline {s.baseline_bpb:.4f}" + (f", noise {s.noise}" if s.noise else "") + ")"
    if s.pending:
        head += f"; {len(s.pending)} undecided"
    return head + "\n" + format_table(("RESEARCHER", "EXPERIMENTS", "KEEP", "DISCARD", "CRASH", "RUNS", "BEST", "NOW"),
                                      table, empty="(no researcher yet)")


def progress_line(rows: list[ResultRow], statuses: list[dict]) -> str:
    """One line for a log: per researcher what it runs now, experiments, keeps/discards, best."""
    s = standing(rows)
    counts = researcher_counts(rows)
    parts = []
    for st in statuses:
        c = counts.get(st["researcher"], {})
        best = c.get("best")
        parts.append(f"{st['researcher']} [{st.get('doing') or st.get('state', '?')}] {c.get('experiments', 0)} exp "
                     f"{c.get('keep', 0)}k/{c.get('discard', 0)}d/{c.get('crash', 0)}c"
                     + (f" best {best:.4f}" if best is not None else ""))
    best = f"best {s.head_bpb:.4f}" if s.head_bpb is not None else "no result yet"
    return f"autoresearch {best}: " + "; ".join(parts or ["starting"])


def plot_progress(rows: list[ResultRow], path: Path, title: str = "") -> None:
    """val_bpb of every run by experiment number, kept experiments marked, the running best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = standing(rows)
    kept_commits = set(s.kept)
    runs = [(r.n, r.val_bpb) for r in rows if r.is_run and r.val_bpb is not None and r.commit not in kept_commits]
    best_runs = [(r.n, r.val_bpb) for r in rows if r.is_run and r.val_bpb is not None and r.commit in kept_commits]
    kept = [(r.n, r.val_bpb) for r in rows if r.status == "keep" and r.kind != "baseline" and r.val_bpb is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=80)
    if runs:
        ax.scatter(*zip(*runs), s=14, color="0.6", label="runs of candidates (every seed)", zorder=2)
    if best_runs:
        ax.scatter(*zip(*best_runs), s=14, color="tab:blue", alpha=0.6, label="runs of kept commits", zorder=2)
    if kept:
        ax.scatter(*zip(*kept), s=70, marker="*", color="tab:green", label="kept", zorder=3)
    steps = [(0, s.baseline_bpb)] if s.baseline_bpb is not None else []
    for r in rows:  # the head's val_bpb after each keep (or backtrack)
        if r.kind != "baseline" and r.status in ("keep", "backtrack") and r.val_bpb is not None:
            steps.append((r.n, r.val_bpb))
    if steps:
        steps.append((max(s.experiments, steps[-1][0]), steps[-1][1]))
    if steps:
        ax.step(*zip(*steps), where="post", color="tab:blue", label="best kept (mean over seeds)", zorder=1)
    ax.set_xlabel("experiment")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("val_bpb")
    ax.set_title(title or "AutoResearch progress")
    ax.grid(alpha=0.3)
    if runs or best_runs:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
