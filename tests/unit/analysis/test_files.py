"""analysis.files and analysis.plots.save_figure: whole files or the old ones, never half."""

import json
import math

import pytest

from analysis.files import atomic_write_bytes, atomic_write_json, atomic_write_text, nan_to_none
from analysis.plots import new_figure, save_figure


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "results.json"
    atomic_write_json(path, {"loss": 1.5, "when": tmp_path})  # folders made; Paths written with str
    atomic_write_json(path, {"loss": 1.25})
    assert json.loads(path.read_text()) == {"loss": 1.25}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path):
    path = tmp_path / "notes.md"
    atomic_write_text(path, "old\n")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "text, not bytes")  # fails inside the write to the temporary
    with pytest.raises(ValueError):
        atomic_write_json(path, {"x": float("nan")}, allow_nan=False)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.md"]


def test_nan_to_none_makes_json_that_strict_readers_accept():
    data = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": (2, "x")}
    assert nan_to_none(data) == {"a": None, "b": [1.0, None, {"c": None}], "d": [2, "x"]}
    json.loads(json.dumps(nan_to_none(data), allow_nan=False))


def test_save_figure_writes_a_whole_png_atomically(tmp_path):
    fig, ax = new_figure()
    ax.plot([1, 2, 3], [3, 1, 2])
    path = save_figure(fig, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
