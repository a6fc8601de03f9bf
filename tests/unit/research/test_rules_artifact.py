"""decide() and the ANALYSIS block: the artifact limit only where the repository has one;
the log line the score was read from, written down."""

from __future__ import annotations

from actors.research.rules import Measurement, ResultRow, analysis_block, decide, standing

ROWS = [ResultRow(n=0, commit="b" * 40, val_bpb=1.30, artifact_mb=None, status="keep", kind="baseline"),
        ResultRow(n=0, commit="b" * 40, val_bpb=1.30, artifact_mb=None, status="keep", kind="baseline")]


def measured(val_bpb, artifact_bytes=None, **kw) -> Measurement:
    return Measurement(val_bpb=val_bpb, artifact_bytes=artifact_bytes, crashed=False, error=None, seconds=61.0,
                       timed_out=False, steps=953, metric_line="12: val_bpb:          1.200000", **kw)


def test_without_an_artifact_limit_val_bpb_alone_decides():
    s = standing(ROWS)
    assert decide(measured(1.20), "tweak", s, None)[0] == "keep"
    assert decide(measured(1.20, artifact_bytes=99_000_000), "tweak", s, None)[0] == "keep"
    assert decide(measured(1.35), "tweak", s, None)[0] == "discard"


def test_with_the_limit_a_missing_or_oversized_artifact_is_discarded():
    s = standing(ROWS)
    status, why = decide(measured(1.20), "tweak", s, 16_000_000)
    assert status == "discard" and "no artifact size" in why
    status, why = decide(measured(1.20, artifact_bytes=16_000_001), "tweak", s, 16_000_000)
    assert status == "discard" and "over the 16,000,000-byte cap" in why
    assert decide(measured(1.20, artifact_bytes=15_999_999), "tweak", s, 16_000_000)[0] == "keep"


def test_the_analysis_block_names_the_score_line_memory_and_time():
    s = standing(ROWS)
    m = measured(1.20, peak_memory_mib=45060.2, training_seconds=300.1)
    block = analysis_block(m, "DEPTH up", s, "keep", "better", ROWS)
    assert "Score line: 12: val_bpb:          1.200000" in block
    assert "peak memory 45,060 MiB; 953 steps in 300s" in block and "artifact" not in block
    crashed = Measurement(val_bpb=None, artifact_bytes=None, crashed=True, error="timed out after 900s",
                          seconds=900.0, timed_out=True, steps=10, log_path="x.log", last_val_bpb=1.4)
    block = analysis_block(crashed, "DEPTH up", s, "crash", "crashed", ROWS)
    assert "it had reached val_bpb 1.4000 (not a result)" in block and "Score line" not in block
