"""ScalerOptions: validated on construction, the error naming the field and its limit."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError

from actors.scaler.options import ScalerOptions
from train.spec import format_validation_error


def test_paths_are_made_absolute_and_the_ledger_defaults_beside_the_experiments(tmp_path, monkeypatch):
    (tmp_path / "experiments").mkdir()
    monkeypatch.chdir(tmp_path)
    opts = ScalerOptions(experiments="experiments", code="code")
    assert opts.experiments == tmp_path / "experiments" and opts.code == tmp_path / "code"
    assert opts.ledger == tmp_path / "experiments" / "EXPERIMENTS.md" and opts.proposals is None
    assert (opts.launch, opts.dry_run, opts.offline) == (True, False, False)
    assert pickle.loads(pickle.dumps(opts)) == opts  # it travels to the agents' actors


@pytest.mark.parametrize("changes,message", [
    ({"experiments": "missing"}, "experiments: folder not found: missing"),
    ({"proposals": "nowhere"}, "proposals: folder not found: nowhere"),
    ({"smoke_timeout_s": 0}, "smoke_timeout_s: Input should be greater than 0"),
    ({"smoke_timeout_s": 7200}, "smoke_timeout_s: Input should be less than or equal to 3600"),
    ({"retry_failed_after_s": -1}, "retry_failed_after_s: Input should be greater than or equal to 0"),
    ({"model": ""}, "model: String should have at least 1 character"),
    ({"luanch": False}, "luanch: unknown field"),
    ({"storage": "ftp://host/x"}, "storage: ftp://host/x: unknown scheme 'ftp'"),
    ({"storage": "s3://KEY:hunter2@bucket"}, "credentials do not belong in the URI"),
])
def test_bad_values_are_refused_naming_field_and_limit(tmp_path, changes, message):
    (tmp_path / "experiments").mkdir()
    with pytest.raises(ValidationError) as exc:
        ScalerOptions(**{"experiments": tmp_path / "experiments", "code": tmp_path / "code", **changes})
    assert message in format_validation_error(exc.value)
    assert "hunter2" not in format_validation_error(exc.value)


def test_code_must_be_a_folder(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "code").write_text("not a folder")
    with pytest.raises(ValidationError, match="not a folder"):
        ScalerOptions(experiments=tmp_path / "experiments", code=tmp_path / "code")
