"""train.models: the model families, their loader and the numbers we report about them."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from train.models import (
    MODEL_FAMILIES,
    ModelLoadError,
    build_model,
    count_parameters,
    flops_per_token,
)

VOCAB, SEQ = 37, 16
TINY = dict(vocab_size=VOCAB, seq_len=SEQ, d_model=32, n_layers=2, n_heads=4)

CUSTOM_MODEL = """
import torch
from torch import nn

class TinyLM(nn.Module):
    def __init__(self, vocab_size, seq_len, width=8):
        super().__init__()
        self.vocab_size, self.seq_len, self.width = vocab_size, seq_len, width
        self.embed = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, idx):
        return self.head(self.embed(idx))
"""


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every weight a random value. The GPT zero-initialises its output
    projections, so at init attention contributes nothing and causality or
    position tests would pass for the wrong reason."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def write(tmp_path, name: str, source: str):
    file = tmp_path / name
    file.write_text(textwrap.dedent(source))
    return file


# --- shapes -----------------------------------------------------------------


@pytest.mark.parametrize("family", MODEL_FAMILIES)
@pytest.mark.parametrize("t", [SEQ, 5])
def test_every_family_maps_tokens_to_float_logits(family, t, tmp_path):
    extra = {"path": write(tmp_path, "tiny.py", CUSTOM_MODEL)} if family == "custom" else {}
    sizes = TINY if family != "custom" else dict(vocab_size=VOCAB, seq_len=SEQ)
    model = build_model(family, **sizes, **extra)
    logits = model(tokens(3, t))
    assert logits.shape == (3, t, VOCAB)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", ["gpt", "rnn"])
def test_builtin_models_expose_their_sizes(family):
    model = build_model(family, **TINY)
    assert (model.family, model.vocab_size, model.seq_len, model.d_model, model.n_layers) == (
        family, VOCAB, SEQ, 32, 2)


def test_gpt_refuses_sequences_longer_than_seq_len():
    model = build_model("gpt", **TINY)
    with pytest.raises(ValueError, match="seq_len"):
        model(tokens(1, SEQ + 1))


# --- GPT semantics -------------------------------------------------------------


def test_gpt_is_causal():
    model = randomise(build_model("gpt", **TINY))
    idx = tokens(2, SEQ)
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(idx), model(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9])
    # And the change is seen from position 9 on, so the check above is not
    # passing merely because the model ignores its input.
    assert (before[:, 9:] - after[:, 9:]).abs().amax() > 1e-3


def test_rope_makes_gpt_position_sensitive():
    # With one layer and no position information, causal attention is a
    # weighted average over a *set* of earlier tokens: swapping the first two
    # tokens could not change the output at position 2. RoPE must make it change.
    model = randomise(build_model("gpt", **{**TINY, "n_layers": 1}))
    a, b, x = 3, 11, 7
    idx = torch.tensor([[a, b, x], [b, a, x]])
    with torch.no_grad():
        logits = model(idx)
    assert (logits[0, 2] - logits[1, 2]).abs().amax() > 1e-3

    # Control: the same model with its rotation turned into the identity is
    # permutation-invariant, which shows RoPE is what carried the position.
    rotary = model.blocks[0].attn.rotary
    rotary.cos.fill_(1.0)
    rotary.sin.zero_()
    with torch.no_grad():
        logits = model(idx)
    torch.testing.assert_close(logits[0, 2], logits[1, 2])


def test_tied_embeddings_share_storage_and_count_once():
    for family in ("gpt", "rnn"):
        model = build_model(family, **TINY)
        assert model.lm_head.weight is model.embed.weight
        assert model.lm_head.weight.data_ptr() == model.embed.weight.data_ptr()
        with_duplicates = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
        assert count_parameters(model) == with_duplicates - VOCAB * 32


def test_gpt_parameter_count_matches_formula():
    v, d, layers, heads, kv_heads, ratio = 50, 48, 3, 6, 2, 3.0
    model = build_model("gpt", vocab_size=v, seq_len=8, d_model=d, n_layers=layers, n_heads=heads,
                        n_kv_heads=kv_heads, mlp_ratio=ratio)
    head_dim, hidden = d // heads, int(ratio * d)
    per_layer = (d * d                           # q
                 + 2 * d * kv_heads * head_dim   # k and v
                 + d * d                         # attention output
                 + 2 * d * hidden)               # MLP in and out; norms have no parameters
    assert count_parameters(model) == v * d + layers * per_layer


def test_gqa_has_fewer_parameters_and_matches_mha_with_repeated_kv_heads():
    gqa = randomise(build_model("gpt", **TINY, n_kv_heads=2))
    mha = build_model("gpt", **TINY, n_kv_heads=4)
    head_dim, d = 32 // 4, 32
    assert count_parameters(mha) - count_parameters(gqa) == 2 * (2 * d * (4 - 2) * head_dim)

    # A GQA model is an MHA model whose query heads 2j and 2j+1 share kv head j.
    # Copy the weights that way; the two models must then agree exactly.
    state = gqa.state_dict()
    for i in range(2):
        kv = state[f"blocks.{i}.attn.kv.weight"].view(2, 2, head_dim, d)
        state[f"blocks.{i}.attn.kv.weight"] = kv.repeat_interleave(2, dim=1).reshape(2 * 4 * head_dim, d)
    mha.load_state_dict(state)
    mha.eval()
    idx = tokens(2, SEQ)
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx), mha(idx))


@pytest.mark.parametrize("family", ["gpt", "rnn"])
def test_the_loop_trains_in_fp32_on_cpu_even_when_the_spec_asks_for_bf16(family):
    """What the engine does on CPU: train.loop autocasts on CUDA only, so a bf16
    spec computes exactly what fp32 computes on any CPU."""
    from train.loop import autocast_for

    model = randomise(build_model(family, **TINY))
    idx = tokens(2, SEQ)
    with torch.no_grad():
        reference = model(idx)
        with autocast_for(torch.device("cpu"), "bf16"):
            assert not torch.is_autocast_enabled("cpu")
            out = model(idx)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, rtol=0, atol=0)


def _cpu_bf16_missing(family: str) -> str | None:
    """Why this CPU cannot run `family` under bf16 autocast, or None. oneDNN has
    no bf16 LSTM on CPUs without AVX-512 (e.g. AMD EPYC before Zen 4): try the
    bare op, so that only the CPU's limitation skips, never a bug of ours."""
    if family != "rnn":
        return None
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            nn.LSTM(4, 4, batch_first=True)(torch.randn(1, 3, 4))
    except RuntimeError as exc:
        return f"this CPU has no bf16 LSTM kernel (oneDNN: {str(exc).splitlines()[0]})"
    return None


