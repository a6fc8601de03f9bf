# ALiBi: per-head linear distance penalty added to attention logits, no RoPE.
SLOPES = [2 ** (-8 * (h + 1) / 4) for h in range(4)]
