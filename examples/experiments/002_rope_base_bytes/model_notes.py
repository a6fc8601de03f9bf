# Only change from the baseline GPT: the rotary base.
ROPE_BASE = 500_000  # baseline: 10_000
EVAL_SEQ_LENS = (512, 2048)
