"""Find Minimum Viable Experiments (MVEs) that are worth scaling up.

An MVE is a folder `experiments/NNN_slug/` whose markdown states a verdict. The
ScalerAgent scales an MVE only when all of these hold:

- its verdict is positive (PROCEED, SUCCESS, "Scale up", ...);
- its success criteria are met and no critical blocker is recorded;
- `code/NNN_scaled/results.json` does not exist (a finished scaled run);
- nobody holds a claim on it.

How a document's words are read (verdicts, criteria, blockers) is
`actors.scaler.verdicts`; this module turns folders into `MVE` records.

    find_mves(experiments_dir, code_dir, claimed={"003"}) -> list[MVE]
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from actors.scaler.verdicts import (
    Verdict,
    combine_verdicts,
    critical_blocker,
    parse_decision,
    success_criteria_met,
)

# The WorkTracker key of an MVE is SCALE_PREFIX + its number: "scale:003".
SCALE_PREFIX = "scale:"

MVE_DIR_RE = re.compile(r"^(\d{3})_(\S+)$")


@dataclass
class MVE:
    id: str
    slug: str
    path: Path
    docs: list[Path]
    proposal: Path | None
    verdict: Verdict
    scaled_dir: Path
    scaled: bool
    scalable: bool
    reason: str
    results: dict = field(default_factory=dict)  # the MVE's results.json, or {}

    @property
    def work_id(self) -> str:
        """The WorkTracker key a ScalerAgent claims this MVE under."""
        return f"{SCALE_PREFIX}{self.id}"


def _doc_order(path: Path) -> tuple[int, str]:
    name = path.name.lower()
    return ({"results.md": 0, "readme.md": 1}.get(name, 2), name)


def _read_doc(path: Path) -> tuple[str | None, str | None]:
    """(text, None) or (None, why it cannot be read)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read {path.name}: {exc.strerror or exc}"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, f"{path.name} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    if "\x00" in text:
        return None, f"{path.name} looks binary (contains NUL bytes), not a markdown document"
    return text, None


def _read_results(path: Path) -> tuple[dict, str | None]:
    """The MVE's results.json as a dict, or ({}, a note saying why not)."""
    if not path.is_file():
        return {}, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return {}, f"{path.name} is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return {}, f"{path.name} is not valid JSON (line {exc.lineno}: {exc.msg})"
    except OSError as exc:
        return {}, f"cannot read {path.name}: {exc.strerror or exc}"
    if not isinstance(data, dict):
        return {}, f"{path.name} holds a JSON {type(data).__name__}, not an object"
    return data, None


def _find_proposal(proposals_dir: Path, mve_id: str) -> Path | None:
    if not proposals_dir.is_dir():
        return None
    matches = sorted(p for p in proposals_dir.glob(f"{mve_id}_*.md") if p.is_file())
    exact = proposals_dir / f"{mve_id}.md"
    if exact.is_file():
        matches.insert(0, exact)
    return matches[0] if matches else None


def normalise_claim(work_id: str) -> str:
    """"scale:003" (a WorkTracker key) or "003" -> "003"."""
    return work_id[len(SCALE_PREFIX):] if work_id.startswith(SCALE_PREFIX) else work_id


