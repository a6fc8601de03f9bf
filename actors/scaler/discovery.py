"""Find Minimum Viable Experiments (MVEs) that are worth scaling up.

The files of a research folder are grouped by experiment number in either
layout, or a mix (`actors.scaler.layouts`); a judge reads each MVE's results
(`actors.scaler.judge`: Claude with a key, the heuristics offline). An MVE is
scalable only when all of these hold:

- its number belongs to one experiment (two folders, code folders, results
  files or logs under one number are reported, never scaled blindly);
- it has results (a number with logs or code but no results is pending);
- its verdict is positive (a structured verdict wins over prose; logs and
  update logs inform but never override the results);
- its success criteria are met (a baseline expectation or an untested row the
  document marks as such does not fail it; a positive verdict over an unmet
  criterion is ambiguous) and no critical blocker is open;
- no `code/NNN_scaled*/` holds results.json, and none was written by someone
  else (no marker of ours: scaled by hand, never touched);
- nobody holds a claim on it.

    result = scan(experiments_dir, code_dir, claimed={"003"})    # ScanResult: MVEs, files read, unreadable
    find_mves(experiments_dir, code_dir, claimed={"003"}) -> list[MVE]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from actors.scaler.judge import HEURISTICS, HeuristicJudge, Judge, Judgement, MVEFiles, load_structured
from actors.scaler.layouts import LOOKED_FOR, Bundle, Collection, collect
from actors.scaler.ownership import is_ours
from actors.scaler.verdicts import Verdict, parse_decision, pending_words

# The WorkTracker key of an MVE is SCALE_PREFIX + its number: "scale:003".
SCALE_PREFIX = "scale:"

STATUSES = ("scalable", "claimed", "pending", "negative", "ambiguous", "blocked", "no_verdict", "unreadable",
            "duplicate", "scaled", "scaled_by_hand")


@dataclass
class MVE:
    """One experiment found in the research folders, and whether to scale it.

    id: its number, three digits at least ("063"); `work_id` is its tracker key.
    slug: its name from the folder or file names ("dyt"), or "".
    path: its folder: experiments/NNN_slug/ (folder layout), else code/NNN/ (flat
        layout), else the folder holding its results file.
    docs: its markdown results documents and write-ups, most telling first.
    proposal: proposals/NNN-slug.md, or the one its README names; None.
    verdict: the decisive verdict (label, the words as written, the file).
    scaled_dir: code/NNN_scaled/, where a scaled experiment goes.
    scaled: code/NNN_scaled*/results.json exists.
    scalable: every condition in the module docstring holds.
    reason: why (not) scalable, one line.
    results: the MVE's results.json/results.yaml as a dict (the offline planner's facts), or {}.
    status: one of STATUSES: scalable, claimed, pending (no results yet), negative,
        ambiguous (with its evidence), blocked, no_verdict, unreadable, duplicate
        (the number is shared), scaled, scaled_by_hand (a code/NNN_scaled*/ we did not write).
    layout: "folder", "flat" or "mixed" (a folder and flat files for one number).
    judge: who decided: "heuristics", "claude:MODEL" or "claude:MODEL (cached)".
    files: every file read for this MVE.
    code_path: the folder with its code (code/NNN/, else its experiment folder), or None.
    evidence: quotes that decided, "file: quote".
    notes: what was overruled or noticed (logs that disagree, a leftover of ours to set aside).
    shared_with: what shares its number (for status duplicate).
    criteria: the success-criteria summary.
    root: the research folder (the experiments folder's parent): names are relative to it.
    """

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
    results: dict = field(default_factory=dict)
    status: str = "scalable"
    layout: str = "folder"
    judge: str = HEURISTICS
    files: list[Path] = field(default_factory=list)
    code_path: Path | None = None
    evidence: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    shared_with: list[str] = field(default_factory=list)
    criteria: str = ""
    root: Path | None = None

    @property
    def work_id(self) -> str:
        """The WorkTracker key a ScalerAgent claims this MVE under."""
        return f"{SCALE_PREFIX}{self.id}"

    def source_files(self) -> list[Path]:
        """What a planner reads: the documents, the code and records (.py, .json,
        .yaml, .csv) of its folders, and the proposal."""
        files = list(self.docs)
        for folder in dict.fromkeys(p for p in (self.path, self.code_path) if p is not None and p.is_dir()):
            files += sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".py", ".json", ".yaml",
                                                                                          ".yml", ".csv"))
        if self.proposal is not None:
            files.append(self.proposal)
        return list(dict.fromkeys(files))


@dataclass
class ScanResult:
    mves: list[MVE]
    files_read: int
    files_seen: int
    unreadable: list[tuple[Path, str]]
    notes: list[str]
    looked_for: str = LOOKED_FOR

    def counts(self) -> dict[str, int]:
        return {s: n for s in STATUSES if (n := sum(m.status == s for m in self.mves))}

    def judges(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.mves:
            out[m.judge] = out.get(m.judge, 0) + 1
        return out


def normalise_claim(work_id: str) -> str:
    """"scale:003" (a WorkTracker key) or "003" -> "003"."""
    return work_id[len(SCALE_PREFIX):] if work_id.startswith(SCALE_PREFIX) else work_id


class _Builder:
    """Turns one bundle of files into MVE records (one per experiment folder)."""

    def __init__(self, col: Collection, experiments: Path, code: Path, claimed: set[str]):
        self.col, self.experiments, self.code, self.claimed = col, experiments, code, claimed
        self.root = experiments.parent
        self.errors = {p: why for p, why in col.unreadable}

    def name(self, path: Path, folder: Path | None) -> str:
        for base in (folder, self.root):
            if base is not None:
                try:
                    return str(path.relative_to(base))
                except ValueError:
                    continue
        return path.name

    def split(self, b: Bundle) -> list[tuple[Bundle, Path | None]]:
        """One bundle per experiment folder: the folder's own files, and the flat files they share."""
        if len(b.folders) <= 1:
            return [(b, b.folders[0] if b.folders else None)]
        out = []
        for folder, slug in zip(b.folders, b.slugs):
            def mine(paths: list[Path], folder=folder) -> list[Path]:
                return [p for p in paths if folder in p.parents or not any(f in p.parents for f in b.folders)]
            out.append((replace(b, results=mine(b.results), documents=mine(b.documents), logs=mine(b.logs),
                                structured=mine(b.structured), plans=mine(b.plans), slugs=[slug]), folder))
        return out

    def files_of(self, b: Bundle, folder: Path | None) -> MVEFiles:
        text = self.col.texts.get
        files = MVEFiles(b.id)
        files.results = [(self.name(p, folder), text(p)) for p in b.results + b.documents if text(p) is not None]
        if not any(parse_decision(t)[0] for _, t in files.results) and not b.structured:
            # No verdict in a results file ("all in code/212/README.md"): a code README that states
            # one on a verdict line is the write-up.
            for p in b.readmes:
                if text(p) is not None and parse_decision(text(p))[1]:
                    files.results.append((self.name(p, folder), text(p)))
        files.structured = [(self.name(p, folder), text(p)) for p in b.structured if text(p) is not None]
        files.logs = [(self.name(p, folder), text(p)) for p in b.logs if text(p) is not None]
        files.logs += [(f"{self.name(p, folder)} § {body.splitlines()[0].lstrip('#').strip()[:60]}", body)
                       for p, body in b.log_sections]
        files.mentions = [(self.name(p, folder), line) for p, line in b.mentions]
        return files

    def needs_judge(self, b: Bundle, files: MVEFiles) -> bool:
        """Whether a (costly) judge must read this MVE: it has results, and nothing
        else already rules it out (a shared number, a scaled folder)."""
        return bool(files.results or files.structured) and not (
            b.shared_by() or any((d / "results.json").is_file() or not is_ours(d) for d in b.scaled_dirs))

    def build(self, b: Bundle, folder: Path | None, files: MVEFiles, judged: Judgement | None) -> MVE:
        problems: list[tuple[str, str]] = []  # (status, why), most important first
        passes: list[str] = []
        notes: list[str] = []
        shared = b.shared_by()
        if len(b.folders) > 1:
            others = ", ".join(f.name for f in b.folders if f != folder)
            problems.append(("duplicate", f"duplicate id {b.id} (also {others})"))
        elif shared:
            problems.append(("duplicate", f"number {b.id} is shared by two experiments: {'; '.join(shared)}; "
                                          "rename one to scale it"))
        scaled_dir = self.code / f"{b.id}_scaled"
        scaled, by_hand = self.scaled_state(b, scaled_dir, problems, passes, notes)
        doc_paths = b.results + b.documents
        for p in doc_paths + b.structured:
            if p in self.errors:
                problems.append(("unreadable", self.errors[p]))
        results, parse_notes = self.facts(b)
        notes += parse_notes
        has_results = bool(files.results or files.structured)
        judgement = judged or (HeuristicJudge().judge(files) if has_results else None)
        if not has_results:
            if not any(p in self.errors for p in doc_paths):
                problems.append(("pending", self.pending_reason(b, files, folder)))
        else:
            self.judge_problems(judgement, problems, passes)
            notes += list(judgement.notes)
        if not scaled and not by_hand and b.id not in self.claimed:
            passes.append("unclaimed")
        elif b.id in self.claimed:
            problems.append(("claimed", "claimed by another agent"))
        status = problems[0][0] if problems else "scalable"
        reason = "; ".join(why for _, why in problems) if problems else "; ".join(passes)
        if parse_notes:
            reason += f" (note: {'; '.join(parse_notes)})"
        layout = "folder" if folder is not None else "flat"
        if folder is not None and (b.flat_results or b.logs and any(folder not in p.parents for p in b.logs)
                                   or b.log_sections or b.mentions):
            layout = "mixed"
        read = [p for p in doc_paths + b.structured + b.logs + b.readmes if p in self.col.texts]
        read += list(dict.fromkeys(p for p, _ in b.log_sections + b.mentions))
        return MVE(
            id=b.id, slug=next((s for s in b.slugs if s), "") or self.slug_from_files(b),
            path=folder or (b.code_dirs[0] if b.code_dirs else
                            (doc_paths + b.structured)[0].parent if doc_paths + b.structured else self.experiments),
            docs=[p for p in doc_paths + b.readmes if p.suffix.lower() != ".json"], proposal=b.proposal,
            verdict=judgement.verdict if judgement else Verdict("pending" if not has_results else "unknown"),
            scaled_dir=scaled_dir, scaled=scaled, scalable=not problems, reason=reason, results=results,
            status=status, layout=layout, judge=judgement.judge if judgement else HEURISTICS, files=read,
            code_path=b.code_dirs[0] if b.code_dirs else folder,
            evidence=list(judgement.evidence) if judgement else [], notes=notes,
            shared_with=shared,
            criteria=judgement.criteria if judgement else "", root=self.root,
        )

    def scaled_state(self, b: Bundle, target: Path, problems, passes, notes) -> tuple[bool, bool]:
        code_name = self.code.name
        finished = [d for d in b.scaled_dirs if (d / "results.json").is_file()]
        theirs = [d for d in b.scaled_dirs if d not in finished and not is_ours(d)]
        if finished:
            problems.append(("scaled", f"already scaled ({code_name}/{finished[0].name}/results.json)"))
            return True, False
        if theirs:
            names = ", ".join(f"{code_name}/{d.name}/" for d in theirs)
            problems.append(("scaled_by_hand", f"scaled by hand: {names} has no marker of ours, so it is yours "
                                               "and is never touched (move it away to scale this MVE here)"))
            return False, True
        if target.is_dir():
            passes.append(f"not scaled ({code_name}/{target.name}/ has no results.json: an unfinished attempt)")
            notes.append(f"{code_name}/{target.name}/ is a leftover of a failed attempt of ours: it will be set aside")
        else:
            passes.append("not scaled")
        return False, False

    def judge_problems(self, j: Judgement, problems, passes) -> None:
        v = j.verdict
        said = f"{v.evidence!r} in {v.source}" if v.source else repr(v.evidence)
        if v.label == "positive":
            if j.criteria_met:
                passes.insert(0, f"positive verdict ({said})")
            else:
                problems.append(("ambiguous", f"ambiguous: positive verdict ({said}) but {j.criteria}"))
        elif v.label == "negative":
            problems.append(("negative", f"negative verdict ({said})"))
        elif v.label == "pending":
            problems.append(("pending", f"results not in yet ({said})"))
        elif v.label == "ambiguous":
            problems.append(("ambiguous", f"ambiguous verdict ({said})"))
        else:
            problems.append(("no_verdict", "no verdict found"))
        if not j.criteria_met and v.label != "positive":
            problems.append(("negative", j.criteria))
        elif j.criteria_met and v.label == "positive":
            passes.insert(1, j.criteria if j.criteria != "no success-criteria section"
                          else "success criteria met (no criteria section)")
        if j.blocker:
            problems.append(("blocked", f"critical blocker ({j.blocker})"))

    def pending_reason(self, b: Bundle, files: MVEFiles, folder: Path | None) -> str:
        if folder is not None and not b.logs and not b.code_dirs:
            return "no results document (README.md, results.md or another *.md)"
        have = [n for n, _ in files.logs] + [n for n, _ in files.mentions]
        have += [f"{self.code.name}/{d.name}/" for d in b.code_dirs]
        last = ""
        for _, text in files.logs:  # the newest line that says where the run stands, else the first log's last line
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            said = next((line for line in reversed(lines) if pending_words(line)), None)
            if said or (lines and not last):
                last = f"; last: {(said or lines[-1])[:120]!r}"
            if said:
                break
        return f"pending: no results yet ({', '.join(dict.fromkeys(have))}{last})"

    def facts(self, b: Bundle) -> tuple[dict, list[str]]:
        """The first results.json/yaml that parses (the planner's facts), and notes on those that do not."""
        results, notes = {}, []
        for p in b.structured:
            text = self.col.texts.get(p)
            if text is None:
                continue
            data = load_structured(p.name, text)
            if data is None:
                kind = "JSON" if p.suffix.lower() == ".json" else "YAML"
                notes.append(f"{p.name} is not valid {kind} (or not an object)")
            elif not results:
                results = data
        return results, notes

    def slug_from_files(self, b: Bundle) -> str:
        for p in b.flat_results + b.logs + ([b.proposal] if b.proposal else []):
            m = re.match(r"^(?:[a-z-]*?)?\d{3,4}[-_](.+?)(?:[-_]results?)?$", p.stem, re.IGNORECASE)
            if m and m.group(1).lower() not in ("results", "result"):
                return m.group(1)
        return ""


def scan(
    experiments_dir: str | Path,
    code_dir: str | Path,
    proposals_dir: str | Path | None = None,
    claimed: Iterable[str] = frozenset(),
    judge: Judge | None = None,
) -> ScanResult:
    """Every MVE under the folders, in either layout, sorted by id, each with its
    status and the reason; the files read; the files that could not be.

    `claimed` holds the ids ("003", or WorkTracker keys "scale:003") someone
    holds a claim on. A missing `code_dir` means nothing has been scaled yet.
    `judge` reads the results (default: the heuristics). One unreadable file
    never stops the scan: it is listed, and its MVE is not scalable.
    """
    experiments_dir = Path(experiments_dir)
    code_dir = Path(code_dir)
    if not experiments_dir.exists():
        raise FileNotFoundError(f"experiments folder not found: {experiments_dir}")
    if not experiments_dir.is_dir():
        raise NotADirectoryError(f"experiments folder is not a directory: {experiments_dir}")
    proposals = Path(proposals_dir) if proposals_dir is not None else experiments_dir.parent / "proposals"
    claimed_ids = {normalise_claim(c) for c in claimed}
    col = collect(experiments_dir, code_dir, proposals)
    builder = _Builder(col, experiments_dir, code_dir, claimed_ids)
    parts = [(part, folder, builder.files_of(part, folder)) for b in col.bundles.values()
             for part, folder in builder.split(b)]
    judged: list[Judgement | None] = [None] * len(parts)
    if judge is not None and not isinstance(judge, HeuristicJudge):
        todo = [i for i, (part, _, files) in enumerate(parts) if builder.needs_judge(part, files)]
        many = getattr(judge, "judge_many", None)
        answers = many([parts[i][2] for i in todo]) if many else [judge.judge(parts[i][2]) for i in todo]
        for i, answer in zip(todo, answers):
            judged[i] = answer
    mves = [builder.build(part, folder, files, judged[i]) for i, (part, folder, files) in enumerate(parts)]
    return ScanResult(mves, len(col.texts), col.files_seen, col.unreadable, col.notes)


def find_mves(
    experiments_dir: str | Path,
    code_dir: str | Path,
    proposals_dir: str | Path | None = None,
    claimed: Iterable[str] = frozenset(),
    judge: Judge | None = None,
) -> list[MVE]:
    """`scan(...).mves`: every MVE, sorted by id, with whether it is scalable and why."""
    return scan(experiments_dir, code_dir, proposals_dir, claimed, judge).mves


__all__ = ["MVE", "SCALE_PREFIX", "STATUSES", "ScanResult", "find_mves", "normalise_claim", "scan"]
