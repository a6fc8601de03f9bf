"""L(N, D) = E + A / N^alpha + B / D^beta, fitted as Hoffmann et al. (2022),
Approach 3: the Huber loss (delta 1e-3) between log L and the log-sum-exp form
LSE(a - alpha log N, b - beta log D, e), with A = exp(a), B = exp(b), E = exp(e),
minimised with L-BFGS from a grid of starting points (their grid). Intervals:
pairs bootstrap (resample the (N, D, L) points), each refit started from the
full-data optimum, as Epoch did.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

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

# Hoffmann et al. 2022, Appendix D.2: the grid of initialisations for L-BFGS.
HOFFMANN_GRID = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}



class JointLawFit(FitResult):
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
    N, D, L = as_positive("N", N), as_positive("D", D), as_positive("loss", loss)
    if not N.size == D.size == L.size:
        raise FitError(f"N, D and loss must have the same length, got {N.size}, {D.size} and {L.size}")
    if N.size < 6:
        raise FitError(f"the joint law has 5 parameters and needs at least 6 points, got {N.size}")
    if delta <= 0:
        raise FitError(f"the Huber delta must be positive, got {delta}")
    check_confidence(confidence)
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
    intervals = percentile_intervals(S, names, confidence)
    stderr = {n: (float(np.std(S[:, i], ddof=1)) if len(S) > 1 else None) for i, n in enumerate(names)}
    E, A, B, alpha, beta = natural(theta)[0]
    pred = np.log(E + A / N**alpha + B / D**beta)
    return JointLawFit(
        E=E, A=A, B=B, alpha=alpha, beta=beta, huber_delta=delta, objective=float(best.fun) * delta,
        r2=r2_score(lL, pred), rmse_log=float(np.sqrt(np.mean((lL - pred) ** 2))), intervals=intervals, stderr=stderr,
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
