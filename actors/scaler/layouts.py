"""Which files of a research folder belong to which experiment number.

Teams write two layouts, and mixes of them; both are read alike:

    folder layout   experiments/NNN_slug/          README.md, results.md, notes, results.json, code
    flat layout     experiments/NNN_results.md     (or NNN_slug_results.md, NNN_results.json)
                    experiments/experiment-log-NNN[-slug].md     a running log of one number
                    experiments/experiment-log.md  a log of many numbers, one section each
                    experiments/update-log-YYYY-MM-DD.md         dated summaries naming numbers
                    code/NNN[_slug]/               the MVE's code: README.md, models/, train.py,
                                                   config.yaml, results.json|yaml|md
    both            proposals/NNN-slug.md          (or the proposal the code's README names)
                    code/NNN_scaled*/              scaled experiments (ours carry a marker)

Roles: a *results* file states the outcome and governs; a *document* (notes,
a write-up) may state it too; *logs* and *update logs* inform and never
decide; a *plan* never states an outcome. Names starting with "." or "_"
(templates, the set-aside folders of failed attempts) are ignored.

    collect(experiments_dir, code_dir, proposals_dir) -> Collection
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_TEXT_BYTES = 1_000_000  # a longer note is read up to here, and says so

_ID = r"(\d{3,4})(?!\d)"
_MVE_DIR_RE = re.compile(rf"^(?:exp(?:eriment)?[_-]?)?{_ID}(?:[_-](.+))?$", re.IGNORECASE)
_SCALED_RE = re.compile(r"^scaled(?:\b|_|-|$)", re.IGNORECASE)
_TEXT_EXT = {".md", ".markdown", ".txt", ".rst"}
_DATA_EXT = {".json", ".yaml", ".yml"}
_UPDATE_RE = re.compile(r"update|weekly|daily|standup|status[-_]report|digest|^\d{4}-\d{2}-\d{2}", re.IGNORECASE)
_SHARED_LOG_RE = re.compile(r"^(?:experiments?[-_ ]?)?(?:log|journal|lab[-_ ]?notes?|notebook)s?$", re.IGNORECASE)
_NUMBERED_LOG_RE = re.compile(
    rf"^(?:experiment|exp)?[-_ ]?(?:log|journal|progress)[-_ ]?{_ID}(?:[-_ ](.+))?$"
    rf"|^{_ID}[-_ ](?:(.+?)[-_ ])?(?:log|journal|progress|running[-_ ]log)$", re.IGNORECASE)
_NUMBERED_RESULTS_RE = re.compile(
    rf"^{_ID}[-_ ](?:(.+?)[-_ ])?(?:results?|report|summary|findings|writeup|write-up|conclusions?|verdict)$"
    rf"|^(?:results?|report|summary)[-_ ]{_ID}(?:[-_ ](.+))?$", re.IGNORECASE)
_NUMBERED_RE = re.compile(rf"^(?:exp(?:eriment)?[-_ ]?)?{_ID}(?:[-_ ](.+))?$", re.IGNORECASE)
_PLAN_WORDS_RE = re.compile(r"plan|proposal|design|idea|todo|spec", re.IGNORECASE)
_LOG_WORDS_RE = re.compile(r"log|journal|progress", re.IGNORECASE)
_RESULTS_NAMES = {"results", "result", "readme", "report", "summary", "findings", "verdict", "conclusion"}
_STRUCTURED_NAME_RE = re.compile(r"^(?:results?|summary|verdict|decision|outcome|metrics)$", re.IGNORECASE)
# A number an update log or a shared log names as an experiment: at the start of
# a line, list item or heading ("- 023 hyper-connections: abandoned", "## 051 —"),
# after "exp"/"experiment"/"MVE"/"#", and the numbers listed right after one ("027, 051").
_MENTION_START_RE = re.compile(r"^\s*(?:[-*+>]|\d+[.)]\s|#{1,6})?\s*(?:\*\*|__)?\s*(?:exp(?:eriment)?\.?\s*|mve\s*|#)?"
                               r"(\d{3,4})(?![\d.]|[:/-]\d)", re.IGNORECASE)
_MENTION_TAG_RE = re.compile(r"(?:\bexp(?:eriment)?s?\.?\s*#?|\bMVE\s*#?|#)(\d{3,4})(?!\d)", re.IGNORECASE)
_MENTION_LIST_RE = re.compile(r"\s*(?:,|and|&|/)\s*(\d{3,4})(?!\d)")
# "110_results_v2.md", "110_results-final.md": a later version of one experiment's results.
_VERSION_RE = re.compile(r"(?:^|[-_ ])(v\d+|rerun|re-run|redo|final|updated?|fixed|revised|old|draft)$", re.IGNORECASE)
_PROPOSAL_REF_RE = re.compile(r"proposals/([^\s)\]'\"`>]+\.md)", re.IGNORECASE)


# Words that name a kind of note, not an experiment: "063_notes.md" is 063's, not a second 063.
_GENERIC_SLUG_RE = re.compile(r"^(?:notes?|write-?up|analysis|details|discussion|figures|plots|appendix|draft|review"
                              r"|readme|index|todo|misc)$", re.IGNORECASE)


def is_experiment_number(raw: str) -> bool:
    """3 or 4 digits, but not a year ("2024_archive/" is not experiment 2024)."""
    return len(raw) == 3 or not 1900 <= int(raw) <= 2099


def normalise_id(raw: str) -> str:
    """"63", "063" and "0063" name one experiment: "063"."""
    return f"{int(raw):03d}"


def read_text(path: Path) -> tuple[str | None, str | None]:
    """(text, None), or (None, why it cannot be read). Notes written on another
    machine in cp1252 are read as such; a file with NUL bytes or control
    characters is not a note."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        return None, f"cannot read {path.name}: {exc.strerror or exc}"
    raw = raw[:MAX_TEXT_BYTES]
    if b"\x00" in raw:
        return None, f"{path.name} looks binary (contains NUL bytes), not a text document"
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        first_bad = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
    text = raw.decode("cp1252", errors="replace")
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f") + text.count("\ufffd")
    if controls > max(2, len(text) // 100):
        return None, f"{path.name} is not UTF-8 text ({first_bad}) and does not read as text in cp1252 either"
    return text, None


@dataclass
class Bundle:
    """Every file found for one experiment number."""

    id: str
    folders: list[Path] = field(default_factory=list)  # experiments/NNN_slug/
    code_dirs: list[Path] = field(default_factory=list)  # code/NNN[_slug]/
    scaled_dirs: list[Path] = field(default_factory=list)  # code/NNN_scaled*/
    results: list[Path] = field(default_factory=list)  # results documents, most telling first
    flat_results: list[Path] = field(default_factory=list)  # experiments/NNN_results.* (one per experiment)
    documents: list[Path] = field(default_factory=list)  # other notes that may state the outcome
    structured: list[Path] = field(default_factory=list)  # results.json / results.yaml / NNN_results.json
    logs: list[Path] = field(default_factory=list)  # running logs of this number
    log_sections: list[tuple[Path, str]] = field(default_factory=list)  # its sections of a shared log
    mentions: list[tuple[Path, str]] = field(default_factory=list)  # update-log lines naming it
    readmes: list[Path] = field(default_factory=list)  # code/NNN/README.md
    plans: list[Path] = field(default_factory=list)
    proposal: Path | None = None
    slugs: list[str] = field(default_factory=list)
    superseded: list[Path] = field(default_factory=list)  # older versions of a results file

    def drop_superseded(self) -> None:
        """Keep the newest version of a results file; older ones inform, like logs."""
        def base_and_rank(p: Path) -> tuple[str, int]:
            m = _VERSION_RE.search(p.stem)
            if not m:
                return p.stem.lower(), 1
            tag = m.group(1).lower()
            rank = {"old": 0, "draft": 0, "final": 99}.get(tag, int(tag[1:]) if tag[1:].isdigit() else 50)
            return p.stem[:m.start()].lower(), rank
        groups: dict[str, list[Path]] = {}
        for p in self.flat_results:
            groups.setdefault(base_and_rank(p)[0], []).append(p)
        for paths in groups.values():
            if len(paths) < 2:
                continue
            newest = max(paths, key=lambda p: base_and_rank(p)[1])
            for old in paths:
                if old is not newest:
                    self.flat_results.remove(old)
                    for where in (self.results, self.documents, self.structured):
                        if old in where:
                            where.remove(old)
                    self.logs.append(old)  # "superseded": it informs, it does not decide
                    self.superseded.append(old)

    def shared_by(self) -> list[str]:
        """What says two experiments share this number: two folders, two code
        folders, two results files, two logs."""
        out = []
        logs = [p for p in self.logs if p not in self.superseded]
        for what, items in (("experiment folders", self.folders), ("code folders", self.code_dirs),
                            ("results files", self.flat_results), ("logs", logs)):
            if len(items) > 1:
                out.append(f"{len(items)} {what} ({', '.join(p.name for p in items)})")
        return out


@dataclass
class Collection:
    bundles: dict[str, Bundle]
    texts: dict[Path, str]  # every file read, by path
    files_seen: int  # every file looked at, read or not
    unreadable: list[tuple[Path, str]]
    notes: list[str]  # what the scan saw beside the MVEs (an old tracker state, ...)
    looked_for: str = ""


LOOKED_FOR = ("folders experiments/NNN_slug/ (folder layout); experiments/NNN_results.md, "
              "experiment-log-NNN*.md, experiment-log.md sections and code/NNN/ (flat layout)")


class _Collector:
    def __init__(self, experiments: Path, code: Path, proposals: Path | None):
        self.experiments, self.code, self.proposals = experiments, code, proposals
        self.bundles: dict[str, Bundle] = {}
        self.texts: dict[Path, str] = {}
        self.unreadable: list[tuple[Path, str]] = []
        self.notes: list[str] = []
        self.seen = 0

    def bundle(self, raw_id: str) -> Bundle:
        i = normalise_id(raw_id)
        return self.bundles.setdefault(i, Bundle(i))

    def read(self, path: Path) -> str | None:
        if path in self.texts:
            return self.texts[path]
        text, error = read_text(path)
        if error:
            self.unreadable.append((path, error))
            return None
        self.texts[path] = text
        return text

    # -- experiments/ ------------------------------------------------------------------

    def scan_experiments(self) -> None:
        for entry in sorted(self.experiments.iterdir()):
            if entry.name.startswith((".", "_")):
                continue
            if entry.is_dir():
                m = _MVE_DIR_RE.match(entry.name)
                files = [p for p in entry.rglob("*") if p.is_file() and not p.name.startswith(".")]
                self.seen += len(files)
                if m and files and is_experiment_number(m.group(1)):
                    b = self.bundle(m.group(1))
                    b.folders.append(entry)
                    b.slugs.append(m.group(2) or "")
                    self.scan_folder(b, entry, results_first=True)
                continue
            if entry.is_file():
                self.seen += 1
                self.scan_experiments_file(entry)

    def scan_experiments_file(self, path: Path) -> None:
        stem, ext = path.stem, path.suffix.lower()
        if path.name == "active_work.json":
            self.notes.append(f"{path} holds the old tracker's state: import it with "
                              f"`python -m actors.work_tracker import {path}`")
            return
        if ext not in _TEXT_EXT | _DATA_EXT:
            return
        if ext in _TEXT_EXT and _UPDATE_RE.search(stem) and not _NUMBERED_LOG_RE.match(stem):
            self.scan_update_log(path)
            return
        if ext in _TEXT_EXT and _SHARED_LOG_RE.match(stem):
            self.scan_shared_log(path)
            return
        m = _NUMBERED_LOG_RE.match(stem)
        if m and ext in _TEXT_EXT and is_experiment_number(m.group(1) or m.group(3)):
            b = self.bundle(m.group(1) or m.group(3))
            b.logs.append(path)
            self.read(path)
            return
        m = _NUMBERED_RESULTS_RE.match(stem)
        if m and is_experiment_number(m.group(1) or m.group(3)):
            b = self.bundle(m.group(1) or m.group(3))
            b.flat_results.append(path)
            (b.structured if ext in _DATA_EXT else b.results).append(path)
            self.read(path)
            return
        m = _NUMBERED_RE.match(stem)
        if m and is_experiment_number(m.group(1)):
            b, slug = self.bundle(m.group(1)), m.group(2) or ""
            if ext in _DATA_EXT:
                b.structured.append(path)
            elif _PLAN_WORDS_RE.search(slug):
                b.plans.append(path)
            elif _LOG_WORDS_RE.search(slug):
                b.logs.append(path)
            else:  # "063_dyt.md": the experiment's write-up ("063_notes.md": notes of it)
                b.documents.append(path)
                if not _GENERIC_SLUG_RE.match(slug):
                    b.flat_results.append(path)
            self.read(path)
        # Other files (an index README, a template) are seen, not attributed.

    def scan_folder(self, b: Bundle, folder: Path, results_first: bool) -> None:
        """The notes and records at the top of an experiment's (or code) folder."""
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            stem, ext = path.stem.lower(), path.suffix.lower()
            if ext in _DATA_EXT:
                if _STRUCTURED_NAME_RE.match(stem):
                    b.structured.append(path)
                    self.read(path)
                continue
            if ext not in _TEXT_EXT:
                continue
            self.read(path)
            if _LOG_WORDS_RE.search(stem):
                b.logs.append(path)
            elif _PLAN_WORDS_RE.search(stem):
                b.plans.append(path)
            elif stem == "readme" and not results_first:
                b.readmes.append(path)
            elif stem in _RESULTS_NAMES or "result" in stem:
                b.results.append(path)
            else:
                b.documents.append(path)
        b.results.sort(key=lambda p: ({"results": 0, "result": 0, "readme": 1}.get(p.stem.lower(), 2), p.name))

    # -- logs of many numbers -------------------------------------------------------

    def _mentioned(self, line: str) -> list[str]:
        ids = []
        m = _MENTION_START_RE.match(line)
        if m:
            ids.append(m.group(1))
            pos = m.end()
            while (more := _MENTION_LIST_RE.match(line, pos)) is not None:
                ids.append(more.group(1))
                pos = more.end()
        ids += [t.group(1) for t in _MENTION_TAG_RE.finditer(line)]
        return list(dict.fromkeys(normalise_id(i) for i in ids if is_experiment_number(i)))

    def scan_update_log(self, path: Path) -> None:
        text = self.read(path)
        for line in (text or "").splitlines():
            for i in self._mentioned(line):
                self.bundle(i).mentions.append((path, line.strip()))

    def scan_shared_log(self, path: Path) -> None:
        """experiment-log.md: each heading naming numbers opens their section."""
        text = self.read(path)
        current: list[str] = []
        body: list[str] = []

        def flush() -> None:
            for i in current:
                self.bundle(i).log_sections.append((path, "\n".join(body).strip()))

        for line in (text or "").splitlines():
            if re.match(r"^\s{0,3}#{1,6}\s", line):
                flush()
                current, body = self._mentioned(line), [line]
            else:
                body.append(line)
        flush()

    # -- code/ and proposals/ -----------------------------------------------------------

    def scan_code(self) -> None:
        if not self.code.is_dir():
            return
        for entry in sorted(self.code.iterdir()):
            if entry.name.startswith((".", "_")) or not entry.is_dir():
                continue
            m = _MVE_DIR_RE.match(entry.name)
            if not m or not is_experiment_number(m.group(1)):
                continue
            b, slug = self.bundle(m.group(1)), m.group(2) or ""
            if _SCALED_RE.match(slug):
                b.scaled_dirs.append(entry)
                continue
            self.seen += sum(1 for p in entry.rglob("*") if p.is_file())
            b.code_dirs.append(entry)
            b.slugs.append(slug)
            self.scan_folder(b, entry, results_first=False)

    def find_proposals(self) -> None:
        available = sorted(p for p in self.proposals.glob("*.md") if p.is_file()) \
            if self.proposals is not None and self.proposals.is_dir() else []
        by_name = {p.name.lower(): p for p in available}
        for b in self.bundles.values():
            refs = []
            for path in b.readmes + b.results + b.documents:
                text = self.texts.get(path) or ""
                refs += [r.rsplit("/", 1)[-1].lower() for r in _PROPOSAL_REF_RE.findall(text)]
                refs += [name for name in by_name if name in text.lower()]
            named = [by_name[r] for r in refs if r in by_name]
            numbered = [p for p in available if (m := _NUMBERED_RE.match(p.stem)) and normalise_id(m.group(1)) == b.id]
            found = named or numbered
            b.proposal = found[0] if found else None


def collect(experiments_dir: Path, code_dir: Path, proposals_dir: Path | None) -> Collection:
    """Every experiment number in the folders, with its files; never raises on
    a file it cannot read (it is listed in `unreadable`)."""
    c = _Collector(Path(experiments_dir), Path(code_dir), Path(proposals_dir) if proposals_dir else None)
    c.scan_experiments()
    c.scan_code()
    c.find_proposals()
    for b in c.bundles.values():
        b.drop_superseded()
    if c.proposals is not None and c.proposals.is_dir():
        c.seen += sum(1 for p in c.proposals.glob("*.md") if p.is_file())
    return Collection(dict(sorted(c.bundles.items())), c.texts, c.seen, c.unreadable, c.notes, LOOKED_FOR)
