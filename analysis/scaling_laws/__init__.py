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

The package: `common` (the fit result, intervals, checks), `power_law`,
`joint_law`. It imports nothing of the project outside `analysis`.
"""

from __future__ import annotations

from analysis.scaling_laws.common import FitError, FitResult, Interval, single_threaded_blas
from analysis.scaling_laws.joint_law import HOFFMANN_GRID, JointLawFit, fit_joint_law, load_epoch_chinchilla
from analysis.scaling_laws.power_law import PowerLawFit, fit_power_law

__all__ = [
    "HOFFMANN_GRID", "FitError", "FitResult", "Interval", "JointLawFit", "PowerLawFit",
    "fit_joint_law", "fit_power_law", "load_epoch_chinchilla", "single_threaded_blas",
]
