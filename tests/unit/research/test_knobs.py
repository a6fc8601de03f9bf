"""The offline proposer changes exactly one numeric default, by rule."""

from __future__ import annotations

import ast
import difflib
import math

import pytest

from actors.research.knobs import Proposal, apply_value, find_knobs, propose

AUTORESEARCH = '''"""A tiny autoresearch-style train.py."""
import torch

# --- hyperparameters (edit these) ---
LEARNING_RATE = 3e-3  # peak learning rate
EMBEDDING_LR = 0.6
NUM_LAYERS = 4        # depth
MODEL_DIM = 256
NUM_HEADS = 4
HEAD_DIM = 64
TOTAL_BATCH_SIZE = 2**19
DEVICE_BATCH_SIZE = 32
WEIGHT_DECAY = 0.0
DROPOUT = 0.1
WARMUP_STEPS = 1_000
GRAD_CLIP = -1.0
ADAM_BETAS = (0.8, 0.95)
SEED = 1337
USE_COMPILE = True
TIME_BUDGET = 300
OUT_DIR = "out"
name = 12

def main():
    LOCAL_CONSTANT = 5
    return LEARNING_RATE * NUM_LAYERS
'''

PARAMETER_GOLF = '''import os
import torch


class Hyperparameters:
    data_path = os.environ.get("DATA_PATH", "./data/fineweb10B")
    seed = int(os.environ.get("SEED", 1337))
    val_loss_every = int(os.environ.get("VAL_LOSS_EVERY", 1000))
    iterations = int(os.environ.get("ITERATIONS", 20000))
    warmdown_iters = int(os.environ.get("WARMDOWN_ITERS", 1200))
    train_batch_tokens = int(os.environ.get("TRAIN_BATCH_TOKENS", 524288))
    train_seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 1024))
    model_dim = int(os.environ.get("MODEL_DIM", 512))
    num_heads = int(os.environ.get("NUM_HEADS", 8))
    num_kv_heads = int(os.environ.get("NUM_KV_HEADS", "4"))
    matrix_lr = float(os.environ.get("MATRIX_LR", "0.04"))
    scalar_lr = float(os.environ.get('SCALAR_LR', '0.04'))
    beta2 = float(os.environ.get("BETA2", 0.95))
    logit_softcap = float(os.environ.get("LOGIT_SOFTCAP", 30.0))
    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))
    vocab_size = int(os.environ.get("VOCAB_SIZE", 1024))
    tie = bool(int(os.environ.get("TIE_EMBEDDINGS", "1")))


def main():
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    port = int(os.environ.get("MASTER_PORT", 29500))
'''

NOTHING = '''import os
SEED = 0
NAME = "gpt"
USE_AMP = True
DATA_DIR = os.environ.get("DATA_DIR", "/tmp")
lr = 3e-4  # lowercase: not a style (a) constant
def f(x=3):
    return x
'''

FORBIDDEN = {"TIE_EMBEDDINGS", "SEED", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "DATA_PATH", "VAL_LOSS_EVERY",
             "DEVICE_BATCH_SIZE", "OUT_DIR", "TIME_BUDGET", "MAX_WALLCLOCK_SECONDS", "VOCAB_SIZE"}
POW2_NAMES = ("DIM", "HEADS", "BATCH", "SEQ", "LEN")


def _values(source: str) -> dict[str, float | int]:
    return {k.name: k.value for k in find_knobs(source)}


