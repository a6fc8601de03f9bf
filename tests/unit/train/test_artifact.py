"""The Parameter Golf artifact: quantisation error, sizes, the cap, the round trip."""

import re

import pytest
import torch
from torch import nn

from train.artifact import (
    ARTIFACT_CAP_BYTES,
    ArtifactReport,
    compress,
    decompress,
    dequantize_state_dict_int8,
    evaluate_roundtrip,
    measure_artifact,
    quantize_state_dict_int8,
    roundtrip_state_dict,
)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # 512x256 = 131,072 weights per matrix: above the 65,536 keep-float threshold,
    # so these are int8; the biases are small and kept.
    return nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256), nn.GELU(), nn.Linear(256, 10))


@pytest.fixture
def state_dict():
    torch.manual_seed(1)
    return {
        "big.weight": torch.randn(384, 256) * torch.linspace(0.01, 3.0, 384)[:, None],  # rows of very different scale
        "big_bf16.weight": torch.randn(300, 256).to(torch.bfloat16),
        "conv.weight": torch.randn(64, 32, 6, 6),  # > 65,536 and not 2-D: one scale for the tensor
        "small.bias": torch.randn(100),
        # All-zero rows, and a row so small its fp16 scale is subnormal (1.44 * 2**-24).
        "zero_rows.weight": torch.cat([torch.zeros(127, 600), torch.randn(1, 600), torch.linspace(-1.1e-5, 1.1e-5, 600)[None]]),
        "steps": torch.tensor(12345, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
    }


def test_per_row_error_is_at_most_half_a_step(state_dict):
    obj, _ = quantize_state_dict_int8(state_dict)
    restored = dequantize_state_dict_int8(obj)
    for name in ("big.weight", "zero_rows.weight"):
        step = obj["scales"][name].float()
        assert step.shape == (state_dict[name].shape[0],)
        err = (restored[name] - state_dict[name]).abs().amax(dim=1)
        assert torch.all(err <= step / 2 * (1 + 1e-6)), name
    assert torch.equal(restored["zero_rows.weight"][:127], torch.zeros(127, 600))
    assert obj["quantized"]["big.weight"].dtype == torch.int8
    assert obj["scales"]["big.weight"].dtype == torch.float16


def test_keys_shapes_and_dtypes_survive(state_dict):
    restored = roundtrip_state_dict(state_dict)
    assert set(restored) == set(state_dict)
    for name, t in state_dict.items():
        assert restored[name].shape == t.shape, name
        assert restored[name].dtype == t.dtype, name
    # Non-float tensors are carried exactly; small floats only lose fp16 precision.
    assert torch.equal(restored["steps"], state_dict["steps"])
    assert torch.equal(restored["mask"], state_dict["mask"])
    assert torch.allclose(restored["small.bias"], state_dict["small.bias"], rtol=1e-3, atol=1e-4)


def test_stats_count_params_and_bytes(state_dict):
    _, stats = quantize_state_dict_int8(state_dict)
    assert stats["param_count"] == sum(t.numel() for t in state_dict.values())
    assert stats["num_tensors"] == len(state_dict)
    assert stats["num_float_tensors"] == 4  # the quantised ones
    assert stats["num_nonfloat_tensors"] == 2
    assert stats["baseline_tensor_bytes"] == sum(t.numel() * t.element_size() for t in state_dict.values())
    assert stats["int8_payload_bytes"] < stats["baseline_tensor_bytes"] / 3


def test_logits_after_round_trip_are_close():
    model = _mlp().eval()
    x = torch.randn(64, 256)
    with torch.no_grad():
        before = model(x)
        model.load_state_dict(roundtrip_state_dict(model.state_dict()))
        after = model(x)
    rel = (after - before).norm() / before.norm()
    assert rel < 0.02, f"relative logit error {rel:.4f}"


def test_int8_compresses_well_below_fp32():
    model = _mlp()
    fp32_bytes = sum(t.numel() * 4 for t in model.state_dict().values())
    report = measure_artifact(model.state_dict(), [])
    assert report.model_bytes < 0.35 * fp32_bytes


@pytest.mark.parametrize("method", ["zlib", "lzma"])
def test_both_methods_round_trip(method, state_dict):
    data = b"parameter golf " * 1000
    assert decompress(compress(data, method), method) == data
    a = roundtrip_state_dict(state_dict, method)
    b = roundtrip_state_dict(state_dict, "zlib")
    assert all(torch.equal(a[k], b[k]) for k in state_dict)  # the codec is lossless; only int8 loses


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="'brotli'"):
        compress(b"x", "brotli")
    with pytest.raises(ValueError, match="'brotli'"):
        measure_artifact({}, [], method="brotli")


