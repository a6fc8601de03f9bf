"""What an MVE's results say: the verdict, whether its success criteria were
met, and whether a critical blocker is recorded. Pure functions of markdown text.

Research notes are written by people and LLMs in many styles, so the parser is
deliberately forgiving about *form* (case, markdown emphasis, emoji, tables,
headings) and deliberately conservative about *meaning*: a negative phrase
anywhere in a verdict beats a positive one, because scaling a failed MVE by
mistake costs GPU hours while skipping a good one costs a re-run of `scan`.

    parse_verdict(text) -> Verdict("positive" | "negative" | "unknown", evidence, source)
    success_criteria_met(text) -> (met, reason)
    critical_blocker(text) -> the line recording one, or None
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# Markdown emphasis. Masked to spaces (not removed) so that match positions in
# the masked line are positions in the original line, and evidence can be cut
# from what the author wrote.
_EMPHASIS = "*_~`"
_MASK = str.maketrans({c: " " for c in _EMPHASIS} | {"\u2019": "'", "\u2018": "'"})

# --- the vocabulary of verdicts ----------------------------------------------

_POSITIVE_RE = re.compile(
    r"\bproceed(?:s|ed|ing)?\b"
    # "success criteria", "success rate" ... name a measure, not an outcome.
    r"|\bsuccess(?!\s+(?:criteri|metric|rate|threshold|condition|measure|definition))\b"
    r"|\bsuccessful(?:ly)?\b|\bsucceed(?:s|ed)?\b"
    r"|\bscal(?:e|ing)[\s-]*up\b"
    r"|\bworth\s+scaling\b|\bready\s+(?:to|for)\s+scal(?:e|ing)\b|\bgreen[\s-]+light\b",
    re.IGNORECASE,
)

_NEGATIVE_RES = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?:success\s+|acceptance\s+)?criteri(?:a|on)\s*[:\u2014\u2013-]?\s*(?:(?:were|was|are|is|have|has|been|all|yet)\s+)*"
        r"(?:not\s+(?:(?:all|yet|fully|been)\s+)*met|unmet|partially\s+met)\b",
        r"\bnot\s+(?:(?:all|yet|fully|been)\s+)*met\b|\bunmet\b|\bpartially\s+met\b",
        r"\bunsuccessful(?:ly)?\b",
        # "failure mode" and "fail-safe" describe, they do not judge.
        r"\bfail(?:s|ed|ing|ure|ures)?\b(?!\s+modes?\b)(?![\s-]*safe)",
        r"\babandon(?:s|ed|ing|ment)?\b",
        r"\bno[\s-]+go\b",
        r"\breject(?:s|ed)?\b",
        r"\binconclusive\b",
        r"\bnot\s+scalable\b",
        r"\b(?:do\s+not|does\s+not|don't|dont|not|never|cannot|can't|should\s+not|shouldn't|will\s+not|won't)"
        r"\s+(?:be\s+)?scal(?:e|ed|ing)\b",
    )
]

_POSITIVE_MARKS = "\u2705\u2714\u2611\U0001f680\U0001f44d\U0001f7e2\U0001f7e9"  # ✅ ✔ ☑ 🚀 👍 🟢 🟩
_NEGATIVE_MARKS = "\u274c\u2717\u2718\u2716\u26d4\U0001f6d1\U0001f6ab\U0001f44e\U0001f534"  # ❌ ✗ ✘ ✖ ⛔ 🛑 🚫 👎 🔴

# Words that count only when they are the whole verdict ("Decision: GO"); in
# prose they mean something else ("negative log-likelihood", "go to step 3").
_BARE_POSITIVE = {"go", "positive", "pass", "passed", "yes"}
_BARE_NEGATIVE = {"negative", "nogo", "no", "stop", "drop", "dropped", "killed"}

# A negator shortly before a phrase flips it: "not successful", "do not proceed",
# "no failures", "did not fail".
_NEGATOR_RE = re.compile(
    r"(?:\b(?:not|no|never|neither|nor|cannot|without|zero|nothing|dont|wont|cant|didnt|shouldnt|isnt|wasnt)\b"
    r"|n't\b|\b0\b)",
    re.IGNORECASE,
)
_AUX_BEFORE_RE = re.compile(r"\b(?:do|does|did|should|would|will|could|can|must|shall|may|might)\s+$", re.IGNORECASE)
# "If recall >= 0.9, PROCEED; otherwise DO NOT PROCEED" is a decision rule, not a verdict.
_SENTENCE_BREAK = re.compile(r"[.!?;](?=\s|$)")
_HYPOTHETICAL_RE = re.compile(r"\b(?:if|unless|whether|otherwise|in\s+case)\b", re.IGNORECASE)
_CLAUSE_BREAK = re.compile(r"[,;:.!?()\[\]|\u2014\u2013]|\s-\s")
_NEGATION_WINDOW_WORDS = 4

# Upper-case verdict words stand out in prose as the author's verdict.
_SHOUTED_RE = re.compile(
    r"\b(?:PROCEED(?:ED|ING)?|SUCCESS(?:FUL)?|UNSUCCESSFUL|FAIL(?:S|ED|URE)?|ABANDON(?:ED)?|SCALE[\s-]*UP)\b"
)
_FILLER_WORDS = {
    "final", "overall", "verdict", "decision", "result", "status", "outcome",
    "recommendation", "conclusion", "mve", "the", "is", "a", "an",
}

# "Verdict: ...", "**Decision:** ...", "| Verdict | PROCEED |", "## Verdict".
_LABELS = r"verdict|decision|recommendation|conclusions?|outcome|result|status"
_LABEL_START_RE = re.compile(
    rf"^[^\w]*(?:final\s+|overall\s+|mve\s+)?(?P<label>{_LABELS})\s*(?:\([^)]*\))?"
    # A separator, or a space then an emoji ("## Verdict ✅ PROCEED").
    r"(?:\s*(?:[:=|\u2014\u2013]|-\s)|\s+-\s|\s+(?=[^\w\s]))(?P<value>.*)$",
    re.IGNORECASE,
)
_LABEL_MID_RE = re.compile(r"\b(?P<label>verdict|decision|recommendation)\s*:(?P<value>.*)$", re.IGNORECASE)
# Run states, not judgements: "Status: done ✅" must not read as PROCEED, so
# these labels need a verdict *word*.
_STRICT_LABELS = {"status", "result"}
_SECTION_LABELS = {"verdict", "decision", "recommendation", "conclusion", "conclusions", "outcome"}
_LABEL_ONLY_RE = re.compile(
    rf"^[^\w]*(?:final\s+|overall\s+|mve\s+)?({_LABELS})\s*(?:\([^)]*\))?\s*[:\-\u2014\u2013]?[^\w]*$",
    re.IGNORECASE,
)

_HEADING_RE = re.compile(r"^\s{0,3}(#{1,6})\s+(.*)$")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")
_CHECKBOX_RE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\[( |x|X)\]\s*(.*)$")


@dataclass(frozen=True)
class Verdict:
    label: Literal["positive", "negative", "unknown"]
    evidence: str = ""  # the phrase (or emoji) that decided it, as written
    source: str = ""  # the file it came from


# --- reading markdown ----------------------------------------------------------


def _prose_lines(text: str) -> list[str]:
    """The document's lines with fenced code blocks blanked: logs and code in
    fences ("FAILED to connect") are not the author's verdict. Blanking instead
    of dropping keeps line numbers, and so sections, intact."""
    out, in_fence = [], False
    for line in text.splitlines():
        if _FENCE_RE.match(line):
            in_fence = not in_fence
            out.append("")
            continue
        out.append("" if in_fence else line)
    return out


def _heading_level(line: str) -> int | None:
    m = _HEADING_RE.match(line)
    return len(m.group(1)) if m else None


def _is_label_line(line: str) -> bool:
    """A bold-only line ("**Blockers**") or a bare "Label:" line acts as a heading."""
    s = line.strip()
    if not s:
        return False
    if re.fullmatch(r"(\*\*|__)[^*_]+(\*\*|__):?", s):
        return True
    return bool(re.fullmatch(r"[A-Za-z][\w\s/()-]{0,60}:", s))


def _section(lines: list[str], start: int) -> list[str]:
    """The body under the heading or label line at `start`, up to the next
    heading of the same or a higher level (or any heading / label line, for a
    label line)."""
    level = _heading_level(lines[start])
    body = []
    for line in lines[start + 1:]:
        lv = _heading_level(line)
        if lv is not None and (level is None or lv <= level):
            break
        if level is None and _is_label_line(line):
            break
        body.append(line)
    return body


# --- verdicts -------------------------------------------------------------------


def _negated(masked: str, start: int) -> tuple[bool, int]:
    """Whether a negator sits in the same clause within a few words before
    `start`; also where the negation (with its auxiliary verb) begins."""
    before = masked[:start]
    breaks = list(_CLAUSE_BREAK.finditer(before))
    clause_start = breaks[-1].end() if breaks else 0
    clause = before[clause_start:]
    words = list(re.finditer(r"\S+", clause))[-_NEGATION_WINDOW_WORDS:]
    if not words:
        return False, start
    window_start = clause_start + words[0].start()
    negs = list(_NEGATOR_RE.finditer(masked, window_start, start))
    if not negs:
        return False, start
    # Begin the evidence at the word holding the negator ("don't", "not").
    neg_start = negs[0].start()
    while neg_start > 0 and not masked[neg_start - 1].isspace():
        neg_start -= 1
    aux = _AUX_BEFORE_RE.search(masked[clause_start:neg_start])
    if aux:
        neg_start = clause_start + aux.start()
    return True, neg_start


def _hypothetical(masked: str, start: int) -> bool:
    breaks = list(_SENTENCE_BREAK.finditer(masked, 0, start))
    sentence = masked[breaks[-1].end() if breaks else 0:start]
    return bool(_HYPOTHETICAL_RE.search(sentence))


def _evidence(line: str, start: int, end: int) -> str:
    """The phrase as written, with balanced emphasis around it ("**PROCEED**")."""
    left = start
    while left > 0 and line[left - 1] in _EMPHASIS:
        left -= 1
    right = end
    while right < len(line) and line[right] in _EMPHASIS:
        right += 1
    if line[left:start] != line[end:right][::-1]:
        left, right = start, end
    return line[left:right].strip()


def _mark_span(line: str, idx: int) -> tuple[int, int]:
    end = idx + 1
    if end < len(line) and line[end] == "\ufe0f":  # emoji variation selector
        end += 1
    return idx, end


def _classify(line: str, bare_ok: bool = False, marks_ok: bool = True) -> tuple[str, str] | None:
    """("positive"|"negative", evidence) for one line, negatives winning, or None.

    `bare_ok`: the line is a verdict's value, so a lone "GO" or "negative"
    counts. `marks_ok`: an emoji alone (✅, ❌) counts.
    """
    masked = line.translate(_MASK)
    negatives: list[tuple[int, int]] = []
    positives: list[tuple[int, int]] = []
    for pattern in _NEGATIVE_RES:
        for m in pattern.finditer(masked):
            if _hypothetical(masked, m.start()):
                continue
            flipped, _ = _negated(masked, m.start())
            if not flipped:  # "no failures", "did not fail" are good news
                negatives.append((m.start(), m.end()))
    for m in _POSITIVE_RE.finditer(masked):
        if _hypothetical(masked, m.start()):
            continue
        flipped, neg_start = _negated(masked, m.start())
        if flipped:
            negatives.append((neg_start, m.end()))
        else:
            positives.append((m.start(), m.end()))
    if not negatives and not positives and bare_ok:
        bare = re.sub(r"[^a-z]", "", masked.lower())
        if bare in _BARE_NEGATIVE:
            return "negative", line.strip().strip(_EMPHASIS).strip()
        if bare in _BARE_POSITIVE:
            return "positive", line.strip().strip(_EMPHASIS).strip()
    if negatives:
        s, e = min(negatives)
        return "negative", _evidence(line, s, e)
    if positives:
        s, e = min(positives)
        return "positive", _evidence(line, s, e)
    if not marks_ok:
        return None
    for i, ch in enumerate(line):
        if ch in _NEGATIVE_MARKS:
            s, e = _mark_span(line, i)
            return "negative", line[s:e]
    for i, ch in enumerate(line):
        if ch in _POSITIVE_MARKS:
            s, e = _mark_span(line, i)
            return "positive", line[s:e]
    return None


def _decide(found: list[tuple[str, str]]) -> tuple[str, str] | None:
    """Negatives win; otherwise the first positive."""
    for label, evidence in found:
        if label == "negative":
            return label, evidence
    return found[0] if found else None


def _verdict_lines(lines: list[str]) -> list[tuple[str, str]]:
    """Verdicts stated on a labelled line, or in the section under a verdict heading."""
    found = []
    for i, line in enumerate(lines):
        masked = line.translate(_MASK)
        m = _LABEL_START_RE.match(masked) or _LABEL_MID_RE.search(masked)
        if m:
            strict = m.group("label").lower() in _STRICT_LABELS
            hit = _classify(line[m.start("value"):], bare_ok=not strict, marks_ok=not strict)
            if hit:
                found.append(hit)
                continue
        only = _LABEL_ONLY_RE.match(masked)
        if only and only.group(1).lower() in _SECTION_LABELS:
            # "## Verdict" then the verdict on the next line(s) of its section.
            for body_line in _section(lines, i):
                if _CHECKBOX_RE.match(body_line):
                    continue
                hit = _classify(body_line, bare_ok=True)
                if hit:
                    found.append(hit)
                    break
    return found


def _verdict_only(masked: str) -> bool:
    """True when a line is nothing but verdict words, emoji and filler ("_Success_")."""
    rest = _POSITIVE_RE.sub(" ", masked)
    for pattern in _NEGATIVE_RES:
        rest = pattern.sub(" ", rest)
    words = [w for w in re.findall(r"[A-Za-z0-9]+", rest) if w.lower() not in _FILLER_WORDS]
    return not words and rest != masked


def _standalone_words(lines: list[str]) -> list[tuple[str, str]]:
    """Verdict words that stand out on their own: SHOUTED in prose or tables,
    or alone on their line. Lower-case prose ("the success of GQA") is not a verdict."""
    found = []
    for line in lines:
        if not line.strip() or _CHECKBOX_RE.match(line):
            continue  # checklist items are criteria, judged by success_criteria_met
        masked = line.translate(_MASK)
        alone = _verdict_only(masked)
        if _heading_level(line) is not None and not alone:
            continue  # "### FAILED RUNS" names a section, it is not a verdict
        if alone or _SHOUTED_RE.search(line):
            hit = _classify(line)
            if hit:
                found.append(hit)
    return found


def parse_decision(text: str) -> tuple[tuple[str, str] | None, bool]:
    """(decision, came_from_a_verdict_line)."""
    lines = _prose_lines(text)
    decided = _decide(_verdict_lines(lines))
    if decided:
        return decided, True
    return _decide(_standalone_words(lines)), False


def parse_verdict(text: str, source: str = "") -> Verdict:
    """The verdict a results document states.

    A verdict line ("Verdict: ...", "**Decision:** ...", a "## Verdict" heading
    and the line under it) takes precedence; without one, standalone verdict
    words count. Within either, any negative wins over positives.
    """
    decided, _ = parse_decision(text)
    if decided is None:
        return Verdict("unknown", "", source)
    return Verdict(decided[0], decided[1], source)


def combine_verdicts(parsed: list[tuple[tuple[str, str] | None, bool, str]]) -> Verdict:
    """One verdict from several documents: verdict lines before standalone
    words, and a negative in any document wins."""
    for from_line in (True, False):
        tier = [(d, src) for d, line, src in parsed if d is not None and line == from_line]
        for (label, evidence), src in tier:
            if label == "negative":
                return Verdict("negative", evidence, src)
        if tier:
            (label, evidence), src = tier[0]
            return Verdict(label, evidence, src)
    return Verdict("unknown", "", parsed[0][2] if parsed else "")


# --- success criteria and blockers -----------------------------------------------

_CRITERIA_HEADING_RE = re.compile(r"\b(?:success|acceptance|exit|pass)\s+criteri(?:a|on)\b|^\W*criteria\W*$", re.IGNORECASE)
_UNMET_RE = re.compile(
    r"\bnot\s+(?:(?:all|yet|fully|been)\s+)*(?:met|achieved|reached)\b|\bunmet\b|\bmissed\b|\bpartial(?:ly)?\b"
    r"|\bfail(?:s|ed|ure)?\b",
    re.IGNORECASE,
)
_MET_RE = re.compile(r"\bmet\b|\bachieved\b|\bpass(?:ed)?\b", re.IGNORECASE)


def _unmet(line: str) -> bool:
    """A ❌, or "not met" / "FAIL" that is not itself negated ("no runs failed")."""
    if any(c in line for c in _NEGATIVE_MARKS):
        return True
    masked = line.translate(_MASK)
    return any(not _negated(masked, m.start())[0] for m in _UNMET_RE.finditer(masked))


def _criteria_section_starts(lines: list[str]) -> list[int]:
    starts = []
    for i, line in enumerate(lines):
        masked = line.translate(_MASK)
        if not _CRITERIA_HEADING_RE.search(masked):
            continue
        if _heading_level(line) is not None or _is_label_line(line) or re.match(
            r"^[^\w]*(?:success|acceptance)\s+criteri(?:a|on)\s*:?\s*$", masked, re.IGNORECASE
        ):
            starts.append(i)
    return starts


def success_criteria_met(text: str) -> tuple[bool, str]:
    """(met, reason). Under a success-criteria heading, an unchecked box, a ❌
    or an explicit "not met" means not met; a "success criteria not met"
    statement anywhere does too. No section at all is fine."""
    lines = _prose_lines(text)
    starts = _criteria_section_starts(lines)
    checked = total = 0
    for start in starts:
        # "Success criteria: not met" on the heading line itself.
        heading_value = lines[start].split(":", 1)[1] if ":" in lines[start] else ""
        if _unmet(heading_value):
            return False, f"success criteria not met ({lines[start].strip()!r})"
        for line in _section(lines, start):
            if not line.strip():
                continue
            box = _CHECKBOX_RE.match(line)
            if box:
                total += 1
                if box.group(1) == " ":
                    return False, f"success criteria not met (unchecked: {line.strip()!r})"
                checked += 1
                continue
            if _unmet(line):
                return False, f"success criteria not met ({line.strip()!r})"
            if any(c in line for c in _POSITIVE_MARKS) or _MET_RE.search(line.translate(_MASK)):
                total += 1
                checked += 1
    for line in lines:
        masked = line.translate(_MASK)
        m = _NEGATIVE_RES[0].search(masked)
        if m and not _negated(masked, m.start())[0] and not _hypothetical(masked, m.start()):
            return False, f"success criteria not met ({line.strip()!r})"
    if not starts:
        return True, "no success-criteria section"
    if total:
        return True, f"success criteria met ({checked}/{total})"
    return True, "success criteria met"


_BLOCKER_WORD_RE = re.compile(r"(?<![\w-])blocker(?:s)?\b|\bBLOCKED\b|\bblocking\b", re.IGNORECASE)
_BLOCKER_CLEAR_RE = re.compile(
    r"\b(?:none|n/?a|nil|resolved|fixed|mitigated|cleared|unblocked|non[\s-]*critical|minor)\b"
    r"|\bno\s+(?:critical\s+|known\s+|open\s+)?block(?:ers?|ing)\b|^\W*-\W*$",
    re.IGNORECASE,
)
_BLOCKER_HEADING_RE = re.compile(r"(?<![\w-])(?:critical\s+)?blockers?\b|^\W*blocked\W*$", re.IGNORECASE)
_BLOCKER_LABEL_RE = re.compile(
    r"^[^\w]*(?:critical\s+|open\s+|known\s+)*blockers?\s*(?:\([^)]*\))?\s*[:\u2014\u2013=|-]\s*(.*)$"
    r"|^[^\w]*status\s*:\s*(blocked\b.*)$",
    re.IGNORECASE,
)


_LIST_ITEM_RE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+|^\s*\|")


def _section_items(body: list[str]) -> list[str]:
    """The entries of a section: its list items (or table rows) when it has
    any, else its first paragraph. Prose after a list ("Recommendation: ...")
    is not an entry."""
    items = [line for line in body if _LIST_ITEM_RE.match(line)]
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
    t = text.translate(_MASK).strip()
    if not re.search(r"\w", t):
        return False
    if _BLOCKER_CLEAR_RE.search(t) or re.match(r"^\s*~~", text.strip()):
        return False
    box = _CHECKBOX_RE.match(text)
    return not (box and box.group(1) != " ")  # a ticked box is a resolved blocker


def critical_blocker(text: str) -> str | None:
    """The first line recording an open critical blocker, or None.

    "Blocker: ...", "Critical blocker: ...", "Status: BLOCKED ...", or any item
    under a "Blockers" heading count, unless they say none / n/a / resolved.
    """
    lines = _prose_lines(text)
    for i, line in enumerate(lines):
        masked = line.translate(_MASK)
        if not _BLOCKER_WORD_RE.search(masked):
            continue
        is_heading = _heading_level(line) is not None or _is_label_line(line)
        if is_heading and _BLOCKER_HEADING_RE.search(masked) and not _BLOCKER_CLEAR_RE.search(masked):
            value = masked.split(":", 1)[1] if ":" in masked else ""
            if _is_open_blocker(value):
                return line.strip()
            for item in _section_items(_section(lines, i)):
                if _is_open_blocker(item):
                    return item.strip()
            continue
        label = _BLOCKER_LABEL_RE.match(masked)
        if label:
            value = label.group(1) if label.group(1) is not None else label.group(2)
            if _is_open_blocker(value):
                return line.strip()
            continue
        if re.search(r"\bcritical\s+blocker\b|\bBLOCKED\b", line.translate(_MASK)) and _is_open_blocker(line):
            return line.strip()
    return None