def _check_one_change(old_src: str, p: Proposal) -> None:
    # exactly one line differs
    old_lines, new_lines = old_src.split("\n"), p.source.split("\n")
    assert len(old_lines) == len(new_lines)
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    assert len(changed) == 1, changed
    diff = [ln for ln in difflib.unified_diff(old_lines, new_lines, lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert len(diff) == 2
    # still valid Python
    compile(ast.parse(p.source), "<proposed>", "exec")
    # same knobs, exactly one value differs, and it is the proposed one
    before, after = _values(old_src), _values(p.source)
    assert before.keys() == after.keys()
    differing = [k for k in before if before[k] != after[k]]
    assert differing == [p.knob]
    assert before[p.knob] == p.old and after[p.knob] == p.new
    assert (p.new > p.old) == (p.direction == "up")
    assert type(after[p.knob]) is type(before[p.knob])
    # outside the literal the line is untouched
    knob = next(k for k in find_knobs(old_src) if k.name == p.knob)
    old_b, new_b = old_lines[changed[0]].encode(), new_lines[changed[0]].encode()
    assert new_b.startswith(old_b[:knob.col_offset])
    assert new_b.endswith(old_b[knob.end_col_offset:])


def _all_proposals(src: str, seeds=range(12)):
    """Many different proposals: every seed, plus walking through dead ends."""
    out = [propose(src, seed=s) for s in seeds]
    dead: set[tuple[str, str]] = set()
    while True:
        try:
            p = propose(src, dead_ends=dead)
        except ValueError:
            break
        out.append(p)
        dead.add((p.knob, p.direction))
    return out


def test_find_knobs_autoresearch_style():
    knobs = {k.name: k for k in find_knobs(AUTORESEARCH)}
    assert set(knobs) == {"LEARNING_RATE", "EMBEDDING_LR", "NUM_LAYERS", "MODEL_DIM", "NUM_HEADS",
                          "HEAD_DIM", "WEIGHT_DECAY", "DROPOUT", "WARMUP_STEPS", "GRAD_CLIP"}
    assert knobs["LEARNING_RATE"].value == 3e-3 and knobs["LEARNING_RATE"].kind == "float"
    assert knobs["WARMUP_STEPS"].value == 1000 and knobs["WARMUP_STEPS"].kind == "int"
    assert knobs["GRAD_CLIP"].value == -1.0
    assert all(k.style == "constant" for k in knobs.values())


def test_find_knobs_parameter_golf_style():
    knobs = {k.name: k for k in find_knobs(PARAMETER_GOLF)}
    assert set(knobs) == {"ITERATIONS", "WARMDOWN_ITERS", "TRAIN_BATCH_TOKENS", "TRAIN_SEQ_LEN", "MODEL_DIM",
                          "NUM_HEADS", "NUM_KV_HEADS", "MATRIX_LR", "SCALAR_LR", "BETA2", "LOGIT_SOFTCAP"}
    assert knobs["MATRIX_LR"].value == 0.04 and knobs["MATRIX_LR"].kind == "float"
    assert knobs["MATRIX_LR"].quoted and knobs["MATRIX_LR"].text == '"0.04"'
    assert knobs["NUM_KV_HEADS"].kind == "int" and knobs["NUM_KV_HEADS"].value == 4
    assert knobs["ITERATIONS"].kind == "int" and not knobs["ITERATIONS"].quoted
    assert knobs["ITERATIONS"].target == "iterations"
    assert all(k.style == "environ" for k in knobs.values())


@pytest.mark.parametrize("src", [AUTORESEARCH, PARAMETER_GOLF], ids=["autoresearch", "golf"])
def test_every_proposal_is_one_literal_on_one_line(src):
    props = _all_proposals(src)
    assert len({(p.knob, p.direction) for p in props}) >= 10
    for p in props:
        _check_one_change(src, p)
        assert p.knob not in FORBIDDEN
        assert p.description.startswith(f"{p.knob} ") and " -> " in p.description
        for word in ("Hypothesis", "Evidence", "Risk"):
            assert word in p.reasoning


@pytest.mark.parametrize("src", [AUTORESEARCH, PARAMETER_GOLF], ids=["autoresearch", "golf"])
def test_step_rules(src):
    for p in _all_proposals(src):
        if isinstance(p.old, int):
            assert isinstance(p.new, int)
            if p.old > 0:
                assert p.new > 0
            old_pow2 = p.old > 0 and p.old & (p.old - 1) == 0
            if old_pow2 and any(m in p.knob for m in POW2_NAMES):
                assert p.new & (p.new - 1) == 0 and p.new in (p.old * 2, p.old // 2)
            else:
                assert abs(p.new - p.old) == max(1, round(abs(p.old) * 0.25))
        else:
            assert isinstance(p.new, float)
            if p.old > 0:
                assert p.new > 0
                if "BETA" not in p.knob and "DROPOUT" not in p.knob:
                    ratio = p.new / p.old if p.direction == "up" else p.old / p.new
                    assert ratio == pytest.approx(1.5, rel=1e-3)
                else:
                    assert p.new < 1
            elif p.old < 0:
                assert p.new < 0


def test_string_default_keeps_its_quotes():
    src = PARAMETER_GOLF
    for name, quote in (("MATRIX_LR", '"'), ("SCALAR_LR", "'"), ("NUM_KV_HEADS", '"')):
        others = {(k.name, d) for k in find_knobs(src) for d in ("up", "down") if k.name != name}
        p = propose(src, dead_ends=others)
        assert p.knob == name
        new_line = [ln for ln in p.source.split("\n") if f"{quote}{name}{quote}" in ln][0]
        lit = new_line.split(",", 1)[1].strip().rstrip(")")
        assert lit[0] == quote and lit[-1] == quote, new_line
        float(lit[1:-1])
    p = propose(src, dead_ends={(k.name, d) for k in find_knobs(src) for d in ("up", "down")} - {("MATRIX_LR", "up")})
    assert 'os.environ.get("MATRIX_LR", "0.06")' in p.source
    assert p.description == "MATRIX_LR 0.04 -> 0.06"


def test_float_spelling_and_comments_preserved():
    knobs = {k.name: k for k in find_knobs(AUTORESEARCH)}
    new = apply_value(AUTORESEARCH, knobs["LEARNING_RATE"], 4.5e-3)
    assert "LEARNING_RATE = 4.5e-3  # peak learning rate\n" in new
    new = apply_value(AUTORESEARCH, knobs["WARMUP_STEPS"], 1250)
    assert "WARMUP_STEPS = 1_250\n" in new
    new = apply_value(AUTORESEARCH, knobs["EMBEDDING_LR"], 0.6 * 1.5)
    assert "EMBEDDING_LR = 0.9\n" in new
    new = apply_value(AUTORESEARCH, knobs["GRAD_CLIP"], -1.5)
    assert "GRAD_CLIP = -1.5\n" in new


def test_zero_and_one_do_not_cross_zero():
    src = "A_COUNT = 1\nZERO_INT = 0\nWEIGHT_DECAY = 0.0\nSOFTCAP = 0.0\n"
    props = _all_proposals(src)
    pairs = {(p.knob, p.direction): p for p in props}
    assert ("A_COUNT", "down") not in pairs and pairs[("A_COUNT", "up")].new == 2
    assert not any(k == "ZERO_INT" for k, _ in pairs) and not any(k == "SOFTCAP" for k, _ in pairs)
    assert ("WEIGHT_DECAY", "down") not in pairs and pairs[("WEIGHT_DECAY", "up")].new > 0


def test_dead_ends_are_never_proposed():
    for src in (AUTORESEARCH, PARAMETER_GOLF):
        first = propose(src)
        dead = {(first.knob, first.direction)}
        for seed in range(10):
            p = propose(src, dead_ends=dead, seed=seed)
            assert (p.knob, p.direction) not in dead
        everything = {(k.name, d) for k in find_knobs(src) for d in ("up", "down")}
        with pytest.raises(ValueError, match="dead end"):
            propose(src, dead_ends=everything)


def test_deterministic():
    for src in (AUTORESEARCH, PARAMETER_GOLF):
        hist = [{"description": "X", "knob": "MODEL_DIM", "direction": "up", "status": "discard", "val_bpb": 1.2}]
        a = propose(src, history=hist, dead_ends={("NUM_HEADS", "up")}, seed=3)
        b = propose(src, history=list(hist), dead_ends={("NUM_HEADS", "up")}, seed=3)
        assert a == b
    # different seeds explore different first changes
    assert len({(p.knob, p.direction) for p in (propose(AUTORESEARCH, seed=s) for s in range(10))}) > 1


def test_history_steers_away_from_a_discarded_change():
    for src in (AUTORESEARCH, PARAMETER_GOLF):
        for seed in range(5):
            first = propose(src, seed=seed)
            hist = [{"description": first.description, "knob": first.knob, "direction": first.direction,
                     "status": "discard", "val_bpb": 1.31}]
            nxt = propose(src, history=hist, seed=seed)
            assert nxt.knob != first.knob
            assert "1.31" in nxt.reasoning or first.knob in nxt.reasoning or "1 earlier" in nxt.reasoning


def test_history_without_knob_field_is_parsed_from_description():
    first = propose(AUTORESEARCH)
    hist = [{"description": first.description, "status": "crash", "val_bpb": None}]
    assert propose(AUTORESEARCH, history=hist).knob != first.knob


def test_kept_change_is_pushed_further():
    p1 = propose(AUTORESEARCH)
    hist = [{"description": p1.description, "knob": p1.knob, "direction": p1.direction,
             "status": "keep", "val_bpb": 1.25}]
    p2 = propose(p1.source, history=hist)
    assert (p2.knob, p2.direction) == (p1.knob, p1.direction)
    assert p2.old == p1.new
    assert "kept" in p2.reasoning and "1.2500" in p2.reasoning
    # unless that pair is a dead end
    p3 = propose(p1.source, history=hist, dead_ends={(p1.knob, p1.direction)})
    assert (p3.knob, p3.direction) != (p1.knob, p1.direction)


def test_prefers_knobs_not_tried_recently():
    knobs = [k.name for k in find_knobs(PARAMETER_GOLF)]
    hist = [{"description": f"{n} 1 -> 2", "knob": n, "direction": "up", "status": "discard", "val_bpb": 1.3}
            for n in knobs[:-1]]
    assert propose(PARAMETER_GOLF, history=hist).knob == knobs[-1]
    # all tried: the least recently tried knob, in the direction that has not failed
    hist.append({"description": "x", "knob": knobs[-1], "direction": "up", "status": "discard", "val_bpb": 1.3})
    p = propose(PARAMETER_GOLF, history=hist)
    assert p.knob == knobs[0] and p.direction == "down"


def test_no_numeric_defaults_is_a_clear_error():
    with pytest.raises(ValueError, match="no numeric hyperparameter defaults found"):
        propose(NOTHING)
    assert find_knobs(NOTHING) == []


def test_crlf_and_unicode_preserved():
    src = "# héllo — ünïcode\r\nLR = 3e-3  # ü\r\nNUM_LAYERS = 4\r\n"
    p = propose(src, dead_ends={("NUM_LAYERS", "up"), ("NUM_LAYERS", "down"), ("LR", "down")})
    assert p.source == "# héllo — ünïcode\r\nLR = 4.5e-3  # ü\r\nNUM_LAYERS = 4\r\n"
    assert not math.isnan(p.new)