def test_missing_code_file_is_named(tmp_path):
    missing = tmp_path / "train_gpt.py"
    with pytest.raises(FileNotFoundError, match="train_gpt.py"):
        measure_artifact(_mlp().state_dict(), [missing])


def test_total_is_code_plus_model_and_lines_have_the_golf_format(tmp_path):
    code = tmp_path / "train_gpt.py"
    code.write_text("print('hello')\n" * 100)
    report = measure_artifact(_mlp().state_dict(), [code, str(code)], method="lzma")  # one file named twice
    assert report.code_bytes == code.stat().st_size
    assert report.total_bytes == report.code_bytes + report.model_bytes
    lines = report.summary_lines()
    assert lines[0] == f"Serialized model int8+lzma: {report.model_bytes} bytes"
    assert lines[1] == f"Code size: {report.code_bytes} bytes"
    assert lines[2] == f"Total submission size int8+lzma: {report.total_bytes} bytes"
    spare = ARTIFACT_CAP_BYTES - report.total_bytes
    assert lines[3] == f"Submission cap: 16000000 bytes (fits, {spare} bytes to spare)"
    # The official log's parsers key on these prefixes.
    assert re.fullmatch(r"Total submission size int8\+lzma: \d+ bytes", lines[2])


def test_fits_flips_exactly_at_the_cap(tmp_path):
    state = _mlp().state_dict()
    model_bytes = measure_artifact(state, []).model_bytes
    code = tmp_path / "train_gpt.py"
    with open(code, "wb") as f:  # a sparse file: counted at its size, costs no disk
        f.truncate(ARTIFACT_CAP_BYTES - model_bytes)
    at_cap = measure_artifact(state, [code])
    assert at_cap.total_bytes == ARTIFACT_CAP_BYTES and at_cap.fits
    with open(code, "ab") as f:
        f.write(b"#")
    over = measure_artifact(state, [code])
    assert over.total_bytes == ARTIFACT_CAP_BYTES + 1 and not over.fits
    assert over.summary_lines()[3] == "Submission cap: 16000000 bytes (DOES NOT FIT, 1 bytes over)"


def test_report_refuses_inconsistent_numbers():
    assert ArtifactReport.build(10, 20, "zlib", cap_bytes=30).fits
    assert not ArtifactReport.build(10, 21, "zlib", cap_bytes=30).fits
    with pytest.raises(ValueError, match="total_bytes"):
        ArtifactReport(10, 20, 31, 100, True, "zlib")
    with pytest.raises(ValueError, match="fits"):
        ArtifactReport(10, 20, 30, 29, True, "zlib")


def test_nan_weights_are_refused_by_name():
    bad = torch.randn(300, 300)
    bad[3, 4] = float("nan")
    with pytest.raises(ValueError, match="'layer.weight'.*1 NaN"):
        quantize_state_dict_int8({"layer.weight": bad})


def test_evaluate_roundtrip_scores_a_copy_and_leaves_the_model_alone():
    model = _mlp().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(32, 256)
    with torch.no_grad():
        ref = model(x)

    seen = []

    def eval_fn(m):
        seen.append(m)
        with torch.no_grad():
            return float(((m(x) - ref) ** 2).mean())

    mse, info = evaluate_roundtrip(model, eval_fn, method="zlib")
    assert seen and seen[0] is not model
    assert 0 < mse < 1e-3 * float((ref**2).mean())  # quantised, so different, but barely
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert info["method"] == "zlib" and info["model_bytes"] > 0
    assert 0 < info["max_abs_weight_error"] < 1e-3
    assert info["param_count"] == sum(p.numel() for p in model.parameters())
