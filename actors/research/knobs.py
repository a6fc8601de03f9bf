"""The offline proposer: one change to one numeric hyperparameter default.

When no LLM is available, the AutoResearch loop still needs a next experiment.
This module finds the numeric hyperparameter defaults of a training script and
proposes changing exactly one of them, by rule:

- autoresearch style: module-level (or class-level) ALL_CAPS assignments of a
  number, ``LEARNING_RATE = 3e-3``, ``NUM_LAYERS = 4``, ``WD = -1_000``;
- Parameter Golf style: ``os.environ.get("NAME", default)`` defaults anywhere,
  usually wrapped, ``ITERATIONS = int(os.environ.get("ITERATIONS", 20000))``,
  ``lr = float(os.environ.get("MATRIX_LR", "0.04"))``; string defaults keep
  their quotes.

Steps: floats x1.5 or /1.5 (fractions in (0, 1) such as dropout or betas move
toward 1 in complement space when raised, so they stay below 1); ints +-25%,
at least 1, staying positive; powers of two in DIM/HEADS/BATCH/SEQ/LEN names
double or halve. The rewrite touches exactly one literal on one line; every
other byte of the file is kept.

The choice is deterministic given (source, history, dead_ends, seed): a
(knob, direction) in ``dead_ends`` is never proposed; after a kept change the
same knob is pushed further the same way; otherwise knobs never tried come
first, then the least recently tried, and pairs that already failed come last.
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Callable, Literal

__all__ = ["Knob", "Proposal", "find_knobs", "propose", "apply_value", "is_skipped_name"]

STEP = 1.5
INT_FRACTION = 0.25

# Substrings that mark a name as not a hyperparameter (reproducibility,
# distribution, I/O, logging cadence).
_SKIP_SUBSTRINGS = ("SEED", "RANK", "PORT", "DEVICE", "PATH", "DIR", "FILE", "LOG", "EVERY")
# "LOG" is meant for logging; LOGIT_SOFTCAP and friends are real hyperparameters.
_SKIP_EXCEPTIONS = ("LOGIT",)
# Whole "_"-separated tokens that mark a name as not a hyperparameter: the world
# size, the time budget (changing it would game the comparison), the tokenizer's
# vocabulary (fixed by the data), validation settings and the data itself (they
# change the ruler), and thread counts (speed, not the model).
_SKIP_TOKENS = frozenset(
    {"WORLD", "WALLCLOCK", "SECONDS", "TIME", "BUDGET", "VOCAB", "VAL", "EVAL",
     "WORKERS", "NPROC", "GPUS", "VERBOSE", "DEBUG", "DATA", "THREADS"}
)
_POW2_MARKERS = ("DIM", "HEADS", "BATCH", "SEQ", "LEN")
_FRACTION_MARKERS = ("DROPOUT", "BETA", "MOMENTUM", "EMA", "PROB", "FRAC", "RATIO")
_ZERO_OK_MARKERS = {"DROPOUT": 0.1, "DECAY": 0.01, "WD": 0.01, "SMOOTH": 0.1, "NOISE": 0.01}

_ALL_CAPS = re.compile(r"^[A-Z][A-Z0-9_]*$")
_INT_TEXT = re.compile(r"^[+-]?\d[\d_]*$")
_STRING_LITERAL = re.compile(r"^([rRuU]?)('''|\"\"\"|'|\")(.*)\2$", re.S)


@dataclass(frozen=True)
class Knob:
    """One numeric default and where its literal sits in the source.

    ``line`` is 1-based; ``col_offset``/``end_col_offset`` are UTF-8 byte
    offsets on that line (as ``ast`` gives them) spanning ``text``, the exact
    literal (with its sign, and its quotes for a string default)."""

    name: str
    value: float | int
    kind: Literal["int", "float"]
    style: Literal["constant", "environ"]
    line: int
    col_offset: int
    end_col_offset: int
    text: str
    quoted: bool = False
    target: str | None = None

    @property
    def number_text(self) -> str:
        """The literal as a number, without quotes."""
        if self.quoted:
            m = _STRING_LITERAL.match(self.text)
            return m.group(3) if m else self.text
        return self.text


@dataclass(frozen=True)
class Proposal:
    knob: str
    old: float | int
    new: float | int
    direction: Literal["up", "down"]
    source: str
    description: str
    reasoning: str


# --------------------------------------------------------------------------- finding


def is_skipped_name(name: str) -> bool:
    """True for names that are obviously not hyperparameters (SEED, RANK, ...)."""
    upper = name.upper()
    probe = upper
    for exc in _SKIP_EXCEPTIONS:
        probe = probe.replace(exc, "")
    if any(s in probe for s in _SKIP_SUBSTRINGS):
        return True
    return any(tok in _SKIP_TOKENS for tok in upper.split("_"))


def _number_from_node(node: ast.AST) -> tuple[float | int, ast.AST] | None:
    """A numeric constant, or a negated/positive one; bools are not numbers."""
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v, node
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _number_from_node(node.operand)
        if inner is None or not isinstance(node.operand, ast.Constant):
            return None
        v = inner[0]
        return (-v if isinstance(node.op, ast.USub) else v), node
    return None


def _is_env_get(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    if isinstance(f, ast.Attribute) and f.attr == "get":
        v = f.value
        if isinstance(v, ast.Attribute) and v.attr == "environ":
            return True
        if isinstance(v, ast.Name) and v.id == "environ":
            return True
    if isinstance(f, ast.Attribute) and f.attr == "getenv":
        return True
    if isinstance(f, ast.Name) and f.id == "getenv":
        return True
    return False


def _segment(lines_b: list[bytes], node: ast.AST) -> str | None:
    if node.lineno != node.end_lineno:
        return None
    return lines_b[node.lineno - 1][node.col_offset:node.end_col_offset].decode("utf-8")


def _env_knob(call: ast.Call, wrapper: str | None, target: str | None,
              lines_b: list[bytes]) -> Knob | None:
    if not call.args or not isinstance(call.args[0], ast.Constant) or not isinstance(call.args[0].value, str):
        return None
    name = call.args[0].value
    default = call.args[1] if len(call.args) > 1 else None
    if default is None:
        for kw in call.keywords:
            if kw.arg == "default":
                default = kw.value
    if default is None or not _ALL_CAPS.match(name) or is_skipped_name(name):
        return None
    quoted = False
    if isinstance(default, ast.Constant) and isinstance(default.value, str):
        s = default.value.strip()
        try:
            value: float | int = float(s)
        except ValueError:
            return None
        if not math.isfinite(value):
            return None
        quoted = True
        if wrapper == "int" or (wrapper is None and _INT_TEXT.match(s)):
            if not _INT_TEXT.match(s):
                return None
            value, kind = int(s.replace("_", "")), "int"
        else:
            kind = "float"
        node = default
    else:
        got = _number_from_node(default)
        if got is None:
            return None
        value, node = got
        kind = wrapper if wrapper in ("int", "float") else ("int" if isinstance(value, int) else "float")
        value = int(value) if kind == "int" else float(value)
    text = _segment(lines_b, node)
    if text is None:
        return None
    if quoted and not _STRING_LITERAL.match(text):  # implicit concatenation, f-string...
        return None
    return Knob(name=name, value=value, kind=kind, style="environ", line=node.lineno,
                col_offset=node.col_offset, end_col_offset=node.end_col_offset,
                text=text, quoted=quoted, target=target)


def _constant_knobs(body: list[ast.stmt], lines_b: list[bytes], out: list[Knob]) -> None:
    for stmt in body:
        if isinstance(stmt, ast.ClassDef):
            _constant_knobs(stmt.body, lines_b, out)
            continue
        if isinstance(stmt, ast.Assign):
            if len(stmt.targets) != 1:
                continue
            target, value_node = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value_node = stmt.target, stmt.value
        else:
            continue
        if not isinstance(target, ast.Name) or not _ALL_CAPS.match(target.id):
            continue
        if is_skipped_name(target.id):
            continue
        got = _number_from_node(value_node)
        if got is None:
            continue
        value, node = got
        text = _segment(lines_b, node)
        if text is None:
            continue
        kind = "int" if isinstance(value, int) else "float"
        out.append(Knob(name=target.id, value=value, kind=kind, style="constant",
                        line=node.lineno, col_offset=node.col_offset,
                        end_col_offset=node.end_col_offset, text=text, target=target.id))


def find_knobs(source: str) -> list[Knob]:
    """Every numeric hyperparameter default in ``source``, in file order, one
    per name (the first occurrence wins). Raises SyntaxError if it does not parse."""
    tree = ast.parse(source)
    lines_b = [ln.encode("utf-8") for ln in source.split("\n")]
    found: list[Knob] = []
    _constant_knobs(tree.body, lines_b, found)

    wrappers: dict[int, str] = {}
    targets: dict[int, str] = {}
    flags: set[int] = set()  # bool(int(os.environ.get("X", "1"))) is a switch, not a number
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("int", "float") and node.args and _is_env_get(node.args[0])):
            wrappers[id(node.args[0])] = node.func.id
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "bool" and node.args:
            inner = node.args[0]
            if isinstance(inner, ast.Call) and inner.args and _is_env_get(inner.args[0]):
                inner = inner.args[0]
            if _is_env_get(inner):
                flags.add(id(inner))
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            tgt = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(tgt, (ast.Name, ast.Attribute)) and node.value is not None:
                name = tgt.id if isinstance(tgt, ast.Name) else tgt.attr
                for sub in ast.walk(node.value):
                    if _is_env_get(sub):
                        targets.setdefault(id(sub), name)
    for node in ast.walk(tree):
        if _is_env_get(node) and id(node) not in flags:
            k = _env_knob(node, wrappers.get(id(node)), targets.get(id(node)), lines_b)
            if k is not None:
                found.append(k)

    found.sort(key=lambda k: (k.line, k.col_offset))
    seen: set[str] = set()
    unique = []
    for k in found:
        if k.name not in seen:
            seen.add(k.name)
            unique.append(k)
    return unique


# --------------------------------------------------------------------------- formatting


def _format_float(x: float, template: str) -> str:
    x = float(f"{x:.4g}")
    if "e" in template.lower():
        mant, exp = f"{x:.3e}".split("e")
        if "." in mant:
            mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    s = repr(x)
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


def _format_int(n: int, template: str) -> str:
    return f"{n:_}" if "_" in template else str(n)


def format_value(knob: Knob, new: float | int) -> str:
    """The number as it will be written (without quotes)."""
    template = knob.number_text.strip()
    if knob.kind == "int":
        if isinstance(new, float) and not new.is_integer():
            raise ValueError(f"{knob.name} is an int; {new!r} is not a whole number")
        return _format_int(int(new), template)
    return _format_float(float(new), template)


def apply_value(source: str, knob: Knob, new: float | int) -> str:
    """``source`` with exactly the literal of ``knob`` replaced by ``new``;
    every other byte is kept (quotes of a string default included)."""
    lines = source.split("\n")
    i = knob.line - 1
    if not 0 <= i < len(lines):
        raise ValueError(f"{knob.name}: line {knob.line} is not in the source")
    raw = lines[i].encode("utf-8")
    old = raw[knob.col_offset:knob.end_col_offset].decode("utf-8")
    if old != knob.text:
        raise ValueError(f"{knob.name}: expected {knob.text!r} at line {knob.line}, found {old!r}; "
                         "the knob does not belong to this source")
    number = format_value(knob, new)
    if knob.quoted:
        m = _STRING_LITERAL.match(knob.text)
        assert m is not None
        inner = m.group(3)
        lead = inner[: len(inner) - len(inner.lstrip())]
        trail = inner[len(inner.rstrip()):]
        literal = f"{m.group(1)}{m.group(2)}{lead}{number}{trail}{m.group(2)}"
    else:
        literal = number
    lines[i] = (raw[:knob.col_offset] + literal.encode("utf-8") + raw[knob.end_col_offset:]).decode("utf-8")
    return "\n".join(lines)


# --------------------------------------------------------------------------- stepping


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def _has(name: str, markers) -> bool:
    up = name.upper()
    return any(m in up for m in markers)


def step_value(knob: Knob, direction: str) -> float | int | None:
    """The value one step ``direction`` from the knob's, or None when there is
    no sensible one (it would cross zero, or the knob is a zero int)."""
    old = knob.value
    up = direction == "up"
    if knob.kind == "int":
        old = int(old)
        if old == 0:
            return None
        if old > 0 and _is_pow2(old) and _has(knob.name, _POW2_MARKERS):
            new = old * 2 if up else old // 2
        else:
            delta = max(1, round(abs(old) * INT_FRACTION))
            new = old + delta if up else old - delta
        if (old > 0 and new <= 0) or (old < 0 and new >= 0) or new == old:
            return None
        return new
    old = float(old)
    if old == 0.0:
        if not up:
            return None
        name, toks = knob.name.upper(), knob.name.upper().split("_")
        for marker, start in _ZERO_OK_MARKERS.items():
            if marker in toks or (len(marker) > 2 and marker in name):
                return start
        return None
    if 0 < old < 1 and _has(knob.name, _FRACTION_MARKERS):
        new = 1 - (1 - old) / STEP if up else old / STEP
    elif old > 0:
        new = old * STEP if up else old / STEP
    else:  # negative: "up" moves toward zero
        new = old / STEP if up else old * STEP
    new = float(f"{new:.4g}")
    if new == old or (old > 0 and new <= 0) or (old < 0 and new >= 0):
        return None
    return new


# --------------------------------------------------------------------------- choosing

_DESC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s+(\S+)\s*->\s*(\S+)")


def _entry_knob_dir(entry: dict) -> tuple[str | None, str | None]:
    knob, direction = entry.get("knob"), entry.get("direction")
    if knob and direction:
        return knob, direction
    m = _DESC.match(str(entry.get("description", "")))
    if m:
        try:
            a, b = float(m.group(2).strip("'\"").replace("_", "")), float(m.group(3).strip("'\"").replace("_", ""))
        except ValueError:
            return knob or m.group(1), direction
        return knob or m.group(1), direction or ("up" if b > a else "down")
    return knob, direction


def _tiebreak(seed: int, name: str, direction: str) -> str:
    return hashlib.sha256(f"{seed}|{name}|{direction}".encode()).hexdigest()


_FAILED = {"discard", "crash", "backtrack"}


def propose(source: str, history: list[dict] | None = None,
            dead_ends: set[tuple[str, str]] | frozenset = frozenset(), seed: int = 0,
            only: Callable[[str], bool] | None = None) -> Proposal:
    """One change to one numeric hyperparameter default of ``source``.

    ``history``: earlier experiments, oldest first, as dicts with
    ``description``, ``knob``, ``direction``, ``status`` (keep, discard,
    crash, backtrack) and ``val_bpb``. ``only``, when given, limits the
    choice to knobs whose name it accepts."""
    knobs = find_knobs(source)
    if not knobs:
        raise ValueError("no numeric hyperparameter defaults found in the source: expected ALL_CAPS "
                         "constants (LEARNING_RATE = 3e-3) or os.environ.get(\"NAME\", default) defaults")
    if only is not None:
        knobs = [k for k in knobs if only(k.name)]
        if not knobs:
            raise ValueError("no numeric hyperparameter default of the requested kind in the source")
    history = list(history or [])
    dead = {(str(k), str(d)) for k, d in dead_ends}
    parsed = [(_entry_knob_dir(e), e) for e in history]

    last_seen: dict[str, int] = {}
    failed_pairs: set[tuple[str, str]] = set()
    for idx, ((k, d), e) in enumerate(parsed):
        if k:
            last_seen[k] = idx
            if str(e.get("status", "")).lower() in _FAILED and d:
                failed_pairs.add((k, d))
    follow: tuple[str, str] | None = None
    if parsed:
        (k, d), e = parsed[-1]
        if k and d and str(e.get("status", "")).lower() == "keep":
            follow = (k, d)

    candidates = []
    n = len(parsed)
    for knob in knobs:
        for direction in ("up", "down"):
            if (knob.name, direction) in dead:
                continue
            new = step_value(knob, direction)
            if new is None:
                continue
            pair = (knob.name, direction)
            age = n - last_seen[knob.name] if knob.name in last_seen else n + 1
            if pair == follow:
                tier = 0
            elif pair in failed_pairs:
                tier = 3
            elif knob.name not in last_seen:
                tier = 1
            else:
                tier = 2
            candidates.append(((tier, -age, _tiebreak(seed, knob.name, direction)), knob, direction, new))
    if not candidates:
        raise ValueError(f"every change to the {len(knobs)} numeric hyperparameter defaults found "
                         f"({', '.join(k.name for k in knobs)}) is a dead end or has no valid step")
    candidates.sort(key=lambda c: c[0])
    (tier, _, _), knob, direction, new = candidates[0]

    new_source = apply_value(source, knob, new)
    new_text = format_value(knob, new)
    description = f"{knob.name} {knob.number_text.strip()} -> {new_text}"
    reasoning = _reasoning(knob, direction, new_text, tier, parsed, dead)
    new_value = int(new) if knob.kind == "int" else float(new_text)
    return Proposal(knob=knob.name, old=knob.value, new=new_value, direction=direction,
                    source=new_source, description=description, reasoning=reasoning)


# --------------------------------------------------------------------------- reasoning


def _category(name: str) -> str:
    up = name.upper()
    toks = set(up.split("_"))
    if "LEARNING_RATE" in up or toks & {"LR", "LRS"} or up.endswith("LR"):
        return "lr"
    if "DROPOUT" in up:
        return "dropout"
    if "DECAY" in up or "WD" in toks:
        return "decay"
    if "WARMUP" in up or "WARMDOWN" in up or "COOLDOWN" in up:
        return "schedule"
    if "BATCH" in up or "TOKENS" in up:
        return "batch"
    if toks & {"ITERATIONS", "STEPS", "ITERS"}:
        return "steps"
    if _has(up, ("DIM", "LAYER", "HEADS", "DEPTH", "WIDTH", "HIDDEN", "MLP", "EMBED", "MULT")):
        return "size"
    return "other"


_WHY = {
    "lr": ("faster progress in the fixed time budget", "steadier optimisation with less loss noise"),
    "dropout": ("stronger regularisation, less overfitting", "more of the model's capacity used per step"),
    "decay": ("stronger regularisation of the weights", "less shrinkage, more effective capacity"),
    "schedule": ("a gentler start or end of the schedule", "more steps spent at the full learning rate"),
    "batch": ("less gradient noise per step", "more optimiser steps in the same budget"),
    "steps": ("more training within the schedule", "a schedule that fits the time budget better"),
    "size": ("more capacity per token", "faster steps, so more of them in the same budget"),
    "other": ("a better setting than the untuned default", "a better setting than the untuned default"),
}
_RISK = {
    "lr": ("loss spikes or divergence (NaN, crash)", "slower convergence, worse val_bpb at the fixed budget"),
    "dropout": ("underfitting in a short run", "overfitting if the run is long enough"),
    "decay": ("underfitting from over-regularisation", "overfitting or instability in long runs"),
    "schedule": ("fewer steps at the peak learning rate", "instability early or a worse final anneal"),
    "batch": ("fewer steps in the budget, more memory (OOM)", "noisier gradients; may need a lower learning rate"),
    "steps": ("the run may not finish inside the time budget", "the schedule ends before the model converges"),
    "size": ("slower steps and more memory (OOM), fewer steps in the budget", "less capacity, higher loss floor"),
    "other": ("an unexpected interaction with other settings", "an unexpected interaction with other settings"),
}


def _fmt_bpb(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return f"{f:.4f}" if math.isfinite(f) else "n/a"


def _reasoning(knob: Knob, direction: str, new_text: str, tier: int,
               parsed: list, dead: set[tuple[str, str]]) -> str:
    cat = _category(knob.name)
    i = 0 if direction == "up" else 1
    verb = "Raising" if direction == "up" else "Lowering"
    old_text = knob.number_text.strip()
    hypothesis = (f"{verb} {knob.name} from {old_text} to {new_text} lowers val_bpb: "
                  f"{_WHY[cat][i]}.")

    ev: list[str] = []
    if not parsed:
        ev.append("no earlier experiments in this run; this is a first one-knob probe "
                  f"of {knob.name} (line {knob.line}, {knob.style} default).")
    else:
        statuses = [str(e.get("status", "")).lower() for _, e in parsed]
        ev.append(f"{len(parsed)} earlier experiments ({statuses.count('keep')} kept, "
                  f"{statuses.count('discard')} discarded, {statuses.count('crash')} crashed).")
        kept = [e for _, e in parsed if str(e.get("status", "")).lower() == "keep"
                and _fmt_bpb(e.get("val_bpb")) != "n/a"]
        if kept:
            best = min(kept, key=lambda e: float(e["val_bpb"]))
            ev.append(f"Best kept val_bpb so far {_fmt_bpb(best['val_bpb'])} "
                      f"({best.get('description', '?')!s}).")
        same = [(d, e) for (k, d), e in parsed if k == knob.name]
        if tier == 0:
            e = parsed[-1][1]
            ev.append(f"The last change, '{e.get('description', '')}', was kept "
                      f"(val_bpb {_fmt_bpb(e.get('val_bpb'))}); pushing {knob.name} further {direction}.")
        elif not same:
            ev.append(f"{knob.name} has not been tried yet.")
        else:
            d, e = same[-1]
            ev.append(f"{knob.name} was last tried {d} ('{e.get('description', '')}': "
                      f"{e.get('status', '?')}, val_bpb {_fmt_bpb(e.get('val_bpb'))}); "
                      "every untried knob has been probed.")
    other = "down" if direction == "up" else "up"
    if (knob.name, other) in dead:
        ev.append(f"{knob.name} {other} is a recorded dead end.")

    risk = f"{_RISK[cat][i]}."
    if knob.style == "environ":
        risk += f" An exported {knob.name} in the environment would override this default."
    return ("REASONING\n"
            f"Hypothesis: {hypothesis}\n"
            f"Evidence: {' '.join(ev)}\n"
            f"Risk: {risk}\n")
