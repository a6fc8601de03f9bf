"""analysis.hardware on synthetic sweeps whose scaling laws we know."""

import csv
import json
import math

import numpy as np
import pytest

from analysis.hardware import (
    HardwareScalingAnalyzer,
    NoResults,
    TrialRecord,
    crossing,
    figure_of_merit,
    fit_gpu_scaling,
)

SHAPES = [(1, 1), (2, 1), (4, 1), (8, 1), (4, 2), (8, 2)]
# Samples to target grow as G^0.5 (bigger batches), time falls as G^-0.8, so
# cost = G * time grows as G^0.2.
A_SAMPLES, B_SAMPLES = 1.0e6, 0.5
A_TIME, B_TIME = 3600.0, -0.8
USD = 2.0


def curve(G, final=0.8, points=9):
    """A learning curve that crosses score 0.72 (0.9 x 0.8) exactly at the
    samples and time of the known laws: score linear in samples."""
    s_star, t_star = A_SAMPLES * G**B_SAMPLES, A_TIME * G**B_TIME
    rows = []
    for i in range(points):
        frac = i / (points - 1) * 2  # samples up to 2 x s_star
        score = min(final, 0.72 * frac) if frac <= 1 else 0.72 + (final - 0.72) * (frac - 1)
        t = t_star * frac
        rows.append({"score": score, "samples": s_star * frac, "time_s": t, "gpu_hours": G * t / 3600,
                     "cost": G * t / 3600 * USD, "finished": float(i == points - 1)})
    return rows


