"""What an MVE's results say about its success criteria and its blockers.
Pure functions of markdown text.

Criteria come as checklists, lists and tables with ✅ / ❌ / "⚠️ Soft fail" /
"⬜ Not tested" rows, and as summary lines ("Overall: 4/6 criteria passed").
Not every row is a criterion of the idea: a row the document marks as a
baseline expectation (or a sanity check of the setup) checks the setup, and a
row not tested has not failed. Only an unmet row that counts fails the MVE.

    read_criteria(text) -> Criteria (rows, statements, overall; .met, .summary())
    success_criteria_met(text) -> (met, reason)
    critical_blocker(text) -> the line recording an open critical blocker, or None
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from actors.scaler.markdown import (
    CHECKBOX_RE,
    LIST_ITEM_RE,
    NEGATIVE_MARKS,
    POSITIVE_MARKS,
    UNTESTED_MARKS,
    WARNING_MARKS,
    heading_level,
    hypothetical,
    is_label_line,
    mask,
    negated,
    prose_lines,
    section,
    table_cells,
)

State = Literal["met", "unmet", "soft", "untested", "unknown"]

_CRITERIA_HEADING_RE = re.compile(
    r"\b(?:success|acceptance|exit|pass|go/no-go)\s+criteri(?:a|on)\b|^\W*criteria\W*$|\bbaseline\s+expectations?\b",
    re.IGNORECASE)
# A table whose header names criteria is a criteria table wherever it stands.
_CRITERIA_HEADER_RE = re.compile(r"^\W*(?:criteri(?:on|a)|check|requirement|goal|target|expectation)s?\W*$",
                                 re.IGNORECASE)
_UNTESTED_RE = re.compile(
    r"\bnot\s+(?:yet\s+)?(?:tested|run|evaluated|measured|checked|attempted)\b|\buntested\b|\bskipped\b"
    r"|\bn/a\b|\bTBD\b|\bpending\b|\bdeferred\b", re.IGNORECASE)
_SOFT_RE = re.compile(r"\bsoft[\s-]*fail(?:s|ed|ure)?\b|\bmarginal(?:ly)?\b|\bborderline\b|\bnear[\s-]miss\b",
                      re.IGNORECASE)
_UNMET_RE = re.compile(
    r"\bnot\s+(?:(?:all|yet|fully|been)\s+)*(?:met|achieved|reached)\b|\bunmet\b|\bmissed\b|\bpartial(?:ly)?\b"
    r"|\bfail(?:s|ed|ure)?\b|\bno\b(?=\s*$)",
    re.IGNORECASE,
)
_MET_RE = re.compile(r"\bmet\b|\bachieved\b|\bpass(?:ed|es)?\b|\bdone\b|\byes\b|\bok\b", re.IGNORECASE)
_STATEMENT_RE = re.compile(
    r"\b(?:success\s+|acceptance\s+)?criteri(?:a|on)\s*[:\u2014\u2013-]?\s*(?:(?:were|was|are|is|have|has|been|all|yet)\s+)*"
    r"(?:not\s+(?:(?:all|yet|fully|been)\s+)*met|unmet|partially\s+met)\b",
    re.IGNORECASE,
)
_OVERALL_RE = re.compile(
    r"(\d+)\s*(?:/|of|out\s+of)\s*(\d+)\s*(?:success\s+|acceptance\s+|idea\s+)?(?:criteria|criterion|checks?|targets?|"
    r"goals?|rows?)?\s*(?:were\s+|are\s+)?(?:passed|pass|met|satisfied|achieved|green)", re.IGNORECASE)

# How a document says a row checks the setup rather than the idea.
_BASELINE_ROW_RE = re.compile(r"\bbaseline\s+expectations?\b|\bexpectation\b|\bsanity(?:\s+check)?\b|\bsetup\s+check\b"
                              r"|[(\[]\s*baseline\s*[)\]]", re.IGNORECASE)
_TYPE_CELLS = {"baseline", "expectation", "sanity", "control", "setup", "baseline expectation", "stretch", "optional"}
# A row the document says is not required of the idea.
_OPTIONAL_ROW_RE = re.compile(r"\bstretch(?:\s+goal)?\b|\boptional\b|\bnice[\s-]to[\s-]have\b|\bbonus\b",
                              re.IGNORECASE)
# "val_bpb improves by ≥ 0.01" over a cell "0.004": a threshold and a number to hold it to.
_THRESHOLD_RE = re.compile(r"(≥|>=|>|≤|<=|<|\bat\s+least\b|\bat\s+most\b|\bwithin\b)\s*([−-]?\d+(?:\.\d+)?)\s*(%?)",
                           re.IGNORECASE)
_NUMBER_RE = re.compile(r"[−+-]?\d+(?:\.\d+)?")
_DOC_SAYS_BASELINE_RE = re.compile(r"\bbaseline\s+expectations?\b|\bnot\s+(?:a\s+)?criteri(?:a|on)\s+of\s+the\s+idea\b"
                                   r"|\bsanity\s+checks?\b", re.IGNORECASE)


@dataclass(frozen=True)
class Criterion:
    text: str  # the row as written
    state: State
    counts: bool = True  # False: the document says it checks the setup (a baseline expectation), not the idea


@dataclass(frozen=True)
class Criteria:
    rows: tuple[Criterion, ...] = ()
    statements: tuple[str, ...] = ()  # "success criteria not met" lines
    overall: tuple[int, int] | None = None  # "Overall: 4/6 criteria passed"
    overall_line: str = ""
    overall_excused: bool = False  # the overall line says its misses do not count
    notes: tuple[str, ...] = field(default=())

    @property
    def failed(self) -> list[Criterion]:
        return [r for r in self.rows if r.counts and r.state == "unmet"]

    @property
    def found(self) -> bool:
        return bool(self.rows or self.statements or self.overall)

    @property
    def met(self) -> bool:
        if self.statements or self.failed:
            return False
        if not self.rows and self.overall and self.overall[0] < self.overall[1]:
            return self.overall_excused
        return True

    def summary(self) -> str:
        """'success criteria met (4/6; 1 soft fail, 1 not tested)' or why not."""
        if self.statements:
            return f"success criteria not met ({self.statements[0]!r})"
        if self.failed:
            row = self.failed[0].text
            box = CHECKBOX_RE.match(row)
            return f"success criteria not met ({'unchecked: ' if box and box.group(1) == ' ' else ''}{row!r})"
        if not self.rows and self.overall:
            n, m = self.overall
            if n < m and not self.overall_excused:
                return f"success criteria not all met ({self.overall_line!r})"
            return f"success criteria {n}/{m} ({self.overall_line!r})"
        if not self.rows:
            return "success criteria met" if self.found else "no success-criteria section"
        counted = [r for r in self.rows if r.counts]
        met = sum(r.state == "met" for r in counted)
        extra = [f"{n} {what}" for n, what in (
            (sum(r.state == "soft" for r in counted), "soft fail"),
            (sum(r.state == "untested" for r in self.rows), "not tested"),
            (sum(not r.counts and r.state == "unmet" for r in self.rows), "not required, missed"))
            if n]
        return f"success criteria met ({met}/{len(counted)}{'; ' + ', '.join(extra) if extra else ''})"


def _state(text: str) -> State:
    """A row's state from what it says: untested before soft before unmet before met."""
    masked = mask(text)
    if any(c in text for c in UNTESTED_MARKS) or _UNTESTED_RE.search(masked):
        return "untested"
    if any(c in text for c in WARNING_MARKS) or _SOFT_RE.search(masked):
        return "soft"
    if any(c in text for c in NEGATIVE_MARKS):
        return "unmet"
    if any(not negated(masked, m.start())[0] for m in _UNMET_RE.finditer(masked)):
        return "unmet"
    if any(c in text for c in POSITIVE_MARKS) or _MET_RE.search(masked):
        return "met"
    return "unknown"


