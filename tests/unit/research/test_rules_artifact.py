"""decide() and the ANALYSIS block: the artifact limit only where the repository has one;
the log line the score was read from, written down."""

from __future__ import annotations

from actors.research.rules import Measurement, ResultRow, analysis_block, decide, standing
from actors.research.schedule import Policy, judge

BASE = "b" * 40
CAND = "c" * 40
ROWS = [ResultRow(n=0, commit=BASE, val_bpb=1.30, artifact_mb=None, status="keep", kind="baseline", seed=1),
        ResultRow(n=0, commit=BASE, val_bpb=1.30, artifact_mb=None, status="keep", kind="baseline", seed=2)]
POLICY = Policy(baseline_seeds=2)


def measured(val_bpb, artifact_bytes=None, **kw) -> Measurement:
    return Measurement(val_bpb=val_bpb, artifact_bytes=artifact_bytes, crashed=False, error=None, seconds=61.0,
                       timed_out=False, steps=953, metric_line="12: val_bpb:          1.200000", **kw)


def decided(m: Measurement, cap_bytes: int | None) -> tuple[str, str]:
    """decide() as the team calls it: the candidate's first run against the baseline's
    seeds (identical reruns: the comparison is exact)."""
    row = ResultRow(n=1, commit=CAND, val_bpb=m.val_bpb, artifact_mb=m.artifact_mb, status="pending", seed=1,
                    base=BASE)
    s = standing(ROWS + [row])
    return decide(m, "tweak", s, cap_bytes, judge(s, 1, POLICY))


def test_without_an_artifact_limit_val_bpb_alone_decides():
    assert decided(measured(1.20), None)[0] == "keep"
    assert decided(measured(1.20, artifact_bytes=99_000_000), None)[0] == "keep"
    assert decided(measured(1.35), None)[0] == "discard"


def test_with_the_limit_a_missing_or_oversized_artifact_is_discarded():
    status, why = decided(measured(1.20), 16_000_000)
    assert status == "discard" and "no artifact size" in why
    status, why = decided(measured(1.20, artifact_bytes=16_000_001), 16_000_000)
    assert status == "discard" and "over the 16,000,000-byte cap" in why
    assert decided(measured(1.20, artifact_bytes=15_999_999), 16_000_000)[0] == "keep"


def test_the_analysis_block_names_the_score_line_memory_and_time():
    s = standing(ROWS)
    m = measured(1.20, peak_memory_mib=45060.2, training_seconds=300.1)
    block = analysis_block([1.20], None, "DEPTH up", s.head_bpb, s, "keep", "better", ROWS, m=m)
    assert "Score line: 12: val_bpb:          1.200000" in block
    assert "peak memory 45,060 MiB; 953 steps in 300s" in block and "artifact" not in block
    crashed = Measurement(val_bpb=None, artifact_bytes=None, crashed=True, error="timed out after 900s",
                          seconds=900.0, timed_out=True, steps=10, log_path="x.log", last_val_bpb=1.4)
    block = analysis_block([], "timed out after 900s", "DEPTH up", s.head_bpb, s, "crash", "crashed", ROWS,
                           m=crashed)
    assert "it had reached val_bpb 1.4000 (not a result)" in block and "Score line" not in block
    # Without the run's measurement (decided later, over several seeds) the block still stands.
    block = analysis_block([1.20, 1.21], None, "DEPTH up", s.head_bpb, s, "keep", "better", ROWS)
    assert "val_bpb 1.2050 over 2 seed(s)" in block and "Score line" not in block
