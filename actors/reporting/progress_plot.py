"""The research progress plot: val_bpb per run, the kept ones marked, the running best."""

from __future__ import annotations

from pathlib import Path

from actors.reporting.research import ResearchRow
from analysis.files import atomic_write_bytes


def plot_progress(rows: list[ResearchRow], path: Path, title: str = "") -> Path | None:
    """Write the PNG to `path` (atomically: the page may be open while --watch
    rewrites it); None when no row has a val_bpb to plot."""
    import io

    from analysis.plots import new_figure

    runs = [r for r in rows if r.status != "backtrack"]
    measured = [(i, r) for i, r in enumerate(runs, start=1) if r.val_bpb is not None]
    if not measured:
        return None
    fig, ax = new_figure(size=(8.0, 4.0))
    # Marker by outcome; with several researchers, colour by researcher.
    researchers = sorted({r.researcher for _, r in measured if r.researcher and not r.is_baseline})
    colours = {name: f"C{k % 10}" for k, name in enumerate(researchers)}
    styles = {  # outcome -> (label, marker, colour when one researcher, size)
        "baseline": ("baseline run", "s", "0.35", 40),
        "discard": ("discarded", "o", "0.65", 30),
        "keep": ("kept", "*", "C2", 160),
    }
    for status, (label, marker, colour, size) in styles.items():
        pts = [(i, r) for i, r in measured if (r.is_baseline if status == "baseline" else
                                               (r.status == status and not r.is_baseline))]
        if not pts:
            continue
        fill = [colour if status == "baseline" or not colours else colours.get(r.researcher, "0.5") for _, r in pts]
        edge = {"edgecolors": "black" if status == "keep" else "none", "linewidths": 0.5}
        ax.scatter([i for i, _ in pts], [r.val_bpb for _, r in pts], marker=marker, c=fill, s=size, zorder=3,
                   label=None if colours else label, **edge)
        if colours:  # the outcome's legend entry in its own colour, not a researcher's
            ax.scatter([], [], marker=marker, color=colour, s=size, label=label, **edge)
    for name, colour in colours.items():  # legend entries for the colours
        ax.scatter([], [], marker="o", color=colour, s=30, label=f"researcher {name}")
    # The running best as the loop sees it: the mean of the baseline runs (one
    # baseline run alone is not the baseline), then every keep that beats it.
    base = [r.val_bpb for _, r in measured if r.is_baseline]
    best = sum(base) / len(base) if base else None
    start = max((i for i, r in measured if r.is_baseline), default=0)
    xs, ys = ([start], [best]) if best is not None else ([], [])
    for i, r in measured:
        if i > start and r.status == "keep" and not r.is_baseline:
            best = r.val_bpb if best is None else min(best, r.val_bpb)
            xs.append(i)
            ys.append(best)
    if base:
        ax.axhline(sum(base) / len(base), color="0.4", linestyle=":", linewidth=1, label="baseline mean", zorder=1)
    if xs and len(runs) > xs[0]:
        xs.append(len(runs))
        ys.append(ys[-1])
        ax.step(xs, ys, where="post", color="C3", linewidth=1.5, zorder=2, label="running best")
    crashes = [i for i, r in enumerate(runs, start=1) if r.status == "crash"]
    if crashes:
        top = max(r.val_bpb for _, r in measured)
        ax.scatter(crashes, [top] * len(crashes), marker="x", color="C3", s=50, label="crashed (no val_bpb)",
                   zorder=3)
    ax.set_xlabel("run (in results.tsv order)")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.set_title(title or "AutoResearch progress", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(path, buf.getvalue())