def write_sweep(root, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    for g, n in SHAPES:
        exp = root / f"hs_g{g}n{n}"
        for j, final in enumerate((0.8, 0.6, 0.75)):  # the best trial is the 0.8 one
            trial = exp / f"trial_{g}{n}{j}"
            trial.mkdir(parents=True)
            rows = curve(g * n, final=0.8)
            if final != 0.8:
                rows = [{**r, "score": r["score"] * final / 0.8} for r in rows]
            if noise:
                rows = [{**r, **{k: r[k] * math.exp(rng.normal(0, noise)) for k in ("samples", "time_s")}}
                        for r in rows]
                rows = [{**r, "cost": r["time_s"] * g * n / 3600 * USD, "gpu_hours": r["time_s"] * g * n / 3600}
                        for r in rows]
            (trial / "result.json").write_text("\n".join(json.dumps({**r, "trial_id": trial.name}) for r in rows))
            (trial / "params.json").write_text(json.dumps({"lr": 0.001 * (j + 1), "recipe": "x", "settings": {}}))


def test_fit_gpu_scaling_recovers_exponent_and_r2():
    x = np.array([1, 2, 4, 8, 16])
    fit = fit_gpu_scaling(x, 3.0 * x**-0.7)
    assert fit.slope == pytest.approx(-0.7) and fit.a == pytest.approx(3.0) and fit.r2 == pytest.approx(1)
    assert fit_gpu_scaling([2, 2], [1, 3]) is None  # one GPU count: no line


def test_fit_gpu_scaling_is_the_scaling_law_fit_reported_as_a_slope():
    """One power-law fit in the project: the hardware analysis reports
    analysis.scaling_laws' y = a * G^-b as y = a * G^slope, slope = -b, with
    its bootstrap interval turned round the same way."""
    from analysis.scaling_laws import fit_power_law

    x = np.array([1, 2, 4, 8, 16, 32])
    y = 5.0 * x**0.3 * np.exp(np.random.default_rng(0).normal(0, 0.05, x.size))  # grows with the GPUs
    ours, law = fit_gpu_scaling(x, y), fit_power_law(x, y, n_bootstrap=1000, seed=0)
    assert ours.slope == pytest.approx(-law.b) and ours.slope == pytest.approx(0.3, abs=0.1)
    lo, hi = ours.slope_interval
    assert (lo, hi) == pytest.approx((-law.intervals["b"][1], -law.intervals["b"][0]))
    assert lo < ours.slope < hi


def test_analyzer_recovers_known_exponents_and_writes_the_report(tmp_path):
    write_sweep(tmp_path)
    analyzer = HardwareScalingAnalyzer(target_performance=0.9).load_tune_results(tmp_path)
    report = analyzer.analyze()
    assert report.target_score == pytest.approx(0.72)
    assert len(report.configs) == len(SHAPES) and all(c.trials == 3 for c in report.configs)
    assert all(c.best.params["lr"] == 0.001 for c in report.configs)  # the best trial per configuration
    assert report.fits["samples"].slope == pytest.approx(B_SAMPLES, abs=1e-6)
    assert report.fits["time"].slope == pytest.approx(B_TIME, abs=1e-6)
    assert report.fits["cost"].slope == pytest.approx(1 + B_TIME, abs=1e-6)
    assert report.fits["samples"].a == pytest.approx(A_SAMPLES, rel=1e-6)
    assert all(f.r2 == pytest.approx(1.0) for f in report.fits.values())
    # Samples and cost are lowest on one GPU, time on the most GPUs.
    assert report.recommendations["research"] == "hs_g1n1"
    assert report.recommendations["budget"] == "hs_g1n1"
    assert report.recommendations["development"] in ("hs_g8n2",)
    assert set(report.recommendations) == {"research", "development", "budget", "balanced"}

    paths = analyzer.write(report, tmp_path)
    md = paths["markdown"].read_text()
    for priority in ("research", "development", "budget", "balanced"):
        assert f"**{priority}**" in md
    assert "+0.500" in md and "-0.800" in md
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["config"] for r in rows] == [f"hs_g{g}n{n}" for g, n in SHAPES]
    assert float(rows[0]["samples_to_target"]) == pytest.approx(A_SAMPLES)
    for key in ("scaling_plot", "fom_plot"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_noisy_sweep_still_recovers_the_exponents(tmp_path):
    write_sweep(tmp_path, noise=0.05, seed=1)
    report = HardwareScalingAnalyzer().load_tune_results(tmp_path).analyze()
    assert report.fits["samples"].slope == pytest.approx(B_SAMPLES, abs=0.1)
    assert report.fits["time"].slope == pytest.approx(B_TIME, abs=0.1)
    assert 0.8 < report.fits["time"].r2 <= 1


def test_fom_weights_pick_the_priority():
    values = {"small": {"samples": 1.0, "time": 10.0, "cost": 1.0},
              "big": {"samples": 2.0, "time": 2.0, "cost": 1.6},
              "never": {}}
    research = figure_of_merit(values, {"samples": 0.6, "time": 0.2, "cost": 0.2})
    development = figure_of_merit(values, {"samples": 0.2, "time": 0.6, "cost": 0.2})
    assert research["small"] > research["big"] and development["big"] > development["small"]
    assert research["never"] == 0.0 and max(research.values()) <= 1.0


def test_crossing_interpolates_and_misses():
    c = [{"score": 0.0, "samples": 0, "time_s": 0}, {"score": 0.4, "samples": 100, "time_s": 10},
         {"score": 0.8, "samples": 200, "time_s": 30}]
    hit = crossing(c, 0.6)
    assert hit["samples"] == pytest.approx(150) and hit["time_s"] == pytest.approx(20)
    assert crossing(c, 0.9) is None


def test_unfinished_trials_are_left_out_and_empty_dirs_refused(tmp_path):
    with pytest.raises(NoResults):
        HardwareScalingAnalyzer().load_tune_results(tmp_path)
    trial = tmp_path / "hs_g1n1" / "trial_a"
    trial.mkdir(parents=True)
    rows = curve(1)
    rows[-1]["finished"] = 0.0  # interrupted
    (trial / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"score\": 0.")
    with pytest.raises(NoResults):
        HardwareScalingAnalyzer().load_tune_results(tmp_path)
    a = HardwareScalingAnalyzer().load_tune_results(tmp_path, finished_only=False)
    assert len(a.trials) == 1 and len(a.trials[0].curve) == len(rows)  # the cut-off line is dropped


def test_configuration_that_never_reaches_the_target_gets_no_recommendation():
    a = HardwareScalingAnalyzer(target_performance=0.9)
    a.add_trial(TrialRecord("hs_g1n1", 1, 1, "a", curve=curve(1)))
    slow = [{**r, "score": r["score"] * 0.5} for r in curve(2)]
    a.add_trial(TrialRecord("hs_g2n1", 2, 1, "b", curve=slow))
    report = a.analyze()
    assert report.config("hs_g2n1").at_target is None
    assert set(report.recommendations.values()) == {"hs_g1n1"}
    assert report.fits["samples"] is None  # one GPU count reached it
    assert "fewer than two GPU counts" in a.markdown(report)
