"""What a change to the research file is: its normalised fingerprint, so that the
same change is recognised whoever proposes it and on whichever base, and the
change re-applied on a newer base (another researcher's keep).

A change is the set of lines it removes and adds (context and line numbers do
not count). Each line is reduced to its Python tokens: whitespace, comments and
the spelling of numbers go (`3e-3`, `0.003` and `"0.003"` are one value). A
line whose only difference is its numbers is a knob move, fingerprinted by the
line with its numbers masked, the new values and the direction of each move, so
that "the same knob moved the same way to the same value" is the same change
whatever value it started from.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import re
import tokenize

_NUMBER_IN_STRING = re.compile(r"^([rRuUbB]?)(['\"])\s*([-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\2$")
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENDMARKER, tokenize.ENCODING}


def _number(text: str) -> float | None:
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        try:
            value = float(int(text.replace("_", ""), 0))
        except ValueError:
            return None
    return value


def _tokens(line: str) -> list[tuple[str, float | None]]:
    """(token text, its value when it is a number or a quoted number)."""
    out: list[tuple[str, float | None]] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            if tok.type in _SKIP:
                continue
            if tok.type == tokenize.NUMBER:
                out.append(("#", _number(tok.string)))
            elif tok.type == tokenize.STRING and (m := _NUMBER_IN_STRING.match(tok.string)):
                out.append(("#", _number(m.group(3))))
            else:
                out.append((tok.string, None))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        # A line that does not tokenise alone (inside a string or bracket): compare its words.
        out = [(w, None) for w in line.split()]
    return out


def _text(tokens: list[tuple[str, float | None]]) -> str:
    return " ".join(t if v is None else repr(v) for t, v in tokens)


def _template(tokens: list[tuple[str, float | None]]) -> str:
    return " ".join(t for t, _ in tokens)


def change_signature(old: str, new: str) -> list:
    """What the change from `old` to `new` is, independent of where and how it is written."""
    a, b = old.splitlines(), new.splitlines()
    items: list = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        removed = [_tokens(x) for x in a[i1:i2]]
        added = [_tokens(x) for x in b[j1:j2]]
        removed = [t for t in removed if t]  # blank and comment-only lines are no change
        added = [t for t in added if t]
        if len(removed) == len(added):
            for r, s in zip(removed, added):
                if _template(r) == _template(s) and any(v is not None for _, v in r):
                    moves = [(v2, "up" if v2 > v1 else "down" if v2 < v1 else "=")
                             for (_, v1), (_, v2) in zip(r, s) if v1 is not None and v1 != v2]
                    if moves:
                        items.append(["knob", _template(r), moves])
                elif _text(r) != _text(s):
                    items.append(["line", _text(r), _text(s)])
            continue
        items.extend(["removed", _text(r)] for r in removed)
        items.extend(["added", _text(s)] for s in added)
    return sorted(items, key=json.dumps)


def fingerprint(old: str, new: str) -> str:
    """16 hex digits naming the change from `old` to `new`."""
    sig = change_signature(old, new)
    return hashlib.sha256(json.dumps(sig, separators=(",", ":")).encode()).hexdigest()[:16]


def reapply(old_base: str, changed: str, new_base: str) -> str | None:
    """`changed` made from `old_base`, re-applied on `new_base`: every block of lines the
    change replaced must appear exactly once in `new_base`, unchanged, and is replaced
    the same way. None when a block is not found (the head changed the same lines).

    Blocks are matched without context, unlike `git apply` or a three-way merge:
    two researchers moving knobs on neighbouring lines do not conflict."""
    a = old_base.splitlines(keepends=True)
    b = changed.splitlines(keepends=True)
    target = new_base.splitlines(keepends=True)
    edits = []  # (start in target, end in target, replacement lines)
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        if i1 == i2:  # a pure insertion: anchor it after the line before it (or at the top)
            if i1 == 0:
                edits.append((0, 0, b[j1:j2]))
                continue
            anchor = a[i1 - 1]
            hits = [k for k, line in enumerate(target) if line == anchor]
            if len(hits) != 1:
                return None
            edits.append((hits[0] + 1, hits[0] + 1, b[j1:j2]))
            continue
        block = a[i1:i2]
        hits = [k for k in range(len(target) - len(block) + 1) if target[k:k + len(block)] == block]
        if len(hits) != 1:
            return None
        edits.append((hits[0], hits[0] + len(block), b[j1:j2]))
    edits.sort(key=lambda e: e[0])
    for (s1, e1, _), (s2, _, _) in zip(edits, edits[1:]):
        if s2 < e1:
            return None
    out = list(target)
    for start, end, lines in reversed(edits):
        out[start:end] = lines
    return "".join(out)
