"""Scaling-law fits with honest uncertainty.

    fit = fit_power_law(x, y)                    # y = a * x**-b           (log-space least squares)
    fit = fit_power_law(x, y, offset=True)       # y = a * x**-b + c
    fit.b, fit.intervals["b"], fit.r2            # exponent, bootstrap interval, R^2 of log y
    fit.to_json("fit.json"); fit.plot("fit.png")

    joint = fit_joint_law(N, D, loss)            # L = E + A / N**alpha + B / D**beta
    joint.alpha, joint.intervals["alpha"], joint.optimal_allocation(1e21)

`fit_power_law` fits in log space, i.e. it minimises squared *relative* errors,
which is what a straight line on a log-log plot means. R^2 (`r2`) is measured
in that same space; `r2_linear` is the R^2 of y itself.

`fit_joint_law` follows Hoffmann et al. (2022), Approach 3: the Huber loss
(delta 1e-3) between log L and the log-sum-exp form
LSE(a - alpha log N, b - beta log D, e), with A = exp(a), B = exp(b), E = exp(e),
minimised with L-BFGS from a grid of starting points (their grid). On the 240
points of the Epoch AI extraction of Figure 4 (the five highest losses dropped)
it gives alpha 0.347, beta 0.367, E 1.817, A 478, B 2143, matching Epoch's
replication (Besiroglu et al. 2024: 0.348, 0.366, 1.82, 482, 2085).

Confidence intervals are percentile bootstrap intervals (default 95%):
- power laws: by default a residual bootstrap (the x values are kept, log
  residuals are resampled with the usual sqrt(n / (n - p)) inflation), which
  works with as few as p + 1 points; `bootstrap="pairs"` resamples points.
- joint law: pairs bootstrap (resample the (N, D, L) points), each refit started
  from the full-data optimum, as Epoch did.
With no more points than parameters there is nothing to bootstrap and the
intervals are None.

This module imports nothing else from the project.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import itertools
import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr
from scipy.optimize import least_squares, minimize

logger = logging.getLogger(__name__)

Interval = tuple[float, float]

# Hoffmann et al. 2022, Appendix D.2: the grid of initialisations for L-BFGS.
HOFFMANN_GRID = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}


class FitError(ValueError):
    """The data cannot be fitted (too few points, non-positive values, ...)."""


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------


def _loaded_openblas() -> list[tuple[Any, Any]]:
    """(get_num_threads, set_num_threads) of every OpenBLAS loaded in this process
    (numpy's and scipy's wheels each bring one, with suffixed symbol names). Linux
    only; elsewhere []."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return found
    for path in sorted(p for p in paths if p.startswith("/")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for base in ("scipy_openblas", "openblas"):
            for suffix in ("", "64_"):
                get, set_ = f"{base}_get_num_threads{suffix}", f"{base}_set_num_threads{suffix}"
                if hasattr(lib, get) and hasattr(lib, set_):
                    found.append((getattr(lib, get), getattr(lib, set_)))
                    break
            else:
                continue
            break
    return found


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run OpenBLAS on one thread inside the block. L-BFGS-B makes thousands of
    BLAS calls on 5-vectors; with OpenBLAS's default thread pool these spin and,
    on a busy machine, cost 10-30x more CPU than the fit itself. Best effort: a
    no-op where no OpenBLAS can be found."""
    saved = []
    for get, set_ in _loaded_openblas():
        n = int(get())
        set_(1)
        saved.append((set_, n))
    try:
        yield
    finally:
        for set_, n in saved:
            set_(n)


def _as_positive(name: str, values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise FitError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise FitError(f"{name} holds a non-finite value (NaN or inf)")
    if np.any(arr <= 0):
        raise FitError(f"{name} must be positive for a fit in log space; smallest value is {arr.min():g}")
    return arr


def _percentile_intervals(samples: np.ndarray, names: Sequence[str], confidence: float) -> dict[str, Interval | None]:
    if samples.shape[0] < 2:
        return {n: None for n in names}
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    q = np.percentile(samples, [lo, hi], axis=0)
    return {n: (float(q[0, i]), float(q[1, i])) for i, n in enumerate(names)}


def _r2(observed: np.ndarray, predicted: np.ndarray) -> float:
    ss_tot = float(np.sum((observed - observed.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - float(np.sum((observed - predicted) ** 2)) / ss_tot


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise FitError(f"confidence must be in (0, 1), got {confidence}")


class _FitResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        """The fit as JSON (NaN written as null); also written to `path` when given."""
        text = json.dumps(_nan_to_none(self.to_dict()), indent=indent)
        if path is not None:
            path = Path(path)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text + "\n")
            tmp.replace(path)
        return text

    def covers(self, **truth: float) -> bool:
        """True when every given parameter's interval contains the given value."""
        for name, value in truth.items():
            iv = self.intervals.get(name)
            if iv is None or not iv[0] <= value <= iv[1]:
                return False
        return True

    @classmethod
    def from_json(cls, text_or_path: str | Path):
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.model_validate(json.loads(text))


def _nan_to_none(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------
# y = a * x^-b (+ c)
# ---------------------------------------------------------------------------


class PowerLawFit(_FitResult):
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
    x, y = _as_positive("x", x), _as_positive("y", y)
    if x.shape != y.shape:
        raise FitError(f"x and y must have the same length, got {x.size} and {y.size}")
    if yerr is not None:
        yerr = np.asarray(yerr, dtype=float).ravel()
        if yerr.shape != y.shape:
            raise FitError(f"yerr must have the length of y ({y.size}), got {yerr.size}")
    _check_confidence(confidence)
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
    intervals = _percentile_intervals(samples, names, confidence) if samples is not None else {n: None for n in names}
    stderr = ({n: float(np.std(samples[:, i], ddof=1)) for i, n in enumerate(names)}
              if samples is not None and len(samples) > 1 else {n: None for n in names})
    fit = PowerLawFit(
        law="y = a * x^-b + c" if offset else "y = a * x^-b",
        a=a, b=b, c=c,
        r2=_r2(ly, pred_log), r2_linear=_r2(y, np.exp(pred_log)),
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


# ---------------------------------------------------------------------------
# L(N, D) = E + A / N^alpha + B / D^beta   (Hoffmann et al. 2022, Approach 3)
# ---------------------------------------------------------------------------


class JointLawFit(_FitResult):
    """L(N, D) = E + A / N**alpha + B / D**beta, fitted as in Hoffmann et al. Approach 3."""

    law: str = "L(N, D) = E + A / N^alpha + B / D^beta"
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    huber_delta: float
    objective: float  # sum of Huber losses at the optimum
    r2: float  # R^2 of log L
    rmse_log: float
    intervals: dict[str, Interval | None]
    stderr: dict[str, float | None]
    confidence: float
    n_bootstrap: int
    n_bootstrap_ok: int
    n_starts: int  # L-BFGS runs from the grid
    n_points: int
    N: list[float]
    D: list[float]
    loss: list[float]
    loss_err: list[float] | None = None

    def predict(self, N, D) -> np.ndarray:
        N, D = np.asarray(N, float), np.asarray(D, float)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    def optimal_allocation(self, compute_flops) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) minimising the fitted loss at C = 6 N D FLOPs
        (Hoffmann et al. eq. 4)."""
        C = np.asarray(compute_flops, float)
        a, b = self.alpha, self.beta
        G = (a * self.A / (b * self.B)) ** (1.0 / (a + b))
        return G * (C / 6.0) ** (b / (a + b)), (1.0 / G) * (C / 6.0) ** (a / (a + b))

    def summary(self) -> str:
        parts = []
        for name in ("E", "A", "B", "alpha", "beta"):
            iv = self.intervals.get(name)
            parts.append(f"{name} = {getattr(self, name):.4g}" + (f" [{iv[0]:.4g}, {iv[1]:.4g}]" if iv else ""))
        return f"{self.law}: " + ", ".join(parts) + f"; R^2 (log) = {self.r2:.4f}, n = {self.n_points}"

    def plot(self, path: str | Path | None = None, *, title: str | None = None, n_groups: int = 6):
        """Left: loss against tokens on log-log axes, points coloured by model size,
        the fitted curve for each size group (at the group's median N). Right:
        fitted against measured loss. Returns the Figure; writes it to `path`."""
        from matplotlib import colormaps

        from analysis.plots import new_figure, save_figure, tidy_log_axis

        fig, (ax, ax2) = new_figure(ncols=2)
        N, D, L = np.asarray(self.N), np.asarray(self.D), np.asarray(self.loss)
        err = None if self.loss_err is None else np.asarray(self.loss_err)
        edges = np.quantile(np.log(N), np.linspace(0, 1, min(n_groups, len(np.unique(N))) + 1))
        group = np.clip(np.searchsorted(edges, np.log(N), side="right") - 1, 0, len(edges) - 2)
        cmap = colormaps["viridis"]
        d_line = np.logspace(np.log10(D.min()) - 0.1, np.log10(D.max()) + 0.1, 200)
        for g in np.unique(group):
            m = group == g
            color = cmap(g / max(len(edges) - 2, 1))
            n_med = float(np.median(N[m]))
            ax.errorbar(D[m], L[m], yerr=None if err is None else err[m], fmt="o", ms=3, color=color, alpha=0.8)
            ax.plot(d_line, self.predict(n_med, d_line), "-", color=color, label=f"N ≈ {n_med:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens D")
        ax.set_ylabel("loss")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, title="fit at model size", title_fontsize=7)
        pred = self.predict(N, D)
        ax2.errorbar(pred, L, yerr=err, fmt="o", ms=3, alpha=0.7)
        lim = [min(pred.min(), L.min()), max(pred.max(), L.max())]
        ax2.plot(lim, lim, "k--", lw=1)
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("fitted loss")
        ax2.set_ylabel("measured loss")
        ax2.set_title(f"R² (log) = {self.r2:.3f}")
        ax2.grid(True, which="both", alpha=0.3)
        for a_, which in ((ax, "y"), (ax2, "x"), (ax2, "y")):
            tidy_log_axis(a_, which)
        ax.set_title(title or f"E={self.E:.3g}, A={self.A:.3g}, B={self.B:.3g}, α={self.alpha:.3f}, β={self.beta:.3f}",
                     fontsize=9)
        if path is not None:
            save_figure(fig, path)
        return fig


def _lse_huber(theta: np.ndarray, lN: np.ndarray, lD: np.ndarray, lL: np.ndarray, delta: float):
    """Sum of Huber(LSE(a - alpha lN, b - beta lD, e) - log L) divided by delta, and
    its gradient in theta = (a, b, e, alpha, beta). Dividing by delta keeps the
    objective near the sum of |residuals|, so L-BFGS's tolerances mean something."""
    a, b, e, alpha, beta = theta
    T = np.stack([a - alpha * lN, b - beta * lD, np.full_like(lN, e)])
    m = T.max(axis=0)
    W = np.exp(T - m)
    S = W.sum(axis=0)
    pred = m + np.log(S)
    W /= S
    r = pred - lL
    ar = np.abs(r)
    h = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
    psi = np.clip(r, -delta, delta)
    grad = np.array([
        (psi * W[0]).sum(), (psi * W[1]).sum(), (psi * W[2]).sum(),
        -(psi * W[0] * lN).sum(), -(psi * W[1] * lD).sum(),
    ])
    return float(h.sum()) / delta, grad / delta


def _grid_objectives(grid: np.ndarray, lN, lD, lL, delta) -> np.ndarray:
    out = np.empty(len(grid))
    for i in range(0, len(grid), 512):  # vectorised in chunks: (chunk, points)
        g = grid[i:i + 512]
        T = np.stack([g[:, 0:1] - g[:, 3:4] * lN, g[:, 1:2] - g[:, 4:5] * lD, np.broadcast_to(g[:, 2:3], (len(g), lN.size))])
        pred = np.logaddexp(np.logaddexp(T[0], T[1]), T[2])
        ar = np.abs(pred - lL)
        out[i:i + 512] = np.where(ar <= delta, 0.5 * ar * ar, delta * (ar - 0.5 * delta)).sum(axis=1) / delta
    return out


_LBFGS_OPTIONS = {"maxiter": 10_000, "ftol": 1e-14, "gtol": 1e-10}


def _lbfgs(theta0, lN, lD, lL, delta):
    return minimize(_lse_huber, theta0, args=(lN, lD, lL, delta), jac=True, method="L-BFGS-B", options=_LBFGS_OPTIONS)


def fit_joint_law(N: Sequence[float], D: Sequence[float], loss: Sequence[float], *, delta: float = 1e-3,
                  grid: dict[str, Sequence[float]] | None = None, n_starts: int | None = 32, n_bootstrap: int = 200,
                  confidence: float = 0.95, seed: int = 0, loss_err: Sequence[float] | None = None) -> JointLawFit:
    """Fit L(N, D) = E + A / N**alpha + B / D**beta as Hoffmann et al. (2022), Approach 3.

    Every point of `grid` (default: Hoffmann's 4500 initialisations over a, b, e,
    alpha, beta) is scored; L-BFGS runs from the `n_starts` best of them (None: from
    every one, Hoffmann's exact procedure, ~45 s on 240 points) and the lowest
    optimum wins. Intervals: pairs bootstrap with `n_bootstrap` resamples.
    """
    with single_threaded_blas():
        return _fit_joint_law(N, D, loss, delta=delta, grid=grid, n_starts=n_starts, n_bootstrap=n_bootstrap,
                              confidence=confidence, seed=seed, loss_err=loss_err)


def _fit_joint_law(N, D, loss, *, delta, grid, n_starts, n_bootstrap, confidence, seed, loss_err) -> JointLawFit:
    N, D, L = _as_positive("N", N), _as_positive("D", D), _as_positive("loss", loss)
    if not N.size == D.size == L.size:
        raise FitError(f"N, D and loss must have the same length, got {N.size}, {D.size} and {L.size}")
    if N.size < 6:
        raise FitError(f"the joint law has 5 parameters and needs at least 6 points, got {N.size}")
    if delta <= 0:
        raise FitError(f"the Huber delta must be positive, got {delta}")
    _check_confidence(confidence)
    grid = grid or HOFFMANN_GRID
    missing = {"a", "b", "e", "alpha", "beta"} - set(grid)
    if missing:
        raise FitError(f"grid lacks starting values for {', '.join(sorted(missing))}")
    starts = np.array(list(itertools.product(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"])), float)
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    if n_starts is not None and n_starts < len(starts):
        starts = starts[np.argsort(_grid_objectives(starts, lN, lD, lL, delta))[: max(n_starts, 1)]]
    best = None
    for t0 in starts:
        r = _lbfgs(t0, lN, lD, lL, delta)
        if np.all(np.isfinite(r.x)) and (best is None or r.fun < best.fun):
            best = r
    if best is None:
        raise FitError("L-BFGS found no finite optimum from any starting point")
    theta = best.x

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(max(n_bootstrap, 0)):
        idx = rng.integers(0, N.size, size=N.size)
        r = _lbfgs(theta, lN[idx], lD[idx], lL[idx], delta)
        if np.all(np.isfinite(r.x)):
            samples.append(r.x)
    names = ["E", "A", "B", "alpha", "beta"]

    def natural(t):  # (a, b, e, alpha, beta) -> (E, A, B, alpha, beta)
        t = np.atleast_2d(t)
        return np.column_stack([np.exp(t[:, 2]), np.exp(t[:, 0]), np.exp(t[:, 1]), t[:, 3], t[:, 4]])

    S = natural(np.array(samples)) if samples else np.empty((0, 5))
    intervals = _percentile_intervals(S, names, confidence)
    stderr = {n: (float(np.std(S[:, i], ddof=1)) if len(S) > 1 else None) for i, n in enumerate(names)}
    E, A, B, alpha, beta = natural(theta)[0]
    pred = np.log(E + A / N**alpha + B / D**beta)
    return JointLawFit(
        E=E, A=A, B=B, alpha=alpha, beta=beta, huber_delta=delta, objective=float(best.fun) * delta,
        r2=_r2(lL, pred), rmse_log=float(np.sqrt(np.mean((lL - pred) ** 2))), intervals=intervals, stderr=stderr,
        confidence=confidence, n_bootstrap=n_bootstrap, n_bootstrap_ok=len(samples), n_starts=len(starts),
        n_points=int(N.size), N=N.tolist(), D=D.tolist(), loss=L.tolist(),
        loss_err=None if loss_err is None else np.asarray(loss_err, float).ravel().tolist(),
    )


def load_epoch_chinchilla(path: str | Path, drop_highest_loss: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, loss) from Epoch AI's extraction of Chinchilla's Figure 4 (columns
    `Model Size`, `Training FLOP`, `loss`), tokens D = FLOP / (6 N), without the
    `drop_highest_loss` points of highest loss (Epoch dropped five)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"Model Size", "Training FLOP", "loss"}
    if not rows or not need <= set(rows[0]):
        raise FitError(f"{path} must have the columns {', '.join(sorted(need))}")
    N = np.array([float(r["Model Size"]) for r in rows])
    F = np.array([float(r["Training FLOP"]) for r in rows])
    L = np.array([float(r["loss"]) for r in rows])
    keep = np.sort(np.argsort(L, kind="stable")[: len(L) - drop_highest_loss]) if drop_highest_loss > 0 else np.arange(len(L))
    N, F, L = N[keep], F[keep], L[keep]
    return N, F / (6.0 * N), L
