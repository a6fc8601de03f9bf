"""What a change is: one fingerprint however it is written, and the change re-applied on a newer base."""

from __future__ import annotations

from actors.research.changes import fingerprint, reapply

BASE = '''import os

SEED = int(os.environ.get("SEED", 1337))
LEARNING_RATE = float(os.environ.get("LEARNING_RATE", 3e-3))
WARMUP_STEPS = int(os.environ.get("WARMUP_STEPS", 20))
MODEL_DIM = int(os.environ.get("MODEL_DIM", 128))
WEIGHT_DECAY = 0.0


def main():
    return MODEL_DIM
'''


def change(src, old, new):
    assert src.count(old) == 1
    return src.replace(old, new)


def test_one_change_one_fingerprint_however_it_is_spelled():
    a = change(BASE, '"LEARNING_RATE", 3e-3', '"LEARNING_RATE", 4.5e-3')
    b = change(BASE, '"LEARNING_RATE", 3e-3', '"LEARNING_RATE",   0.0045')  # spacing, spelling
    c = change(BASE, '"LEARNING_RATE", 3e-3', '"LEARNING_RATE", "0.0045"')  # a quoted default
    d = change(BASE, '"LEARNING_RATE", 3e-3))', '"LEARNING_RATE", 4.5e-3))  # try a higher lr')
    assert fingerprint(BASE, a) == fingerprint(BASE, b) == fingerprint(BASE, c) == fingerprint(BASE, d)


def test_the_same_knob_moved_the_same_way_to_the_same_value_on_another_base_is_the_same_change():
    other_base = change(BASE, '"MODEL_DIM", 128', '"MODEL_DIM", 256').replace("3e-3", "2e-3")
    here = change(BASE, "3e-3", "4.5e-3")
    there = change(other_base, "2e-3", "4.5e-3")  # from another value, same way, same value
    assert fingerprint(BASE, here) == fingerprint(other_base, there)
    assert fingerprint(BASE, here) != fingerprint(BASE, change(BASE, "3e-3", "1e-3"))  # another value
    down_to = change(other_base.replace("2e-3", "6e-3"), "6e-3", "4.5e-3")  # the same value, moved down
    assert fingerprint(other_base.replace("2e-3", "6e-3"), down_to) != fingerprint(BASE, here)


def test_code_changes_are_compared_without_their_whitespace_and_comments():
    a = change(BASE, "    return MODEL_DIM\n", "    return MODEL_DIM * 2\n")
    b = change(BASE, "    return MODEL_DIM\n", "    return MODEL_DIM*2  # twice\n")
    c = change(BASE, "    return MODEL_DIM\n", "    return MODEL_DIM * 3\n")
    assert fingerprint(BASE, a) == fingerprint(BASE, b) != fingerprint(BASE, c)
    comment_only = change(BASE, "WEIGHT_DECAY = 0.0\n", "WEIGHT_DECAY = 0.0  # none\n\n")
    assert fingerprint(BASE, comment_only) == fingerprint(BASE, BASE)


def test_a_change_is_reapplied_on_a_head_that_moved_neighbouring_lines():
    ours = change(BASE, '"WARMUP_STEPS", 20', '"WARMUP_STEPS", 25')
    head = change(BASE, '"MODEL_DIM", 128', '"MODEL_DIM", 256')  # the next line: a 3-way merge calls it a conflict
    head = change(head, '"LEARNING_RATE", 3e-3', '"LEARNING_RATE", 4.5e-3')  # and the line before
    combined = reapply(BASE, ours, head)
    assert combined == change(head, '"WARMUP_STEPS", 20', '"WARMUP_STEPS", 25')
    added = BASE + "\n\ndef helper():\n    return 1\n"
    assert reapply(BASE, added, head) == head + "\n\ndef helper():\n    return 1\n"


def test_a_change_to_lines_the_head_changed_too_does_not_apply():
    ours = change(BASE, '"MODEL_DIM", 128', '"MODEL_DIM", 192')
    head = change(BASE, '"MODEL_DIM", 128', '"MODEL_DIM", 256')
    assert reapply(BASE, ours, head) is None
