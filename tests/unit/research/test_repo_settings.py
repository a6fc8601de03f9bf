"""A research repository's own settings: the metric line and the artifact limit, from
autoresearch.toml or program.md; the 16,000,000-byte limit where the repository is a
Parameter Golf one, none in a karpathy/autoresearch-like one."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.research.config import ResearchConfig, ResearchError
from actors.research.repo_settings import apply_repo_settings, read_repo_settings

ROOT = Path(__file__).resolve().parents[3]


def settled(root: Path, **config) -> ResearchConfig:
    return apply_repo_settings(ResearchConfig(repo=root, **config), root)


def test_the_shipped_examples():
    golf = settled(ROOT / "examples" / "golf")
    assert golf.artifact_cap == 16_000_000 and golf.metric is None
    karpathy = settled(ROOT / "examples" / "karpathy_style", file="train.py")
    assert karpathy.artifact_cap is None and karpathy.metric == "^val_bpb:"


def test_parameter_golf_is_recognised_by_its_file_or_its_program(tmp_path):
    assert settled(tmp_path, file="train_gpt.py").artifact_cap == 16_000_000
    assert settled(tmp_path, file="train.py").artifact_cap is None
    (tmp_path / "program.md").write_text("# OpenAI Parameter Golf\nBeat the baseline.\n")
    assert settled(tmp_path, file="model.py").artifact_cap == 16_000_000


def test_program_md_sets_metric_and_limit(tmp_path):
    (tmp_path / "program.md").write_text("# research\n\n- **metric**: `final_int6_sliding_window_exact`\n"
                                         "artifact limit: 15,000,000 bytes\n")
    cfg = settled(tmp_path, file="train.py")
    assert cfg.metric == "final_int6_sliding_window_exact" and cfg.artifact_cap == 15_000_000
    (tmp_path / "program.md").write_text("metric: `^val_bpb:`\nartifact limit: none\n")
    assert settled(tmp_path, file="train_gpt.py").artifact_cap is None  # said so, whatever the file name


def test_autoresearch_toml_wins_over_program_md_and_the_flag_over_both(tmp_path):
    (tmp_path / "program.md").write_text("metric: `from_program`\nartifact limit: 1000 bytes\n")
    (tmp_path / "autoresearch.toml").write_text("metric = 'from_toml'\nartifact_limit_bytes = 0\n")
    s = read_repo_settings(tmp_path)
    assert (s.metric, s.artifact_limit) == ("from_toml", 0)
    cfg = settled(tmp_path, file="train.py", metric="from_flag")
    assert cfg.metric == "from_flag" and cfg.artifact_cap is None


@pytest.mark.parametrize("files,words", [
    ({"autoresearch.toml": "metric = '('\n"}, "not a regular expression"),
    ({"autoresearch.toml": "metirc = 'x'\n"}, "unknown setting(s) metirc"),
    ({"autoresearch.toml": "metric = \n"}, "not valid TOML"),
    ({"autoresearch.toml": "artifact_limit_bytes = 'lots'\n"}, "not a number of bytes"),
    ({"program.md": "metric: `[unclosed`\n"}, "program.md: the metric"),
])
def test_a_setting_that_cannot_be_used_is_refused_in_one_line(tmp_path, files, words):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ResearchError, match=None) as err:
        settled(tmp_path, file="train.py")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_metric_flag_is_checked_on_construction():
    with pytest.raises(ResearchError, match=r"--metric: '\(' is not a regular expression"):
        ResearchConfig.checked(metric="(")
