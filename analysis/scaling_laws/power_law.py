"""y = a * x^-b (+ c): least squares on log y, with bootstrap intervals.

Fitting in log space minimises squared *relative* errors, which is what a
straight line on a log-log plot means. R^2 (`r2`) is measured in that same
space; `r2_linear` is the R^2 of y itself. Intervals: by default a residual
bootstrap (the x values are kept, log residuals are resampled with the usual
sqrt(n / (n - p)) inflation), which works with as few as p + 1 points;
`bootstrap="pairs"` resamples points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import PrivateAttr
from scipy.optimize import least_squares

from analysis.scaling_laws.common import (
    FitError,
    FitResult,
    Interval,
    as_positive,
    check_confidence,
    percentile_intervals,
    r2_score,
    single_threaded_blas,
)


class PowerLawFit(FitResult):
    """y = a * x**-b (+ c). Intervals are percentile bootstrap intervals."""

    law: str = "y = a * x^-b"
    a: float
    b: float
    c: float | None = None  # None: fitted without an offset
    r2: float  # R^2 of log y (the space of the fit)
    r2_linear: float  # R^2 of y
    rmse_log: float  # root mean square of the log residuals
    intervals: dict[str, Interval | None]
    stderr: dict[str, float | None]
    confidence: float
    bootstrap: str
    n_bootstrap: int  # resamples asked for
    n_bootstrap_ok: int  # resamples that gave a fit
    n_points: int
    x: list[float]
    y: list[float]
    yerr: list[float] | None = None

    _samples: np.ndarray | None = PrivateAttr(default=None)

    @property
    def params(self) -> dict[str, float]:
        out = {"a": self.a, "b": self.b}
        if self.c is not None:
            out["c"] = self.c
        return out

    @property
    def slope(self) -> float:
        """The line's slope on a log-log plot, d log y / d log x = -b (without an
        offset): positive where y grows with x, e.g. samples with the GPUs."""
        return -self.b

    @property
    def slope_interval(self) -> Interval | None:
        iv = self.intervals.get("b")
        return None if iv is None else (-iv[1], -iv[0])

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return self.a * x ** (-self.b) + (self.c or 0.0)

    def summary(self) -> str:
        def fmt(name):
            v = getattr(self, name)
            iv = self.intervals.get(name)
            return f"{name} = {v:.4g}" + (f" [{iv[0]:.4g}, {iv[1]:.4g}]" if iv else "")

        names = ["a", "b"] + (["c"] if self.c is not None else [])
        return f"{self.law}: " + ", ".join(fmt(n) for n in names) + f"; R^2 (log) = {self.r2:.4f}, n = {self.n_points}"

    def plot(self, path: str | Path | None = None, ax=None, *, title: str | None = None, xlabel: str = "x",
             ylabel: str = "y"):
        """Log-log plot: the points (mean +- sd where x repeats, or `yerr`), the fitted
        line and, when the bootstrap samples are at hand, the bootstrap band.
        Returns the Figure; writes it to `path` when given."""
        from analysis.plots import loglog_points_and_fit, new_figure, save_figure

        fig = None
        if ax is None:
            fig, ax = new_figure()
        x = np.asarray(self.x)
        lo, hi = np.log10(x.min()), np.log10(x.max())
        pad = 0.05 * max(hi - lo, 0.5)
        x_fit = np.logspace(lo - pad, hi + pad, 200)
        band = None
        if self._samples is not None and len(self._samples) >= 10:
            s = self._samples
            curves = s[:, :1] * x_fit[None, :] ** (-s[:, 1:2]) + (s[:, 2:3] if s.shape[1] > 2 else 0.0)
            q = (100 * (1 - self.confidence) / 2, 100 * (1 + self.confidence) / 2)
            band = tuple(np.percentile(curves, q, axis=0))
        iv = self.intervals.get("b")
        label = f"fit: b = {self.b:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "") + f", R² = {self.r2:.3f}"
        loglog_points_and_fit(ax, self.x, self.y, yerr=self.yerr, x_fit=x_fit, y_fit=self.predict(x_fit), band=band,
                              fit_label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title or self.law)
        fig = fig or ax.figure
        if path is not None:
            save_figure(fig, path)
        return fig


def _loglinear(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float]:
    """(log a, b) of the least-squares line log y = log a - b log x."""
    X = np.column_stack([np.ones_like(lx), -lx])
    coef, *_ = np.linalg.lstsq(X, ly, rcond=None)
    return float(coef[0]), float(coef[1])


def _offset_fit(x: np.ndarray, y: np.ndarray, start: np.ndarray | None = None) -> tuple[np.ndarray, float] | None:
    """(log a, b, c) minimising sum (log(a x^-b + c) - log y)^2 with c >= 0, and the cost."""
    lx, ly = np.log(x), np.log(y)

    def resid(t):
        return np.log(np.exp(t[0] - t[1] * lx) + t[2]) - ly

    def jac(t):
        p = np.exp(t[0] - t[1] * lx)
        m = p + t[2]
        return np.column_stack([p / m, -p * lx / m, 1.0 / m])

    starts = []
    if start is not None:
        starts.append(np.asarray(start, float))
    else:
        for frac in (0.0, 0.3, 0.6, 0.9):
            c0 = frac * y.min()
            la, b = _loglinear(lx, np.log(y - c0))
            starts.append(np.array([la, b, c0]))
    best = None
    for t0 in starts:
        try:
            r = least_squares(resid, t0, jac=jac, bounds=([-np.inf, -np.inf, 0.0], [np.inf, np.inf, np.inf]),
                              method="trf", x_scale="jac", max_nfev=2000)
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(r.x)) and (best is None or r.cost < best[1]):
            best = (r.x, float(r.cost))
    return best


def fit_power_law(x: Sequence[float], y: Sequence[float], *, offset: bool = False, yerr: Sequence[float] | None = None,
                  n_bootstrap: int = 1000, confidence: float = 0.95, bootstrap: Literal["residual", "pairs"] = "residual",
                  seed: int = 0) -> PowerLawFit:
    """Fit y = a * x**-b (or a * x**-b + c with `offset`) by least squares on log y.

    x may repeat (several seeds per x). `yerr` is only drawn as error bars; the fit
    is unweighted. Returns a PowerLawFit with R^2 and percentile bootstrap intervals
    for every parameter (None where there are no more points than parameters).
    """
    with single_threaded_blas():
        return _fit_power_law(x, y, offset=offset, yerr=yerr, n_bootstrap=n_bootstrap, confidence=confidence,
                              bootstrap=bootstrap, seed=seed)


def _fit_power_law(x, y, *, offset, yerr, n_bootstrap, confidence, bootstrap, seed) -> PowerLawFit:
    x, y = as_positive("x", x), as_positive("y", y)
    if x.shape != y.shape:
        raise FitError(f"x and y must have the same length, got {x.size} and {y.size}")
    if yerr is not None:
        yerr = np.asarray(yerr, dtype=float).ravel()
        if yerr.shape != y.shape:
            raise FitError(f"yerr must have the length of y ({y.size}), got {yerr.size}")
    check_confidence(confidence)
    if bootstrap not in ("residual", "pairs"):
        raise FitError(f"bootstrap must be 'residual' or 'pairs', got {bootstrap!r}")
    p = 3 if offset else 2
    if np.unique(x).size < 2:
        raise FitError("a power law needs at least 2 distinct x values")
    if x.size < p:
        raise FitError(f"a power law{' with an offset' if offset else ''} needs at least {p} points, got {x.size}")
    lx, ly = np.log(x), np.log(y)
    rng = np.random.default_rng(seed)

    if offset:
        found = _offset_fit(x, y)
        if found is None:
            raise FitError("the offset power law did not converge on this data")
        theta = found[0]
        a, b, c = math.exp(theta[0]), float(theta[1]), float(theta[2])
    else:
        la, b = _loglinear(lx, ly)
        theta = np.array([la, b])
        a, c = math.exp(la), None

    pred_log = np.log(a * x ** (-b) + (c or 0.0))
    resid = ly - pred_log
    samples = _bootstrap_power_law(x, y, lx, pred_log, resid, theta, offset, n_bootstrap, bootstrap, rng)
    names = ["a", "b", "c"] if offset else ["a", "b"]
    intervals = percentile_intervals(samples, names, confidence) if samples is not None else {n: None for n in names}
    stderr = ({n: float(np.std(samples[:, i], ddof=1)) for i, n in enumerate(names)}
              if samples is not None and len(samples) > 1 else {n: None for n in names})
    fit = PowerLawFit(
        law="y = a * x^-b + c" if offset else "y = a * x^-b",
        a=a, b=b, c=c,
        r2=r2_score(ly, pred_log), r2_linear=r2_score(y, np.exp(pred_log)),
        rmse_log=float(np.sqrt(np.mean(resid**2))),
        intervals=intervals, stderr=stderr, confidence=confidence, bootstrap=bootstrap,
        n_bootstrap=n_bootstrap, n_bootstrap_ok=0 if samples is None else len(samples),
        n_points=int(x.size), x=x.tolist(), y=y.tolist(), yerr=None if yerr is None else yerr.tolist(),
    )
    fit._samples = samples
    return fit


def _bootstrap_power_law(x, y, lx, pred_log, resid, theta, offset, n_boot, method, rng) -> np.ndarray | None:
    """Bootstrap samples of (a, b[, c]); None when there is nothing to resample."""
    n, p = x.size, theta.size
    if n_boot <= 0 or n <= p:
        return None
    if method == "residual":
        r = (resid - resid.mean()) * math.sqrt(n / (n - p))
        ly_star = pred_log[None, :] + r[rng.integers(0, n, size=(n_boot, n))]
        if not offset:
            X = np.column_stack([np.ones_like(lx), -lx])
            coef = np.linalg.pinv(X) @ ly_star.T  # (2, n_boot): one solve for every resample
            return np.column_stack([np.exp(coef[0]), coef[1]])
        out = []
        for row in ly_star:
            found = _offset_fit(x, np.exp(row), start=theta)
            if found is not None:
                t = found[0]
                out.append((math.exp(t[0]), t[1], t[2]))
        return np.array(out) if out else None
    out = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        if np.unique(x[idx]).size < 2 or (offset and np.unique(x[idx]).size < 3):
            continue  # a resample on fewer distinct x values cannot pin the law down
        if offset:
            found = _offset_fit(x[idx], y[idx], start=theta)
            if found is not None:
                t = found[0]
                out.append((math.exp(t[0]), t[1], t[2]))
        else:
            la, b = _loglinear(lx[idx], np.log(y[idx]))
            out.append((math.exp(la), b))
    return np.array(out) if out else None
