"""Reading research notes as people write them: markdown lines, sections,
emphasis, negation, front matter and fenced blocks. Pure functions of text,
shared by `verdicts` (what the verdict is) and `criteria` (criteria, blockers).

Emphasis and struck-out text are *masked* to spaces, never removed, so that a
position in the masked line is the same position in the original line and
evidence can be cut from what the author wrote.
"""

from __future__ import annotations

import json
import re

import yaml

EMPHASIS = "*_~`"
_MASK = str.maketrans({c: " " for c in EMPHASIS} | {"\u2019": "'", "\u2018": "'"})
_STRUCK_RE = re.compile(r"~~[^~]+~~")

POSITIVE_MARKS = "\u2705\u2714\u2611\U0001f680\U0001f44d\U0001f7e2\U0001f7e9"  # ✅ ✔ ☑ 🚀 👍 🟢 🟩
NEGATIVE_MARKS = "\u274c\u2717\u2718\u2716\u26d4\U0001f6d1\U0001f6ab\U0001f44e\U0001f534"  # ❌ ✗ ✘ ✖ ⛔ 🛑 🚫 👎 🔴
WARNING_MARKS = "\u26a0\U0001f7e1\U0001f7e0\U0001f7e8"  # ⚠ 🟡 🟠 🟨
UNTESTED_MARKS = "\u2b1c\u2b1b\u25fb\u25a1\u23f3\u2753\u2754"  # ⬜ ⬛ ◻ □ ⏳ ❓ ❔

HEADING_RE = re.compile(r"^\s{0,3}(#{1,6})\s+(.*)$")
_SETEXT_RE = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_FENCE_RE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
CHECKBOX_RE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\[( |x|X)\]\s*(.*)$")
LIST_ITEM_RE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+|^\s*\|")
_TABLE_RULE_RE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")

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


def mask(line: str) -> str:
    """The line with emphasis and struck-out text (~~old verdict~~) as spaces."""
    line = _STRUCK_RE.sub(lambda m: " " * len(m.group(0)), line)
    return line.translate(_MASK)


def split_front_matter(text: str) -> tuple[dict | None, str]:
    """(the YAML front matter as a dict, or None; the text with it blanked to
    empty lines, so that line numbers stay the same)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None, text
    for end in range(1, min(len(lines), 200)):
        if lines[end].strip() in ("---", "..."):
            try:
                data = yaml.safe_load("\n".join(lines[1:end]))
            except yaml.YAMLError:
                return None, text
            if not isinstance(data, dict):
                return None, text
            return data, "\n" * (end + 1) + "\n".join(lines[end + 1:])
    return None, text


def fenced_data(text: str) -> list[dict]:
    """The objects in ```yaml / ```json fenced blocks: decision records people
    paste into their notes."""
    found, block, lang = [], None, ""
    for line in text.splitlines():
        m = _FENCE_RE.match(line)
        if m and block is None:
            block, lang = [], m.group(2).lower()
            continue
        if m and block is not None:
            if lang in ("yaml", "yml", "json"):
                try:
                    data = json.loads("\n".join(block)) if lang == "json" else yaml.safe_load("\n".join(block))
                except (ValueError, yaml.YAMLError):
                    data = None
                if isinstance(data, dict):
                    found.append(data)
            block = None
            continue
        if block is not None:
            block.append(line)
    return found


def prose_lines(text: str) -> list[str]:
    """The document's lines with fenced code blocks and front matter blanked:
    logs and code in fences ("FAILED to connect") are not the author's verdict.
    Blanking instead of dropping keeps line numbers, and so sections, intact.
    A setext heading ("Title" over "====") becomes an ATX heading."""
    _, text = split_front_matter(text)
    out: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if _FENCE_RE.match(line):
            in_fence = not in_fence
            out.append("")
            continue
        if in_fence:
            out.append("")
            continue
        setext = _SETEXT_RE.match(line)
        if setext and out and out[-1].strip() and not LIST_ITEM_RE.match(out[-1]) and not HEADING_RE.match(out[-1]):
            out[-1] = ("# " if setext.group(1)[0] == "=" else "## ") + out[-1].strip()
            out.append("")
            continue
        out.append(line)
    return out


def heading_level(line: str) -> int | None:
    m = HEADING_RE.match(line)
    return len(m.group(1)) if m else None


def is_label_line(line: str) -> bool:
    """A bold-only line ("**Blockers**") or a bare "Label:" line acts as a heading."""
    s = line.strip()
    if not s:
        return False
    if re.fullmatch(r"(\*\*|__)[^*_]+(\*\*|__):?", s):
        return True
    return bool(re.fullmatch(r"[A-Za-z][\w\s/()-]{0,60}:", s))


def section(lines: list[str], start: int) -> list[str]:
    """The body under the heading or label line at `start`, up to the next
    heading of the same or a higher level (or any heading / label line, for a
    label line)."""
    level = heading_level(lines[start])
    body = []
    for line in lines[start + 1:]:
        lv = heading_level(line)
        if lv is not None and (level is None or lv <= level):
            break
        if level is None and is_label_line(line):
            break
        body.append(line)
    return body


def table_cells(line: str) -> list[str] | None:
    """The cells of a markdown table row, or None (not a row, or the |---| rule)."""
    s = line.strip()
    if not s.startswith("|") or _TABLE_RULE_RE.match(s):
        return None
    return [c.strip() for c in s.strip("|").split("|")]


def negated(masked: str, start: int) -> tuple[bool, int]:
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


def hypothetical(masked: str, start: int) -> bool:
    breaks = list(_SENTENCE_BREAK.finditer(masked, 0, start))
    sentence = masked[breaks[-1].end() if breaks else 0:start]
    return bool(_HYPOTHETICAL_RE.search(sentence))


def evidence(line: str, start: int, end: int) -> str:
    """The phrase as written, with balanced emphasis around it ("**PROCEED**")."""
    left = start
    while left > 0 and line[left - 1] in EMPHASIS:
        left -= 1
    right = end
    while right < len(line) and line[right] in EMPHASIS:
        right += 1
    if line[left:start] != line[end:right][::-1]:
        left, right = start, end
    return line[left:right].strip()


def mark_span(line: str, idx: int) -> tuple[int, int]:
    end = idx + 1
    if end < len(line) and line[end] == "\ufe0f":  # emoji variation selector
        end += 1
    return idx, end