def _row(line: str, doc_says_baseline: bool, in_baseline_section: bool) -> Criterion | None:
    box = CHECKBOX_RE.match(line)
    cells = table_cells(line)
    if box:
        name, state = box.group(2), ("met" if box.group(1) != " " else "unmet")
        rest_state = _state(name)
        if rest_state in ("untested", "soft"):  # "- [ ] long context (not tested)"
            state = rest_state
    elif cells is not None:
        cells = [c for c in cells if c]
        if not cells:
            return None
        # The criterion's name is the first cell that is more than an index ("1", "C2").
        named = [c for c in cells if not re.fullmatch(r"[#\w]{0,3}\d*\.?", c)]
        name = named[0] if named else cells[0]
        rest = " | ".join(c for c in cells if c is not name)
        state = _state(rest) if rest else "unknown"
        if state == "unknown":
            state = _state(line)
        if state == "unknown":  # numbers only: hold the observed value to the row's threshold
            state = _against_threshold(cells, name)
    else:
        name, state = line.strip(), _state(line)
    if state == "unknown":
        return None
    lowered = {mask(c).strip().lower() for c in (cells or [])}
    counts = not (in_baseline_section or _BASELINE_ROW_RE.search(mask(line)) or _OPTIONAL_ROW_RE.search(mask(line))
                  or lowered & _TYPE_CELLS
                  or (doc_says_baseline and re.match(r"^\W*baseline\b", mask(name), re.IGNORECASE)))
    return Criterion(line.strip(), state, bool(counts))