@pytest.mark.parametrize("family", ["gpt", "rnn"])
def test_models_run_under_bfloat16_autocast_on_cpus_that_can(family):
    """The models themselves are bf16-safe (what a CPU-autocast user or a
    custom loop relies on), checked wherever the CPU has the kernels."""
    missing = _cpu_bf16_missing(family)
    if missing:
        pytest.skip(missing)
    model = randomise(build_model(family, **TINY))
    idx = tokens(2, SEQ)
    with torch.no_grad():
        reference = model(idx)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(idx)
    assert low.dtype == torch.float32
    # bfloat16 keeps ~3 significant digits; a wrong computation is off by far more.
    assert (low - reference).abs().amax() < 0.1 * reference.abs().amax()


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["gpt", "rnn"])
def test_models_run_under_bfloat16_autocast_on_cuda(family):
    from train.loop import autocast_for

    model = randomise(build_model(family, **TINY)).cuda()
    idx = tokens(2, SEQ).cuda()
    with torch.no_grad():
        reference = model(idx)
        with autocast_for(torch.device("cuda"), "bf16"):  # what the loop trains under on a GPU
            assert torch.is_autocast_enabled("cuda")
            low = model(idx)
    assert low.dtype == torch.float32
    assert (low - reference).abs().amax() < 0.1 * reference.abs().amax()


