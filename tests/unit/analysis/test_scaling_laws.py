"""The scaling-law fits: a published table, known exponents, honest intervals."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from analysis.scaling_laws import (
    FitError,
    JointLawFit,
    PowerLawFit,
    fit_joint_law,
    fit_power_law,
    load_epoch_chinchilla,
)

CHINCHILLA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "chinchilla_fig4_epoch.csv"

# Besiroglu et al. (2024), "Chinchilla Scaling: A replication attempt", fit to their
# extraction of Hoffmann et al. Figure 4 without the five highest-loss points.
EPOCH = {"alpha": 0.348, "beta": 0.366, "E": 1.82, "A": 482.0, "B": 2085.0}


@pytest.fixture(scope="module")
def chinchilla_fit():
    if not CHINCHILLA.is_file():
        pytest.skip(f"Epoch's Chinchilla Figure 4 table is not at {CHINCHILLA}")
    N, D, L = load_epoch_chinchilla(CHINCHILLA, drop_highest_loss=5)
    return fit_joint_law(N, D, L, n_bootstrap=100, seed=0)


def test_joint_law_matches_epochs_replication_of_chinchilla(chinchilla_fit):
    fit = chinchilla_fit
    assert fit.n_points == 240  # 245 extracted points, the five highest losses dropped
    assert abs(fit.alpha - EPOCH["alpha"]) <= 0.01
    assert abs(fit.beta - EPOCH["beta"]) <= 0.01
    assert abs(fit.E - EPOCH["E"]) <= 0.02
    assert fit.A == pytest.approx(EPOCH["A"], rel=0.05)
    assert fit.B == pytest.approx(EPOCH["B"], rel=0.05)
    # The intervals are real bootstrap intervals around the estimate.
    assert fit.n_bootstrap_ok == 100
    for name in ("E", "A", "B", "alpha", "beta"):
        lo, hi = fit.intervals[name]
        assert lo < getattr(fit, name) < hi
    assert fit.r2 > 0.98


def test_joint_law_fit_round_trips_through_json_and_plots_itself(chinchilla_fit, tmp_path):
    path = tmp_path / "fit.json"
    chinchilla_fit.to_json(path)
    again = JointLawFit.from_json(path)
    assert again.alpha == chinchilla_fit.alpha and again.intervals["beta"] == chinchilla_fit.intervals["beta"]
    assert np.allclose(again.predict([1e9], [2e10]), chinchilla_fit.predict([1e9], [2e10]))
    png = tmp_path / "fit.png"
    fig = chinchilla_fit.plot(png)
    assert png.stat().st_size > 10_000
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # Every fitted curve drawn is the law at some model size.
    curves = [line for line in ax.lines if len(line.get_xdata()) == 200]
    assert curves
    # Compute-optimal allocation: C = 6 N D holds and it beats a 10x larger model.
    n_opt, d_opt = chinchilla_fit.optimal_allocation(1e22)
    assert 6 * n_opt * d_opt == pytest.approx(1e22, rel=1e-9)
    assert chinchilla_fit.predict(n_opt, d_opt) < chinchilla_fit.predict(10 * n_opt, d_opt / 10)


def test_joint_law_recovers_known_parameters_with_noise():
    rng = np.random.default_rng(3)
    truth = {"E": 1.7, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28}
    N, D = np.meshgrid(np.logspace(7, 10, 7), np.logspace(9, 12, 8))
    N, D = N.ravel(), D.ravel()
    L = (truth["E"] + truth["A"] / N ** truth["alpha"] + truth["B"] / D ** truth["beta"]) * np.exp(
        rng.normal(0, 0.01, N.size))
    fit = fit_joint_law(N, D, L, n_bootstrap=100, n_starts=16, seed=1)
    assert abs(fit.alpha - truth["alpha"]) < 0.03
    assert abs(fit.beta - truth["beta"]) < 0.03
    assert abs(fit.E - truth["E"]) < 0.05
    assert fit.covers(**truth), fit.summary()


def test_power_law_recovers_a_known_exponent_and_its_interval_covers_it(tmp_path):
    rng = np.random.default_rng(0)
    x = np.logspace(1, 4, 20)
    y = 5.0 * x**-0.3 * np.exp(rng.normal(0, 0.05, x.size))
    fit = fit_power_law(x, y)
    assert fit.b == pytest.approx(0.3, abs=0.02)
    assert fit.a == pytest.approx(5.0, rel=0.1)
    assert fit.covers(a=5.0, b=0.3)
    assert fit.r2 > 0.98
    lo, hi = fit.intervals["b"]
    assert hi - lo < 0.05  # informative, not just wide


def test_power_law_intervals_have_their_nominal_coverage():
    """Over 200 noisy data sets, the 95% interval of b contains the true b about
    95% of the time: neither overconfident nor vacuous."""
    rng = np.random.default_rng(42)
    x = np.logspace(0.5, 3, 12)
    hits, widths = 0, []
    for i in range(200):
        y = 2.0 * x**-0.5 * np.exp(rng.normal(0, 0.1, x.size))
        fit = fit_power_law(x, y, n_bootstrap=400, seed=i)
        lo, hi = fit.intervals["b"]
        hits += lo <= 0.5 <= hi
        widths.append(hi - lo)
    assert 0.88 <= hits / 200 <= 0.99
    assert np.median(widths) < 0.1


def test_power_law_with_offset_recovers_all_three_parameters():
    rng = np.random.default_rng(1)
    x = np.logspace(1, 4, 25)
    y = (3.0 * x**-0.5 + 0.2) * np.exp(rng.normal(0, 0.02, x.size))
    fit = fit_power_law(x, y, offset=True, n_bootstrap=300)
    assert fit.b == pytest.approx(0.5, abs=0.05)
    assert fit.c == pytest.approx(0.2, abs=0.02)
    assert fit.covers(a=3.0, b=0.5, c=0.2), fit.summary()


@pytest.mark.slow
def test_power_law_with_offset_intervals_cover_the_truth_most_of_the_time():
    rng = np.random.default_rng(7)
    x = np.logspace(1, 4, 15)
    hits = 0
    for i in range(25):
        y = (3.0 * x**-0.5 + 0.2) * np.exp(rng.normal(0, 0.03, x.size))
        hits += fit_power_law(x, y, offset=True, n_bootstrap=150, seed=i).covers(b=0.5)
    assert hits / 25 >= 0.76


def test_pairs_bootstrap_works_with_repeated_x():
    rng = np.random.default_rng(5)
    x = np.repeat([10, 30, 100, 300, 1000], 3)
    y = 1.5 * x**-0.1 * np.exp(rng.normal(0, 0.01, x.size))
    fit = fit_power_law(x, y, bootstrap="pairs", n_bootstrap=300)
    assert fit.covers(b=0.1)
    assert fit.n_bootstrap_ok > 250


def test_power_law_json_and_plot_show_points_and_the_fit(tmp_path):
    x = np.repeat([10.0, 30.0, 100.0, 300.0], 2)
    y = 2.0 * x**-0.2 * np.exp(np.tile([0.01, -0.01], 4))
    fit = fit_power_law(x, y, n_bootstrap=200)
    doc = json.loads(fit.to_json(tmp_path / "fit.json"))
    assert doc["b"] == pytest.approx(0.2, abs=1e-9) and len(doc["intervals"]["b"]) == 2 and "r2" in doc
    assert PowerLawFit.from_json(tmp_path / "fit.json").b == fit.b

    fig = fit.plot(tmp_path / "fit.png", xlabel="N", ylabel="loss")
    assert (tmp_path / "fit.png").stat().st_size > 10_000
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    fitted = [ln for ln in ax.lines if len(ln.get_xdata()) == 200]
    assert len(fitted) == 1
    xs, ys = np.asarray(fitted[0].get_xdata()), np.asarray(fitted[0].get_ydata())
    assert np.allclose(ys, fit.predict(xs))
    # Repeated x values are drawn as mean +- sd: one marker per distinct x.
    markers = [ln for ln in ax.lines if ln.get_marker() == "o"]
    assert sorted(np.asarray(markers[0].get_xdata())) == [10.0, 30.0, 100.0, 300.0]


def test_too_few_points_give_no_intervals_rather_than_false_precision():
    fit = fit_power_law([10, 100], [1.0, 0.5])
    assert fit.b == pytest.approx(math.log10(2))
    assert fit.intervals == {"a": None, "b": None}
    assert json.loads(fit.to_json())["intervals"]["b"] is None


@pytest.mark.parametrize("x, y, message", [
    ([1, 2, 3], [1.0, -1.0, 0.5], "must be positive"),
    ([5, 5, 5], [1.0, 0.9, 0.8], "2 distinct x"),
    ([1, 2], [1.0], "same length"),
    ([1, 2, 3], [1.0, float("nan"), 0.5], "non-finite"),
])
def test_bad_input_is_a_clear_error(x, y, message):
    with pytest.raises(FitError, match=message):
        fit_power_law(x, y)


def test_joint_law_needs_more_points_than_parameters():
    with pytest.raises(FitError, match="at least 6 points"):
        fit_joint_law([1e8, 1e9], [1e9, 1e10], [3.0, 2.5])
