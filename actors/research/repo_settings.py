"""A research repository's own settings: which line holds its score, and whether an
artifact limit applies.

Read, first found wins per setting, from:

1. the command line (``--metric``), already in the `ResearchConfig`;
2. ``autoresearch.toml`` at the repository's top::

       metric = '^val_bpb:'            # a regular expression of the score line
       artifact_limit_bytes = 16000000 # 0: no limit

3. lines of its ``program.md`` (the file the researcher reads anyway)::

       metric: `^val_bpb:`
       artifact limit: 16,000,000 bytes      (or: artifact limit: none)

Without any, the score is the run's final val_bpb, and the artifact limit applies
where the repository is a Parameter Golf one: its research file is ``train_gpt.py``,
or its program.md speaks of Parameter Golf or the 16,000,000-byte limit. A repository
like karpathy/autoresearch is judged on val_bpb alone.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from actors.research.config import ResearchConfig, ResearchError

SETTINGS_FILE = "autoresearch.toml"
PROGRAM_FILE = "program.md"

_MD_METRIC = re.compile(r"^\s*(?:[-*]\s+)?\**metric\**\s*:\s*`([^`]+)`", re.I | re.M)
_MD_LIMIT = re.compile(r"^\s*(?:[-*]\s+)?\**artifact[ _]limit\**\s*:\s*(none|no|off|[\d][\d,_ ]*)(?:\s*bytes)?\s*$",
                       re.I | re.M)
_GOLF = re.compile(r"parameter[ -]golf|16,000,000|16_000_000|16000000", re.I)


@dataclass(frozen=True)
class RepoSettings:
    metric: str | None = None
    artifact_limit: int | None = None  # bytes; 0: no limit; None: not set
    source: str = ""  # where they were read, for messages


def _limit(value, where: str) -> int:
    text = str(value).strip().lower()
    if text in ("none", "no", "off", "0", "false"):
        return 0
    try:
        n = int(text.replace(",", "").replace("_", "").replace(" ", ""))
    except ValueError:
        raise ResearchError(f"{where}: artifact limit {value!r} is not a number of bytes or 'none'") from None
    if n < 0:
        raise ResearchError(f"{where}: artifact limit {value!r} is negative")
    return n


def read_repo_settings(root: Path) -> RepoSettings:
    """The settings written in the repository (autoresearch.toml, then program.md)."""
    root = Path(root)
    metric = limit = metric_from = None
    sources = []
    toml_path = root / SETTINGS_FILE
    if toml_path.is_file():
        try:
            data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ResearchError(f"{toml_path}: not valid TOML ({exc})") from None
        unknown = sorted(set(data) - {"metric", "artifact_limit_bytes"})
        if unknown:
            raise ResearchError(f"{toml_path}: unknown setting(s) {', '.join(unknown)} "
                                "(known: metric, artifact_limit_bytes)")
        if "metric" in data:
            metric, metric_from = str(data["metric"]), toml_path
        if "artifact_limit_bytes" in data:
            limit = _limit(data["artifact_limit_bytes"], str(toml_path))
        sources.append(SETTINGS_FILE)
    program = root / PROGRAM_FILE
    if program.is_file():
        text = program.read_text(encoding="utf-8", errors="replace")
        if metric is None and (m := _MD_METRIC.search(text)):
            metric, metric_from = m.group(1), program
            sources.append(PROGRAM_FILE)
        if limit is None and (m := _MD_LIMIT.search(text)):
            limit = _limit(m.group(1), str(program))
            sources.append(PROGRAM_FILE)
    source = ", ".join(dict.fromkeys(sources))
    if metric is not None:
        try:
            re.compile(metric)
        except re.error as exc:
            raise ResearchError(f"{metric_from}: the metric {metric!r} is not a regular expression ({exc})") from None
    return RepoSettings(metric=metric, artifact_limit=limit, source=source)


def is_parameter_golf(root: Path, file: str) -> bool:
    """A Parameter Golf repository: its research file is train_gpt.py, or its
    program.md names the challenge or its 16,000,000-byte limit."""
    if Path(file).name == "train_gpt.py":
        return True
    program = Path(root) / PROGRAM_FILE
    return program.is_file() and bool(_GOLF.search(program.read_text(encoding="utf-8", errors="replace")))


def apply_repo_settings(config: ResearchConfig, root: Path) -> ResearchConfig:
    """The config with the repository's settings filled in where the command line left
    them open. Raises ResearchError on a setting that cannot be used."""
    settings = read_repo_settings(root)
    update: dict = {}
    if config.metric is None and settings.metric is not None:
        update["metric"] = settings.metric
    if config.limit_artifact is None:
        if settings.artifact_limit is not None:
            update["limit_artifact"] = settings.artifact_limit > 0
            if settings.artifact_limit > 0:
                update["cap_bytes"] = settings.artifact_limit
        else:
            update["limit_artifact"] = is_parameter_golf(root, config.file)
    return config.model_copy(update=update) if update else config