# --- learning -----------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt", "rnn"])
def test_a_few_steps_learn_a_repeated_sequence(family):
    torch.manual_seed(0)
    model = build_model(family, **TINY)
    pattern = tokens(8, seed=1)
    seq = pattern.repeat(5)[: SEQ + 1]          # period 8: predictable after one period
    x, y = seq[:-1].unsqueeze(0), seq[1:].unsqueeze(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.8 * math.log(VOCAB)    # starts near chance
    assert losses[-1] < 0.25 * losses[0], losses


# --- FLOPs --------------------------------------------------------------------


def test_flops_per_token_is_6n_plus_attention_for_gpt():
    model = build_model("gpt", **TINY)
    n_non_embedding = count_parameters(model) - VOCAB * 32
    expected = 6 * n_non_embedding + 12 * 2 * 32 * SEQ
    assert flops_per_token(model, SEQ) == pytest.approx(expected)
    # The attention term grows with context; the parameter term does not.
    assert flops_per_token(model, 2 * SEQ) - flops_per_token(model, SEQ) == pytest.approx(12 * 2 * 32 * SEQ)


def test_flops_per_token_is_6n_for_rnn_and_custom(tmp_path):
    rnn = build_model("rnn", **TINY)
    assert flops_per_token(rnn, SEQ) == pytest.approx(6 * (count_parameters(rnn) - VOCAB * 32))
    custom = build_model("custom", vocab_size=VOCAB, seq_len=SEQ, path=write(tmp_path, "m.py", CUSTOM_MODEL))
    # A bare module with none of family/d_model/n_layers must not trip the helpers.
    assert flops_per_token(custom, SEQ) == pytest.approx(6 * (8 * VOCAB + VOCAB))  # head weight + bias


# --- custom models --------------------------------------------------------------


def test_custom_by_class_name_passes_sizes_and_kwargs(tmp_path):
    file = write(tmp_path, "two.py", CUSTOM_MODEL + """
class Other(nn.Module):
    def forward(self, idx):
        raise AssertionError("the wrong class was built")
""")
    model = build_model("custom", vocab_size=VOCAB, seq_len=SEQ, path=str(file), class_name="TinyLM",
                        kwargs={"width": 5})
    assert type(model).__name__ == "TinyLM"
    assert (model.vocab_size, model.seq_len, model.width) == (VOCAB, SEQ, 5)


def test_custom_autodetects_the_single_class_and_ignores_imported_ones(tmp_path, monkeypatch):
    # nn.Linear is imported into the file's namespace; only TinyLM is defined there.
    write(tmp_path, "solo.py", "from torch.nn import Linear\n" + CUSTOM_MODEL)
    monkeypatch.chdir(tmp_path)
    model = build_model("custom", vocab_size=VOCAB, seq_len=SEQ, path="solo.py")  # relative to cwd
    assert type(model).__name__ == "TinyLM"


def test_custom_prefers_build_model_function(tmp_path):
    file = write(tmp_path, "factory.py", CUSTOM_MODEL + """
class Other(nn.Module):
    pass

def build_model(vocab_size, depth=1, **rest):
    model = TinyLM(vocab_size, seq_len=None, width=4 * depth)
    model.rest = rest
    return model
""")
    model = build_model("custom", vocab_size=VOCAB, seq_len=SEQ, path=file, kwargs={"depth": 3})
    assert model.width == 12 and model.vocab_size == VOCAB
    assert model.rest == {"seq_len": SEQ}  # **kwargs receives the sizes too


def test_custom_constructor_without_size_arguments_is_called_without_them(tmp_path):
    file = write(tmp_path, "fixed.py", """
from torch import nn
class Fixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
""")
    assert count_parameters(build_model("custom", vocab_size=VOCAB, seq_len=SEQ, path=file)) == 6


def test_custom_reload_sees_edited_file(tmp_path):
    file = write(tmp_path, "edit.py", CUSTOM_MODEL)
    first = build_model("custom", vocab_size=VOCAB, seq_len=SEQ, path=file)
    file.write_text(CUSTOM_MODEL.replace("width=8", "width=3"))
    second = build_model("custom", vocab_size=VOCAB, seq_len=SEQ, path=file)
    assert (first.width, second.width) == (8, 3)


def test_custom_file_may_import_its_siblings(tmp_path):
    write(tmp_path, "layers.py", "from torch import nn\nclass Layer(nn.Linear):\n    pass\n")
    file = write(tmp_path, "net.py", """
from torch import nn
from layers import Layer
class Net(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.out = Layer(4, vocab_size)
""")
    model = build_model("custom", vocab_size=VOCAB, seq_len=SEQ, path=file)
    assert model.out.out_features == VOCAB


@pytest.mark.parametrize(
    "name, source, class_name, expected",
    [
        ("syntax.py", "class Broken(:\n    pass\n", None, r"syntax error at line 1"),
        ("noclass.py", "x = 1\n", None, r"defines no torch.nn.Module subclass and no build_model"),
        ("two.py", CUSTOM_MODEL + "\nclass B(nn.Module):\n    pass\n", None, r"several .*B, TinyLM.*class_name"),
        ("named.py", CUSTOM_MODEL, "Missing", r"no class 'Missing'.*TinyLM"),
        ("raises.py", CUSTOM_MODEL.replace("super().__init__()", "raise RuntimeError('out of memory')"), None,
         r"TinyLM\(.*\) raised RuntimeError: out of memory"),
        ("notmodule.py", "def build_model(vocab_size):\n    return 42\n", None, r"returned int, not a torch.nn.Module"),
        ("badimport.py", "import no_such_package_xyz\n", None, r"importing it failed: ModuleNotFoundError"),
    ],
)
def test_custom_errors_name_the_file_and_the_problem(tmp_path, name, source, class_name, expected):
    file = write(tmp_path, name, source)
    with pytest.raises(ModelLoadError, match=expected) as info:
        build_model("custom", vocab_size=VOCAB, seq_len=SEQ, path=file, class_name=class_name)
    assert str(file.resolve()) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_custom_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.py"
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        build_model("custom", vocab_size=VOCAB, seq_len=SEQ, path=missing)
    assert str(missing) in str(info.value)


def test_custom_kwargs_conflicting_with_sizes_are_refused(tmp_path):
    file = write(tmp_path, "c.py", CUSTOM_MODEL)
    with pytest.raises(ModelLoadError, match="vocab_size=99"):
        build_model("custom", vocab_size=VOCAB, seq_len=SEQ, path=file, kwargs={"vocab_size": 99})


# --- configuration errors -------------------------------------------------------


def test_unknown_family_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"'mamba'.*gpt, rnn, custom"):
        build_model("mamba", vocab_size=VOCAB, seq_len=SEQ)


