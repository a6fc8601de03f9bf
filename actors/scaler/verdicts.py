"""What an MVE's results say its verdict is. Pure functions of text and data.

Research notes are written by people and LLMs in many styles, so the parser is
deliberately forgiving about *form* (case, markdown emphasis, emoji, tables,
headings, front matter, fenced YAML/JSON decision records) and deliberately
conservative about *meaning*: a negative phrase anywhere in a verdict beats a
positive one, because scaling a failed MVE by mistake costs GPU hours while
skipping a good one costs a re-run of `scan`.

Labels: positive (PROCEED, "PROCEED (with caveats)", SUCCESS, Go, Scale up, SHIP
IT), negative (ABANDON, "DO NOT PROCEED", KILL, "⚠️ DEBUG", FAIL, Stop, on hold),
ambiguous (the author did not decide: "Mixed", "inconclusive", "unclear"),
pending ("TBD", "Awaiting results", "Pending the full run"), unknown (no verdict).

    parse_verdict(text) -> Verdict(label, evidence, source)
    structured_verdict(data, source) -> Verdict | None     # `verdict:` in results.json/yaml, front matter
    document_verdicts(text, source) -> the structured verdicts inside a markdown file

How criteria and blockers are read is `actors.scaler.criteria`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from actors.scaler.markdown import (
    CHECKBOX_RE,
    NEGATIVE_MARKS,
    POSITIVE_MARKS,
    evidence,
    fenced_data,
    heading_level,
    hypothetical,
    mark_span,
    mask,
    negated,
    prose_lines,
    section,
    split_front_matter,
)

Label = Literal["positive", "negative", "ambiguous", "pending", "unknown"]
# When one line holds several, the first of these wins: a "DO NOT" beats a
# "PROCEED", an undecided word beats a decided one.
_PRECEDENCE = ("negative", "ambiguous", "pending", "positive")

# --- the vocabulary of verdicts ----------------------------------------------

_POSITIVE_RE = re.compile(
    r"\bproceed(?:s|ed|ing)?\b"
    # "success criteria", "success rate" ... name a measure, not an outcome.
    r"|\bsuccess(?!\s+(?:criteri|metric|rate|threshold|condition|measure|definition))\b"
    r"|\bsuccessful(?:ly)?\b|\bsucceed(?:s|ed)?\b"
    r"|\bscal(?:e|ing)[\s-]*(?:(?:it|this|that|them)\s+)?up\b|\b(?:recommend|ready\s+to|ready\s+for|go\s+ahead\s+and)\s+scal(?:e|ing)\b"
    r"|^\W*scale\s+(?:it\s+)?(?:to|up)\b"
    r"|\bworth\s+(?:scaling|it|pursuing|continuing)\b|\bgreen[\s-]+light\b|\bship\s+it\b|\bgo\s+ahead\b"
    r"|\bpursue\b|\bpositive\s+result\b|\b(?:it|this|idea|approach|change|trick)\s+(?:clearly\s+|really\s+)?works\b",
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
        r"\bkill(?:ed)?\b",
        r"\bdebug(?:ging)?\b",
        r"\bon\s+hold\b|\bshelve[ds]?\b|\bpark(?:ed)?\b",
        r"\bneeds?\s+(?:more\s+)?(?:debugging|investigation|work|fixing|seeds?|runs?|data|evidence|experiments?)\b",
        r"\bnegative\s+result\b",
        r"\brevert(?:ed)?\b|\broll(?:ed)?\s+back\b",
        r"\bnot\s+scalable\b",
        r"\b(?:do\s+not|does\s+not|don't|dont|not|never|cannot|can't|should\s+not|shouldn't|will\s+not|won't)"
        r"\s+(?:be\s+)?scal(?:e|ed|ing)\b",
    )
]
# The author did not decide; the scan says so instead of guessing.
_AMBIGUOUS_RE = re.compile(
    r"\bmixed\b|\binconclusive\b|\bunclear\b|\bundecided\b|\bno\s+clear\s+(?:signal|winner|call|verdict)\b"
    r"|\b(?:too\s+(?:early|noisy)|hard)\s+to\s+(?:tell|call|say)\b|\bcan'?t\s+tell\b",
    re.IGNORECASE,
)
# The results are not in yet.
_PENDING_RE = re.compile(
    r"\bTBD\b|\bTBC\b|\bto\s+be\s+(?:decided|determined|confirmed)\b|\bpending\b|\bawaiting\b"
    r"|\bwaiting\s+(?:on|for)\b|\bin\s+progress\b|\bstill\s+running\b|\bnot\s+yet\s+(?:run|decided|known|in)\b"
    r"|^\W*running\b|\bnot\s+yet\b",
    re.IGNORECASE,
)

# Words that count only when they are the whole verdict ("Decision: GO"); in
# prose they mean something else ("negative log-likelihood", "go to step 3").
_BARE = {
    "positive": {"go", "positive", "pass", "passed", "yes", "ship", "approved", "accept", "accepted", "continue",
                 "scale", "scaleup", "scaleit"},
    "negative": {"negative", "nogo", "no", "stop", "drop", "dropped", "killed", "kill", "hold", "revise",
                 "iterate", "rerun", "investigate", "archive", "archived", "wontfix"},
    "pending": {"tbd", "tbc", "wip", "running", "queued", "open"},
}

# Upper-case verdict words stand out in prose as the author's verdict.
_SHOUTED_RE = re.compile(
    r"\b(?:PROCEED(?:ED|ING)?|SUCCESS(?:FUL)?|UNSUCCESSFUL|FAIL(?:S|ED|URE)?|ABANDON(?:ED)?|SCALE[\s-]*UP"
    r"|KILL(?:ED)?|DEBUG|SHIP\s+IT|NO[\s-]GO)\b"
)
_FILLER_WORDS = {
    "final", "overall", "verdict", "decision", "result", "status", "outcome",
    "recommendation", "conclusion", "mve", "the", "is", "a", "an",
}

# "Verdict: ...", "**Decision:** ...", "| Verdict | PROCEED |", "## Verdict".
_LABELS = (r"verdict|decision|recommendation|conclusions?|outcome|result|status|summary|tl;?dr|bottom\s+line|call"
           r"|takeaways?|next(?:\s+steps?)?|go[\s/-]*no[\s-]*go")
_LABEL_START_RE = re.compile(
    rf"^[^\w]*(?:final\s+|overall\s+|mve\s+)?(?P<label>{_LABELS})\s*(?:\([^)]*\))?"
    # A separator, or a space then an emoji ("## Verdict ✅ PROCEED").
    r"(?:\s*(?:[:=|\u2014\u2013]|-\s)|\s+-\s|\s+(?=[^\w\s])|(?<=tl;dr)\s+|(?<=tldr)\s+)(?P<value>.*)$",
    re.IGNORECASE,
)
_LABEL_MID_RE = re.compile(r"\b(?P<label>verdict|decision|recommendation)\s*:(?P<value>.*)$", re.IGNORECASE)
# Run states, not judgements: "Status: done ✅" and "**Result**: ✅ Success" (a
# smoke test) must not read as PROCEED, so these labels need a verdict *word*,
# and a positive word alone does not count.
_STRICT_LABELS = {"status", "result"}
_SECTION_LABELS = {"verdict", "decision", "recommendation", "conclusion", "conclusions", "outcome", "summary",
                   "tl;dr", "tldr", "bottom line", "takeaway", "takeaways"}
_LABEL_ONLY_RE = re.compile(
    rf"^[^\w]*(?:final\s+|overall\s+|mve\s+)?({_LABELS})\s*(?:\([^)]*\))?\s*[:\-\u2014\u2013]?[^\w]*$",
    re.IGNORECASE,
)
# A heading naming a verdict section with decoration around it: "## 🎯 Verdict", "## Decision (2024-06-05)".
_SECTION_HEADING_RE = re.compile(r"^\W*(?:final\s+|overall\s+)?(verdict|decision|recommendation|conclusions?|outcome"
                                 r"|go[\s/-]*no[\s-]*go|tl;?dr|bottom\s+line|takeaways?)\b",
                                 re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    label: Label
    evidence: str = ""  # the phrase (or emoji) that decided it, as written
    source: str = ""  # the file it came from


# --- one line ---------------------------------------------------------------------


def _classify(line: str, bare_ok: bool = False, marks_ok: bool = True, strict: bool = False) -> tuple[str, str] | None:
    """(label, evidence) for one line, by _PRECEDENCE, or None.

    `bare_ok`: the line is a verdict's value, so a lone "GO" or "negative"
    counts. `marks_ok`: an emoji alone (✅, ❌) counts. `strict`: a run state
    ("Status:", "Result:"), where only a negative, undecided or pending word
    is a verdict.
    """
    masked = mask(line)
    found: dict[str, list[tuple[int, int]]] = {k: [] for k in _PRECEDENCE}
    for pattern in _NEGATIVE_RES:
        for m in pattern.finditer(masked):
            if hypothetical(masked, m.start()):
                continue
            flipped, _ = negated(masked, m.start())
            if not flipped:  # "no failures", "did not fail" are good news
                found["negative"].append((m.start(), m.end()))
    for label, pattern in (("ambiguous", _AMBIGUOUS_RE), ("pending", _PENDING_RE)):
        for m in pattern.finditer(masked):
            if not hypothetical(masked, m.start()) and not negated(masked, m.start())[0]:
                found[label].append((m.start(), m.end()))
    if not strict:
        for m in _POSITIVE_RE.finditer(masked):
            if hypothetical(masked, m.start()):
                continue
            start = m.start() + re.match(r"\W*", m.group(0)).end()  # "^\W*scale to" starts at "scale"
            flipped, neg_start = negated(masked, start)
            if flipped:
                found["negative"].append((neg_start, m.end()))
            else:
                found["positive"].append((start, m.end()))
    for label in _PRECEDENCE:
        if found[label]:
            s, e = min(found[label])
            return label, evidence(line, s, e)
    if bare_ok:
        bare = re.sub(r"[^a-z]", "", masked.lower())
        for label, words in _BARE.items():
            if bare in words and not (strict and label == "positive"):
                return label, re.sub(r"\s+", " ", re.sub(r"[*_`~|]", " ", line)).strip()
    if not marks_ok:
        return None
    for label, marks in (("negative", NEGATIVE_MARKS), ("positive", POSITIVE_MARKS)):
        for i, ch in enumerate(line):
            if ch in marks:
                s, e = mark_span(line, i)
                return label, line[s:e]
    return None


def _decide(found: list[tuple[str, str]]) -> tuple[str, str] | None:
    """By _PRECEDENCE across lines: a negative anywhere wins; otherwise the first
    of the best label found."""
    for label in _PRECEDENCE:
        for got, ev in found:
            if got == label:
                return got, ev
    return None


# --- a document -------------------------------------------------------------------


def _verdict_lines(lines: list[str]) -> list[tuple[str, str]]:
    """Verdicts stated on a labelled line, or in the section under a verdict heading."""
    found = []
    for i, line in enumerate(lines):
        masked = mask(line)
        m = _LABEL_START_RE.match(masked) or _LABEL_MID_RE.search(masked)
        if m:
            label = re.sub(r"\s+", " ", m.group("label").lower())
            strict = label in _STRICT_LABELS
            hit = _classify(line[m.start("value"):], bare_ok=True, marks_ok=not strict, strict=strict)
            if hit:
                found.append(hit)
                continue
        only = _LABEL_ONLY_RE.match(masked)
        heading = heading_level(line) is not None and _SECTION_HEADING_RE.match(re.sub(r"^\s*#+\s*", "", masked))
        if (only and only.group(1).lower() in _SECTION_LABELS) or heading:
            # "## Verdict" then the verdict on the next line(s) of its section.
            for body_line in section(lines, i):
                box = CHECKBOX_RE.match(body_line)
                if box and box.group(1) == " ":
                    continue  # an option not chosen ("- [ ] Abandon")
                hit = _classify(box.group(2) if box else body_line, bare_ok=True)
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
        if not line.strip() or CHECKBOX_RE.match(line):
            continue  # checklist items are criteria, judged by the criteria reader
        masked = mask(line)
        alone = _verdict_only(masked)
        if heading_level(line) is not None and not alone:
            # "### FAILED RUNS" names a section; "## ❌ Not worth scaling" (a mark and a verdict phrase) states one.
            hit = _classify(line, marks_ok=False)
            if hit and any(c in line for c in POSITIVE_MARKS + NEGATIVE_MARKS):
                found.append(hit)
            continue
        if alone or _SHOUTED_RE.search(masked):
            hit = _classify(line)
            if hit:
                found.append(hit)
    return found


def parse_decision(text: str) -> tuple[tuple[str, str] | None, bool]:
    """(decision, came_from_a_verdict_line)."""
    lines = prose_lines(text)
    decided = _decide(_verdict_lines(lines))
    if decided:
        return decided, True
    return _decide(_standalone_words(lines)), False


def parse_verdict(text: str, source: str = "") -> Verdict:
    """The verdict a results document states in its prose.

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
    words, and by _PRECEDENCE within them (a negative in any document wins)."""
    for from_line in (True, False):
        tier = [(d, src) for d, line, src in parsed if d is not None and line == from_line]
        for label in _PRECEDENCE:
            for (got, ev), src in tier:
                if got == label:
                    return Verdict(got, ev, src)
    return Verdict("unknown", "", parsed[0][2] if parsed else "")


# --- structured verdicts --------------------------------------------------------

_VERDICT_KEYS = ("verdict", "decision", "recommendation", "outcome", "conclusion")
_BOOL_KEYS = ("proceed", "scale", "scalable", "scale_up", "go")
_NESTED_KEYS = ("summary", "result", "results", "meta", "metadata", "conclusion", "decision_record")


def structured_verdict(data: dict, source: str = "") -> Verdict | None:
    """The verdict a machine-readable record states: `verdict:` (or decision,
    recommendation, outcome) at the top or one level down (`summary.verdict`),
    or a boolean `proceed:` / `scalable:`. `status:` counts only with a verdict
    word ("abandoned"), never a run state ("complete")."""
    if not isinstance(data, dict):
        return None
    keys = {str(k).lower(): k for k in data}
    for name in _VERDICT_KEYS:
        value = data.get(keys[name]) if name in keys else None
        if isinstance(value, str):
            hit = _classify(value, bare_ok=True)
            if hit:
                return Verdict(hit[0], f"{keys[name]}: {value}", source)
        if isinstance(value, dict):  # decision: {label: GO, by: rk}
            inner = {str(k).lower(): v for k, v in value.items()}
            for sub in ("label", "value", "verdict", "decision", "call", "status"):
                if isinstance(inner.get(sub), str) and (hit := _classify(inner[sub], bare_ok=True)):
                    return Verdict(hit[0], f"{keys[name]}.{sub}: {inner[sub]}", source)
    for name in _BOOL_KEYS:
        if name in keys and isinstance(data[keys[name]], bool):
            return Verdict("positive" if data[keys[name]] else "negative", f"{keys[name]}: {data[keys[name]]}",
                           source)
    if "status" in keys and isinstance(data[keys["status"]], str):
        hit = _classify(data[keys["status"]], bare_ok=True, marks_ok=False, strict=True)
        if hit:
            return Verdict(hit[0], f"{keys['status']}: {data[keys['status']]}", source)
    for name in _NESTED_KEYS:
        if name in keys and isinstance(data[keys[name]], dict):
            inner = structured_verdict(data[keys[name]], source)
            if inner is not None:
                return Verdict(inner.label, f"{keys[name]}.{inner.evidence}", source)
    return None


def document_verdicts(text: str, source: str = "") -> list[Verdict]:
    """The structured verdicts inside a markdown document: its front matter and
    its fenced ```yaml / ```json decision records."""
    front, _ = split_front_matter(text)
    found = []
    for data in ([front] if front else []) + fenced_data(text):
        v = structured_verdict(data, source)
        if v is not None:
            found.append(v)
    return found


def pending_words(text: str) -> str | None:
    """The first line of a document that says its results are not in yet
    ("Awaiting results...", "Deploying to Modal"), for notes; None."""
    for line in prose_lines(text):
        masked = mask(line)
        if _PENDING_RE.search(masked) or re.search(r"\bdeploying\b|\blaunched\b|\bqueued\b|\bETA\b", masked,
                                                  re.IGNORECASE):
            return line.strip()
    return None