def _scan_one(
    folder: Path, mve_id: str, slug: str, code_dir: Path, proposals_dir: Path, claimed: set[str]
) -> MVE:
    docs = sorted((p for p in folder.glob("*.md") if p.is_file()), key=_doc_order)
    scaled_dir = code_dir / f"{mve_id}_scaled"
    scaled_results = scaled_dir / "results.json"
    scaled = scaled_results.is_file()
    results, results_note = _read_results(folder / "results.json")

    problems: list[str] = []  # why it is not scalable
    passes: list[str] = []  # why each condition holds, for a scalable MVE
    verdict = Verdict("unknown", "", "")

    if not docs:
        problems.append("no results document (README.md, results.md or another *.md)")
    else:
        parsed, texts = [], []
        for doc in docs:
            text, error = _read_doc(doc)
            if error:
                problems.append(error)
                continue
            decided, from_line = parse_decision(text)
            parsed.append((decided, from_line, doc.name))
            texts.append((doc.name, text))
        if parsed:
            verdict = combine_verdicts(parsed)
        if verdict.label == "positive":
            passes.append(f"positive verdict ({verdict.evidence!r} in {verdict.source})")
        elif verdict.label == "negative":
            problems.insert(0, f"negative verdict ({verdict.evidence!r} in {verdict.source})")
        elif not problems:
            problems.append("no verdict found")

        criteria_reasons = []
        for name, text in texts:
            met, why = success_criteria_met(text)
            if not met:
                problems.append(f"{why} in {name}")
                break
            if why != "no success-criteria section":
                criteria_reasons.append(why)
        else:
            passes.append(criteria_reasons[0] if criteria_reasons else "success criteria met (no criteria section)")
        for name, text in texts:
            blocker = critical_blocker(text)
            if blocker:
                problems.append(f"critical blocker ({blocker!r} in {name})")
                break

    rel_scaled = f"{code_dir.name}/{scaled_dir.name}"
    if scaled:
        problems.append(f"already scaled ({rel_scaled}/results.json)")
    elif scaled_dir.is_dir():
        passes.append(f"not scaled ({rel_scaled}/ has no results.json: an unfinished attempt)")
    else:
        passes.append("not scaled")
    if mve_id in claimed:
        problems.append("claimed by another agent")
    else:
        passes.append("unclaimed")

    scalable = not problems
    reason = "; ".join(passes if scalable else problems)
    if results_note:
        reason += f" (note: {results_note})"
    return MVE(
        id=mve_id,
        slug=slug,
        path=folder,
        docs=docs,
        proposal=_find_proposal(proposals_dir, mve_id),
        verdict=verdict,
        scaled_dir=scaled_dir,
        scaled=scaled,
        scalable=scalable,
        reason=reason,
        results=results,
    )


def find_mves(
    experiments_dir: str | Path,
    code_dir: str | Path,
    proposals_dir: str | Path | None = None,
    claimed: Iterable[str] = frozenset(),
) -> list[MVE]:
    """Every MVE folder under `experiments_dir`, sorted by id, each with whether
    it is scalable and why (`MVE.reason`).

    `claimed` holds the ids ("003", or WorkTracker keys "scale:003") someone
    holds a claim on. A missing `code_dir` means nothing has been scaled yet.
    One unreadable MVE never stops the scan: it is reported as not scalable.
    """
    experiments_dir = Path(experiments_dir)
    code_dir = Path(code_dir)
    if not experiments_dir.exists():
        raise FileNotFoundError(f"experiments folder not found: {experiments_dir}")
    if not experiments_dir.is_dir():
        raise NotADirectoryError(f"experiments folder is not a directory: {experiments_dir}")
    proposals = Path(proposals_dir) if proposals_dir is not None else experiments_dir.parent / "proposals"
    claimed_ids = {normalise_claim(c) for c in claimed}

    folders: dict[str, list[tuple[Path, str]]] = {}
    for entry in sorted(experiments_dir.iterdir()):
        m = MVE_DIR_RE.match(entry.name)
        if m and entry.is_dir():
            folders.setdefault(m.group(1), []).append((entry, m.group(2)))

    mves = []
    for mve_id in sorted(folders):
        for folder, slug in folders[mve_id]:
            mve = _scan_one(folder, mve_id, slug, code_dir, proposals, claimed_ids)
            if len(folders[mve_id]) > 1:
                # Two folders share a number: a claim on "scale:NNN" would be ambiguous.
                others = ", ".join(f.name for f, _ in folders[mve_id] if f != folder)
                mve.scalable = False
                mve.reason = f"duplicate id {mve_id} (also {others}); " + mve.reason
            mves.append(mve)
    return mves


__all__ = ["MVE", "MVE_DIR_RE", "SCALE_PREFIX", "find_mves", "normalise_claim"]
