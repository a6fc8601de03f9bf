"""Who reads an MVE's results and says what they decided: the judge.

Two judges answer the same question with the same `Judgement`:

- `HeuristicJudge` (offline, free, deterministic): the vocabulary of
  `actors.scaler.verdicts` and the criteria/blocker readers of
  `actors.scaler.criteria`;
- `ClaudeJudge` (`actors.scaler.judge_claude`, with ANTHROPIC_API_KEY): Claude
  reads the same files and answers through a tool with the verdict, each
  criterion met or not, the blockers and verbatim quotes; answers are cached
  by the hash of the files, so a rescan costs nothing.

Whichever judge reads the prose, the rules around it are the same and live
here: a structured verdict (`verdict:` in results.json/yaml, front matter, a
fenced decision record) wins over prose; logs and update logs are quoted when
they disagree but never decide.

    judge = make_judge()                 # (judge_claude) Claude with a key, else the heuristics
    judgement = judge.judge(files)       # files: MVEFiles, built by discovery
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Protocol

import yaml

from actors.scaler.criteria import critical_blocker, read_criteria
from actors.scaler.verdicts import (
    Verdict,
    combine_verdicts,
    document_verdicts,
    parse_decision,
    parse_verdict,
    pending_words,
    structured_verdict,
)

log = logging.getLogger(__name__)

HEURISTICS = "heuristics"


@dataclass
class MVEFiles:
    """What a judge reads for one MVE: (name, text) pairs, names relative to the
    MVE's folder or the research root, as a user would find them."""

    id: str
    results: list[tuple[str, str]] = field(default_factory=list)  # results documents and write-ups: they decide
    structured: list[tuple[str, str]] = field(default_factory=list)  # results.json / results.yaml text
    logs: list[tuple[str, str]] = field(default_factory=list)  # running logs, shared-log sections: inform only
    mentions: list[tuple[str, str]] = field(default_factory=list)  # update-log lines: inform only

    def all_texts(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, text in self.results + self.structured + self.logs:
            out[name] = out[name] + "\n\n" + text if name in out else text
        for name, line in self.mentions:
            out[name] = out[name] + "\n" + line if name in out else line
        return out


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict  # positive, negative, ambiguous, pending or unknown, with the words that decided
    criteria_met: bool = True
    criteria: str = "no success-criteria section"  # a summary ("success criteria met (4/6; 1 soft fail)")
    blocker: str | None = None  # an open critical blocker, as written
    evidence: tuple[str, ...] = ()  # quotes that decided, "file: quote"
    notes: tuple[str, ...] = ()  # what disagrees and was overruled (logs, prose against a structured verdict)
    judge: str = HEURISTICS  # "heuristics", "claude:MODEL" or "claude:MODEL (cached)"


class Judge(Protocol):
    name: str

    def judge(self, files: MVEFiles) -> Judgement: ...


def load_structured(name: str, text: str) -> dict | None:
    """results.json / results.yaml as a dict, or None."""
    try:
        data = json.loads(text) if name.lower().endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def structured_verdicts(files: MVEFiles) -> list[Verdict]:
    """Every structured verdict of the MVE: its results.json/yaml records, the
    front matter and fenced decision records of its results documents."""
    found = []
    for name, text in files.structured:
        data = load_structured(name, text)
        v = structured_verdict(data, name) if data is not None else None
        if v is not None:
            found.append(v)
    for name, text in files.results:
        found += document_verdicts(text, name)
    return found


def apply_structured(judgement: Judgement, files: MVEFiles) -> Judgement:
    """A structured verdict governs: it replaces the prose verdict (two that
    disagree make it ambiguous), and the prose it overrules becomes a note."""
    found = structured_verdicts(files)
    if not found:
        return judgement
    labels = {v.label for v in found}
    if len(labels) > 1:
        said = "; ".join(f"{v.evidence!r} in {v.source}" for v in found)
        verdict = Verdict("ambiguous", f"structured verdicts disagree: {said}", found[0].source)
    else:
        verdict = found[0]
    notes = list(judgement.notes)
    prose = judgement.verdict
    if prose.label not in ("unknown", verdict.label) and prose.source:
        notes.append(f"{prose.source} says {prose.evidence!r}; the structured verdict "
                     f"({verdict.evidence!r} in {verdict.source}) governs")
    return replace(judgement, verdict=verdict, notes=tuple(notes),
                   evidence=(f"{verdict.source}: {verdict.evidence}",) + judgement.evidence)


def log_notes(verdict: Verdict, files: MVEFiles) -> list[str]:
    """Where the logs and update logs say something else than the results: quoted, overruled."""
    notes = []
    for name, text in files.logs + files.mentions:
        said = parse_verdict(text, name)
        if said.label not in ("unknown", "pending") and said.label != verdict.label:
            notes.append(f"{name} says {said.evidence!r}; logs inform, the results govern")
    return notes


class HeuristicJudge:
    """The offline judge: the verdict vocabulary, the criteria and blocker readers."""

    name = HEURISTICS

    def judge(self, files: MVEFiles) -> Judgement:
        parsed, evidence = [], []
        for name, text in files.results:
            decided, from_line = parse_decision(text)
            parsed.append((decided, from_line, name))
        verdict = combine_verdicts(parsed) if parsed else Verdict("unknown")
        if verdict.label != "unknown":
            evidence.append(f"{verdict.source}: {verdict.evidence}")
        criteria_met, summary = True, "no success-criteria section"
        for name, text in files.results:
            criteria = read_criteria(text)
            if not criteria.found:
                continue
            if not criteria.met:
                criteria_met, summary = False, f"{criteria.summary()} in {name}"
                break
            if summary == "no success-criteria section":
                summary = f"{criteria.summary()} in {name}"
        blocker = None
        for name, text in files.results:
            found = critical_blocker(text)
            if found:
                blocker = f"{found} (in {name})"
                break
        if verdict.label == "unknown":
            for name, text in files.results:  # no verdict, but the notes say the run is still going
                waiting = pending_words(text)
                if waiting:
                    verdict = Verdict("pending", waiting, name)
                    break
        judgement = Judgement(verdict, criteria_met, summary, blocker, tuple(evidence))
        judgement = apply_structured(judgement, files)
        return replace(judgement, notes=judgement.notes + tuple(log_notes(judgement.verdict, files)))