def _number(text: str) -> float:
    return float(text.replace("\u2212", "-"))


def _against_threshold(cells: list[str], name: str) -> State:
    """'met' or 'unmet' when one cell states a threshold ("≥ 0.01", "≤ 5%") and
    the last cell after it holds one number; 'unknown' otherwise."""
    for i, cell in enumerate(cells):
        t = _THRESHOLD_RE.search(cell)
        if not t:
            continue
        observed = [c for c in cells[i + 1:] if c is not name]
        if not observed:
            return "unknown"
        numbers = _NUMBER_RE.findall(observed[-1])
        if len(numbers) != 1:
            return "unknown"
        value, limit = abs(_number(numbers[0])), abs(_number(t.group(2)))
        op = t.group(1).lower()
        if op in ("≥", ">=", ">") or op.startswith("at least"):
            return "met" if value >= limit else "unmet"
        return "met" if value <= limit else "unmet"
    return "unknown"


def _criteria_blocks(lines: list[str]) -> list[tuple[list[int], bool]]:
    """(line numbers of the body, is a baseline-expectations block) of every
    criteria section, and of every table whose header row names criteria."""
    blocks = []
    for i, line in enumerate(lines):
        masked = mask(line)
        if _CRITERIA_HEADING_RE.search(masked) and (
                heading_level(line) is not None or is_label_line(line)
                or re.match(r"^[^\w]*(?:success|acceptance)\s+criteri(?:a|on)\s*:?\s*$", masked, re.IGNORECASE)):
            body = list(range(i + 1, i + 1 + len(section(lines, i))))
            blocks.append((body, bool(re.search(r"\bbaseline\s+expectations?\b|\bsanity\b", masked, re.IGNORECASE))))
            continue
        cells = table_cells(line)
        if cells and any(_CRITERIA_HEADER_RE.match(mask(c)) for c in cells) and _is_rule(lines, i + 1):
            body = []
            for j in range(i, len(lines)):
                if not lines[j].strip().startswith("|"):
                    break
                body.append(j)
            blocks.append((body, False))
    return blocks


def _is_rule(lines: list[str], j: int) -> bool:
    """Line j is a table's |---| rule."""
    return j < len(lines) and lines[j].strip().startswith("|") and table_cells(lines[j]) is None


def read_criteria(text: str) -> Criteria:
    lines = prose_lines(text)
    doc_says_baseline = bool(_DOC_SAYS_BASELINE_RE.search(mask("\n".join(lines))))
    rows: list[Criterion] = []
    seen: set[int] = set()
    for body, baseline_block in _criteria_blocks(lines):
        for index in body:
            line = lines[index]
            if not line.strip() or index in seen:
                continue
            seen.add(index)
            cells = table_cells(line)
            if cells is not None and _is_rule(lines, index + 1):
                continue  # a table's header row, above its |---| rule
            if cells is None and not CHECKBOX_RE.match(line) and not LIST_ITEM_RE.match(line) \
                    and not any(c in line for c in POSITIVE_MARKS + NEGATIVE_MARKS + WARNING_MARKS + UNTESTED_MARKS) \
                    and not re.search(r"\bmet\b|\bnot\s+met\b", mask(line), re.IGNORECASE):
                continue  # prose under the heading ("Rows marked ... check the setup")
            if _OVERALL_RE.search(mask(line)) and cells is None:
                continue  # the summary line, read below
            row = _row(line, doc_says_baseline, baseline_block)
            if row is not None:
                rows.append(row)
    statements, overall, overall_line, excused = [], None, "", False
    for line in lines:
        masked = mask(line)
        m = _STATEMENT_RE.search(masked)
        if m and not negated(masked, m.start())[0] and not hypothetical(masked, m.start()):
            statements.append(line.strip())
        o = _OVERALL_RE.search(masked)
        if o and overall is None and (re.search(r"criteri|overall|score", masked, re.IGNORECASE)):
            overall, overall_line = (int(o.group(1)), int(o.group(2))), line.strip()
            excused = bool(_DOC_SAYS_BASELINE_RE.search(masked) or _UNTESTED_RE.search(masked)
                           or _SOFT_RE.search(masked))
    return Criteria(tuple(rows), tuple(statements), overall, overall_line, excused)


