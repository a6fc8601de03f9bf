"""Small plotting helpers shared by the reports: figures that need no display.

Figures are built with matplotlib's object-oriented API on the Agg canvas, so
importing this module never touches pyplot's global state or needs a display
(it works the same in a Ray worker, a test and on a headless cluster node).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.files import atomic_write_bytes


def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6.0, 4.5)):
    """A figure and its axes (a single Axes when ncols == nrows == 1)."""
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=True)
    return fig, axes


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write `fig` as PNG (or whatever the suffix says) atomically and return
    the path: rendered in memory, then written with analysis.files, so a reader
    never sees half an image."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def group_by_x(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct x values with the mean, standard deviation (ddof=1, 0 for one
    point) and count of the y values measured at each."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xs = np.unique(x)
    means = np.array([y[x == v].mean() for v in xs])
    stds = np.array([y[x == v].std(ddof=1) if (x == v).sum() > 1 else 0.0 for v in xs])
    counts = np.array([(x == v).sum() for v in xs])
    return xs, means, stds, counts


def tidy_log_axis(ax, axis: str = "y") -> None:
    """Plain-number tick labels on a log axis that spans less than two decades
    (matplotlib would label it 2x10^0, 3x10^0, ... or not at all)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    if lo <= 0 or hi / lo >= 100:
        return
    target = ax.yaxis if axis == "y" else ax.xaxis
    subs = (1.0, 2.0, 5.0) if hi / lo >= 10 else (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def loglog_points_and_fit(ax, x, y, *, yerr=None, x_fit=None, y_fit=None, band=None, point_label="measured",
                          fit_label="fit", color="C0", raw_points: bool = True) -> None:
    """Measured points (with error bars) and a fitted curve on log-log axes.

    Repeated x values are summarised as mean +- standard deviation; the single
    measurements are drawn faintly behind them when `raw_points`. `band` is an
    optional (low, high) pair of arrays over `x_fit`, drawn as a shaded interval.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if yerr is None and len(np.unique(x)) < len(x):
        if raw_points:
            ax.scatter(x, y, s=12, color=color, alpha=0.35, zorder=2)
        xs, means, stds, _ = group_by_x(x, y)
        ax.errorbar(xs, means, yerr=stds, fmt="o", color=color, capsize=4, label=f"{point_label} (mean ± sd)",
                    zorder=3)
    else:
        ax.errorbar(x, y, yerr=None if yerr is None else np.asarray(yerr, float), fmt="o", color=color,
                    capsize=4, label=point_label, zorder=3)
    if x_fit is not None and y_fit is not None:
        if band is not None:
            ax.fill_between(x_fit, band[0], band[1], color=color, alpha=0.15, linewidth=0, label="bootstrap band")
        ax.plot(x_fit, y_fit, "-", color="C3", label=fit_label, zorder=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    tidy_log_axis(ax, "x")
    tidy_log_axis(ax, "y")