@pytest.mark.parametrize(
    "family, change, field",
    [
        ("gpt", {"d_model": 30}, "d_model"),            # not divisible by n_heads=4
        ("gpt", {"n_kv_heads": 3}, "n_kv_heads"),       # n_heads=4 not divisible by 3
        ("gpt", {"n_heads": 0}, "n_heads"),
        ("gpt", {"d_model": 12, "n_heads": 4}, "head size"),  # head size 3 cannot be rotated
        ("gpt", {"mlp_ratio": 0.0}, "mlp_ratio"),
        ("gpt", {"dropout": 1.0}, "dropout"),
        ("gpt", {"vocab_size": 0}, "vocab_size"),
        ("rnn", {"seq_len": -1}, "seq_len"),
        ("rnn", {"n_layers": 0}, "n_layers"),
        ("rnn", {"d_model": 2.5}, "d_model"),
        ("gpt", {"path": "model.py"}, "path"),
        ("gpt", {"kwargs": {"rope_bsae": 1.0}}, "rope_bsae"),
        ("custom", {}, "path"),
    ],
)
def test_bad_config_names_the_field(family, change, field):
    with pytest.raises(ValueError, match=field):
        build_model(family, **{**TINY, **change})


def test_gpt_accepts_its_extra_option():
    model = build_model("gpt", **TINY, kwargs={"rope_base": 500.0})
    # The lowest rotary frequency is base^(-(d-2)/d) with d the head size (8).
    assert model.blocks[0].attn.rotary.sin[1, -1].item() == pytest.approx(math.sin(500.0 ** (-6 / 8)))


@pytest.mark.parametrize("kind", ["relu2", "gelu", "swiglu"])
def test_the_mlp_kinds_have_one_parameter_count_and_train(kind):
    # An MVE that compared MLPs at one size is scaled with the one it tested: the
    # gated MLP's hidden width is 2/3 of the others', so the sizes stay matched.
    base = count_parameters(build_model("gpt", **TINY))
    model = build_model("gpt", **TINY, kwargs={"mlp": kind})
    assert abs(count_parameters(model) - base) <= 0.01 * base and model.blocks[0].mlp.kind == kind
    idx = torch.randint(0, TINY["vocab_size"], (2, TINY["seq_len"]))
    loss = F.cross_entropy(model(idx).reshape(-1, TINY["vocab_size"]), idx.reshape(-1))
    loss.backward()
    # The output projection starts at zero (identity blocks), so its gradient is the one that moves first.
    assert torch.isfinite(loss) and model.blocks[0].mlp.proj.weight.grad.abs().sum() > 0


def test_an_unknown_mlp_kind_is_refused_naming_the_kinds():
    with pytest.raises(ValueError, match="mlp must be one of relu2, gelu, swiglu, got 'tanh'"):
        build_model("gpt", **TINY, kwargs={"mlp": "tanh"})