def success_criteria_met(text: str) -> tuple[bool, str]:
    """(met, reason): no counted row unmet, no "criteria not met" statement,
    and no unexplained shortfall in an "Overall: N/M" line. No criteria at all is fine."""
    criteria = read_criteria(text)
    return criteria.met, criteria.summary()


# --- blockers ---------------------------------------------------------------------

_BLOCKER_WORD_RE = re.compile(r"(?<![\w-])blocker(?:s)?\b|\bBLOCKED\b|\bblocking\b", re.IGNORECASE)
_BLOCKER_CLEAR_RE = re.compile(
    r"\b(?:none|n/?a|nil|resolved|fixed|mitigated|cleared|unblocked|non[\s-]*critical|non[\s-]*blocking|minor"
    r"|nice[\s-]+to[\s-]+have|low[\s-]+priority|optional|cosmetic)\b"
    r"|\bno\s+(?:critical\s+|known\s+|open\s+)?block(?:ers?|ing)\b|^\W*-\W*$",
    re.IGNORECASE,
)
_CRITICAL_RE = re.compile(r"(?<![\w-])(?<!non )critical\b|\bshow[\s-]*stopper\b|\bhard\s+blocker\b", re.IGNORECASE)
_BLOCKER_HEADING_RE = re.compile(r"(?<![\w-])(?:critical\s+)?blockers?\b|^\W*blocked\W*$", re.IGNORECASE)
_BLOCKER_LABEL_RE = re.compile(
    r"^[^\w]*(?:critical\s+|open\s+|known\s+)*blockers?\s*(?:\([^)]*\))?\s*[:\u2014\u2013=|-]\s*(.*)$"
    r"|^[^\w]*status\s*:\s*(blocked\b.*)$",
    re.IGNORECASE,
)


def _section_items(body: list[str]) -> list[str]:
    """The entries of a section: its list items (or table rows) when it has
    any, else its first paragraph. Prose after a list ("Recommendation: ...")
    is not an entry."""
    items: list[str] = []
    for line in body:
        if LIST_ITEM_RE.match(line):
            items.append(line)
        elif items and line.strip() and line[:1].isspace() and not line.lstrip().startswith("|"):
            items[-1] = f"{items[-1].rstrip()} {line.strip()}"  # an item continued on the next line
        elif items and not line.strip():
            continue
    if items:
        return items
    para: list[str] = []
    for line in body:
        if line.strip():
            para.append(line)
        elif para:
            break
    return para


def _is_open_blocker(text: str) -> bool:
    t = mask(text).strip()
    if not re.search(r"\w", t):
        return False
    if _BLOCKER_CLEAR_RE.search(t) or re.match(r"^\s*~~", text.strip()):
        return False
    box = CHECKBOX_RE.match(text)
    return not (box and box.group(1) != " ")  # a ticked box is a resolved blocker


def critical_blocker(text: str) -> str | None:
    """The first line recording an open critical blocker, or None.

    "Blocker: ...", "Critical blocker: ...", "Status: BLOCKED ...", or an item
    under a "Blockers" heading count, unless they say none / n/a / resolved /
    minor / nice to have. Under a heading, an item marked critical comes first.
    """
    lines = prose_lines(text)
    for i, line in enumerate(lines):
        masked = mask(line)
        if not _BLOCKER_WORD_RE.search(masked):
            continue
        is_heading = heading_level(line) is not None or is_label_line(line)
        if is_heading and _BLOCKER_HEADING_RE.search(masked) and not _BLOCKER_CLEAR_RE.search(masked):
            value = masked.split(":", 1)[1] if ":" in masked else ""
            if _is_open_blocker(value):
                return line.strip()
            items = [item for item in _section_items(section(lines, i)) if _is_open_blocker(item)]
            critical = [item for item in items if _CRITICAL_RE.search(mask(item))]
            if critical or items:
                return (critical or items)[0].strip()
            continue
        label = _BLOCKER_LABEL_RE.match(masked)
        if label:
            value = label.group(1) if label.group(1) is not None else label.group(2)
            if _is_open_blocker(value):
                return line.strip()
            continue
        if re.search(r"\bcritical\s+blocker\b|\bBLOCKED\b", masked) and _is_open_blocker(line):
            return line.strip()
    return None
