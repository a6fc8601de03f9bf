"""The training datasets, checked the way a user would check them."""

import json
import math
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from train.data import (
    BENCHMARKS,
    DatasetUnavailable,
    accuracy,
    bits_per_byte,
    build_dataset,
    correct_and_total,
)
from train.data.fineweb import SHARD_MAGIC, open_shard, token_bytes_from_sentencepiece, write_shard


def gen(seed):
    return torch.Generator().manual_seed(seed)


def joined(ds, split) -> bytes:
    return b"".join(np.asarray(s[: len(s)]).astype(np.uint8).tobytes() for s in ds.segments(split))


@pytest.fixture(scope="module")
def stdlib_corpus():
    return build_dataset("bytes", seq_len=128)


@pytest.fixture
def marked_dir(tmp_path):
    """40 files, each made of its own marker, so every byte tells which file it came from."""
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(40):
        (d / f"mod_{i:02d}.py").write_text(f"<file {i:02d}>" * 30)
    (d / "notes.txt").write_text("not matched by the glob " * 50)
    return d


# ---------------------------------------------------------------- bytes


def test_stdlib_corpus_is_real_text_and_describes_itself(stdlib_corpus):
    info = stdlib_corpus.describe()
    json.dumps(info)  # must be serialisable for the run record
    assert info["source"] == "python-stdlib" and info["vocab_size"] == 256 and info["metric"] == "bpb"
    assert info["bytes"]["train"] > 1_000_000 and info["bytes"]["val"] > 10_000
    assert info["bytes"]["train"] + info["bytes"]["val"] <= 8_000_000
    assert info["files"]["train"] > 0 and info["files"]["val"] > 0
    assert b"def " in joined(stdlib_corpus, "train")[:200_000]
    assert torch.equal(stdlib_corpus.token_bytes, torch.ones(256, dtype=torch.long))


def test_stdlib_split_is_the_same_on_a_second_build(stdlib_corpus):
    again = build_dataset("bytes", seq_len=128)
    assert again.describe()["sha256"] == stdlib_corpus.describe()["sha256"]
    for (x1, y1), (x2, y2) in zip(stdlib_corpus.eval_batches(8, 4), again.eval_batches(8, 4), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_stdlib_split_is_the_same_in_other_processes(stdlib_corpus):
    # Another process has another str-hash salt; the split must not depend on it.
    code = (
        "from train.data import build_dataset; "
        "print(build_dataset('bytes', seq_len=128).describe()['sha256'])"
    )
    repo = Path(__file__).resolve().parents[3]
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=repo,
            env={**os.environ, "PYTHONHASHSEED": salt},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for salt in ("1", "2")
    }
    assert digests == {stdlib_corpus.describe()["sha256"]}


def test_no_file_is_in_both_splits(marked_dir):
    ds = build_dataset("bytes", seq_len=64, paths=[str(marked_dir)], val_fraction=0.3)
    train, val = joined(ds, "train").decode(), joined(ds, "val").decode()
    in_train = {i for i in range(40) if f"<file {i:02d}>" in train}
    in_val = {i for i in range(40) if f"<file {i:02d}>" in val}
    assert in_train and in_val, "both splits should get files at val_fraction=0.3"
    assert in_train.isdisjoint(in_val)
    assert in_train | in_val == set(range(40))
    assert "not matched" not in train + val  # the glob keeps *.py only
    assert ds.describe()["files"] == {"train": len(in_train), "val": len(in_val)}


def test_training_windows_come_from_the_train_split_and_y_is_x_shifted(marked_dir):
    ds = build_dataset("bytes", seq_len=64, paths=[str(marked_dir)], val_fraction=0.3)
    train, val = joined(ds, "train"), joined(ds, "val")
    x, y = ds.train_batch(16, gen(0))
    assert x.shape == y.shape == (16, 64) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y):
        window = bytes(row_x.tolist()) + bytes([int(row_y[-1])])
        assert window in train
    val_files = {m for m in set(val.decode().split(">")) if m}
    for row in x:
        text = bytes(row.tolist()).decode()
        assert not any(f"{m}>" in text for m in val_files)


def test_same_generator_seed_gives_the_same_batch(stdlib_corpus):
    a = stdlib_corpus.train_batch(8, gen(123))
    b = stdlib_corpus.train_batch(8, gen(123))
    c = stdlib_corpus.train_batch(8, gen(124))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_eval_batches_are_fixed_and_spread_over_the_validation_split(stdlib_corpus):
    first = list(stdlib_corpus.eval_batches(4, 3))
    second = list(stdlib_corpus.eval_batches(4, 3))
    assert len(first) == 3
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(x1[:, 1:], y1[:, :-1])
    val = joined(stdlib_corpus, "val")
    starts = [val.find(bytes(row.tolist())) for x, _ in first for row in x]
    assert all(s >= 0 for s in starts)
    assert max(starts) > len(val) // 2  # not just the first few files


def test_eval_covers_the_whole_split_when_asked(marked_dir):
    ds = build_dataset("bytes", seq_len=64, paths=[str(marked_dir)], val_fraction=0.3)
    n_val = len(joined(ds, "val"))
    windows = sum(len(x) for x, _ in ds.eval_batches(7, 10_000))
    assert windows == (n_val - 1) // 64


def test_a_single_file_is_split_at_its_tail(tmp_path):
    f = tmp_path / "input.txt"
    f.write_bytes(bytes(range(256)) * 40)
    ds = build_dataset("bytes", seq_len=32, paths=[str(f)], val_fraction=0.1)
    train, val = joined(ds, "train"), joined(ds, "val")
    assert train + val == f.read_bytes() and len(val) == 1024


def test_max_bytes_caps_the_corpus(tmp_path):
    for i in range(10):
        (tmp_path / f"{i}.py").write_text("x" * 1000)
    ds = build_dataset("bytes", seq_len=16, paths=[str(tmp_path)], max_bytes=5500, val_fraction=0.4)
    info = ds.describe()
    assert info["bytes"]["train"] + info["bytes"]["val"] == 5500 and info["truncated"]
    assert 0 < info["bytes"]["val"] <= math.ceil(5500 * 0.4)


def test_a_small_cap_on_the_stdlib_still_leaves_a_validation_split():
    info = build_dataset("bytes", seq_len=64, max_bytes=20_000).describe()
    assert info["bytes"] == {"train": 19_000, "val": 1_000}
    assert info["files"]["train"] > 0 and info["files"]["val"] > 0


def test_two_files_give_one_to_each_split(tmp_path):
    (tmp_path / "a.txt").write_text("a" * 500)
    (tmp_path / "b.txt").write_text("b" * 500)
    ds = build_dataset("bytes", seq_len=32, paths=[str(tmp_path / "a.txt"), str(tmp_path / "b.txt")])
    assert {joined(ds, "train"), joined(ds, "val")} == {b"a" * 500, b"b" * 500}


def test_bytes_corpus_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_dataset("bytes", seq_len=16, paths=[str(tmp_path / "nope")])
    with pytest.raises(ValueError, match=r"no files matching '\*\.py'"):
        build_dataset("bytes", seq_len=16, paths=[str(tmp_path)])
    (tmp_path / "a.py").write_text("short")
    (tmp_path / "b.py").write_text("short too")
    with pytest.raises(ValueError, match="fewer than seq_len"):
        build_dataset("bytes", seq_len=64, paths=[str(tmp_path)])
    with pytest.raises(ValueError, match="val_fraction"):
        build_dataset("bytes", seq_len=16, val_fraction=1.5)
    with pytest.raises(ValueError, match="max_bytes"):
        build_dataset("bytes", seq_len=16, max_bytes="lots")


# ---------------------------------------------------------------- metrics


def test_uniform_predictor_scores_8_bits_per_byte():
    y = torch.randint(0, 256, (4, 32), generator=gen(0))
    y[:, :5] = -100  # unscored positions count neither loss nor bytes
    logits = torch.zeros(4, 32, 256)
    loss_sum = F.cross_entropy(logits.view(-1, 256), y.view(-1), reduction="sum").item()
    assert bits_per_byte(loss_sum, y, torch.ones(256, dtype=torch.long)) == pytest.approx(8.0, rel=1e-6)
    # Tokens of 2 bytes each: the same loss spreads over twice the bytes.
    assert bits_per_byte(loss_sum, y, torch.full((256,), 2)) == pytest.approx(4.0, rel=1e-6)


def test_metrics_refuse_to_divide_by_nothing():
    y = torch.full((2, 4), -100)
    with pytest.raises(ValueError, match="0 bytes"):
        bits_per_byte(1.0, y, torch.ones(256, dtype=torch.long))
    with pytest.raises(ValueError, match="no position"):
        accuracy(torch.zeros(2, 4, 8), y)


def test_accuracy_counts_only_scored_positions():
    y = torch.tensor([[-100, 3, -100, 1]])
    logits = torch.zeros(1, 4, 5)
    logits[0, 1, 3] = 1.0  # right
    logits[0, 3, 2] = 1.0  # wrong
    logits[0, 0, 4] = 1.0  # unscored
    assert accuracy(logits, y) == 0.5
    assert correct_and_total(logits, y) == (1, 2)


# ---------------------------------------------------------------- MQAR


def kv_oracle_logits(x, num_kv_pairs, vocab_size):
    """Predicts, at every position holding a key, the value paired with it in the
    row's key-value prefix: a model with perfect recall."""
    logits = torch.zeros(*x.shape, vocab_size)
    for r, row in enumerate(x.tolist()):
        pairs = dict(zip(row[0 : 2 * num_kv_pairs : 2], row[1 : 2 * num_kv_pairs : 2]))
        for p, tok in enumerate(row):
            if p >= 2 * num_kv_pairs and tok in pairs:
                logits[r, p, pairs[tok]] = 1.0
    return logits


@pytest.mark.parametrize("random_non_queries", [True, False])
def test_mqar_targets_are_the_values_paired_with_their_query_keys(random_non_queries):
    V, N, L = 512, 8, 64
    ds = build_dataset("mqar", seq_len=L, vocab_size=V, num_kv_pairs=N, random_non_queries=random_non_queries)
    x, y = ds.train_batch(64, gen(0))
    assert x.shape == y.shape == (64, L)
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        keys, values = row_x[0 : 2 * N : 2], row_x[1 : 2 * N : 2]
        assert len(set(keys)) == N and all(1 <= k < V // 2 for k in keys)
        assert len(set(values)) == N and all(V // 2 <= v < V for v in values)
        pairs = dict(zip(keys, values))
        scored = [p for p, t in enumerate(row_y) if t != -100]
        assert len(scored) == N  # one query per key
        assert all(p >= 2 * N and (p - 2 * N) % 2 == 0 for p in scored)
        assert {row_x[p] for p in scored} == set(keys)
        assert all(row_y[p] == pairs[row_x[p]] for p in scored)
        if not random_non_queries:
            assert all(t == 0 for p, t in enumerate(row_x) if p >= 2 * N and p not in scored)


def test_mqar_perfect_recall_scores_1_and_guessing_scores_near_0():
    ds = build_dataset("mqar", seq_len=64, vocab_size=1024, num_kv_pairs=8)
    x, y = next(ds.eval_batches(100, 1))
    assert accuracy(kv_oracle_logits(x, 8, 1024), y) == 1.0
    assert accuracy(torch.randn(*x.shape, 1024, generator=gen(0)), y) < 0.05
    assert ds.token_bytes is None and ds.metric == "accuracy"


def test_mqar_query_gaps_follow_the_power_law():
    def early_share(power_a):
        ds = build_dataset("mqar", seq_len=256, vocab_size=4096, num_kv_pairs=8, power_a=power_a)
        _, y = ds.train_batch(400, gen(0))
        pos = (y != -100).nonzero()[:, 1] - 16
        return (pos < (256 - 16) // 4).float().mean().item()

    # power_a=1 is uniform over gaps; Zoology's 0.01 pushes queries towards the pairs.
    assert early_share(0.01) > early_share(1.0) + 0.2


def test_mqar_validation_set_is_fixed_and_distinct_from_training():
    a = build_dataset("mqar", seq_len=64, num_examples=50, seed=3)
    b = build_dataset("mqar", seq_len=64, num_examples=50, seed=3)
    va, vb = list(a.eval_batches(16, 10)), list(b.eval_batches(16, 10))
    assert [len(x) for x, _ in va] == [16, 16, 16, 2]
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(va, vb))
    train_x, _ = a.train_batch(16, gen(3))
    assert not torch.equal(train_x, va[0][0])
    other_seed = next(build_dataset("mqar", seq_len=64, num_examples=50, seed=4).eval_batches(16, 1))[0]
    assert not torch.equal(other_seed, va[0][0])


def test_mqar_rejects_a_sequence_too_short_for_its_pairs():
    with pytest.raises(ValueError, match=r"4 \* num_kv_pairs"):
        build_dataset("mqar", seq_len=30, num_kv_pairs=8)
    with pytest.raises(ValueError, match="even"):
        build_dataset("mqar", seq_len=65, num_kv_pairs=8)
    with pytest.raises(ValueError, match="random_non_queries"):
        build_dataset("mqar", seq_len=64, random_non_queries="yes")


# ---------------------------------------------------------------- FineWeb


@pytest.fixture
def shard_dir(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "fineweb10B_sp64"
    d.mkdir()
    train = [rng.integers(0, 64, 3000), rng.integers(0, 64, 2000)]
    val = rng.integers(0, 64, 1500)
    write_shard(d / "fineweb_train_000000.bin", train[0])
    write_shard(d / "fineweb_train_000001.bin", train[1])
    write_shard(d / "fineweb_val_000000.bin", val)
    table = np.arange(64) % 4  # token byte lengths 0..3
    np.save(tmp_path / "token_bytes.npy", table)
    return d, train, val, table


def fineweb(d, **params):
    params = {"token_bytes_path": str(d.parent / "token_bytes.npy"), "vocab_size": 64, **params}
    return build_dataset("fineweb", seq_len=100, path=str(d), **params)


def test_write_shard_round_trips(tmp_path):
    tokens = np.array([0, 1, 65535, 1234, 7])
    write_shard(tmp_path / "s.bin", tokens)
    raw = (tmp_path / "s.bin").read_bytes()
    assert len(raw) == 1024 + 2 * len(tokens)
    assert np.frombuffer(raw[:12], "<i4").tolist() == [SHARD_MAGIC, 1, 5]
    assert np.asarray(open_shard(tmp_path / "s.bin")[:]).tolist() == tokens.tolist()
    with pytest.raises(ValueError, match="uint16"):
        write_shard(tmp_path / "t.bin", [70000])


def test_fineweb_batches_come_from_the_shards(shard_dir):
    d, train, val, table = shard_dir
    ds = fineweb(d)
    info = ds.describe()
    json.dumps(info)
    assert info["tokens"] == {"train": 5000, "val": 1500} and len(info["shards"]["train"]) == 2
    x, y = ds.train_batch(8, gen(0))
    assert torch.equal(x[:, 1:], y[:, :-1])
    train_text = [" ".join(map(str, t.tolist())) for t in train]
    for row_x, row_y in zip(x, y):
        window = " ".join(map(str, row_x.tolist() + [int(row_y[-1])]))
        assert any(window in t for t in train_text)  # a window never spans two shards
    (vx, vy), *_ = ds.eval_batches(4, 1)
    assert vx[0].tolist() == val[:100].tolist() and vy[0].tolist() == val[1:101].tolist()
    assert torch.equal(ds.token_bytes, torch.from_numpy(table))


def test_fineweb_bits_per_byte_uses_token_bytes(shard_dir):
    d, _, _, table = shard_dir
    ds = fineweb(d)
    _, y = next(ds.eval_batches(4, 1))
    loss_sum = y.numel() * math.log(64)  # uniform predictor over 64 tokens: 6 bits per token
    expected = 6.0 * y.numel() / table[y.numpy()].sum()
    assert bits_per_byte(loss_sum, y, ds.token_bytes) == pytest.approx(expected)


def test_fineweb_dataset_pickles_without_its_tokens(shard_dir):
    d, *_ = shard_dir
    ds = fineweb(d)
    list(ds.eval_batches(4, 1))  # maps the files
    blob = pickle.dumps(ds)
    assert len(blob) < 5000 * 2  # shipped to a Ray worker as paths, not data
    copy = pickle.loads(blob)
    for (x1, _), (x2, _) in zip(ds.eval_batches(4, 2), copy.eval_batches(4, 2), strict=True):
        assert torch.equal(x1, x2)


def test_fineweb_shard_errors_are_clear(shard_dir, tmp_path):
    d, *_ = shard_dir
    npy = str(d.parent / "token_bytes.npy")
    bad = d / "fineweb_val_000001.bin"
    header = np.zeros(256, "<i4")
    header[:3] = [12345, 1, 4]
    bad.write_bytes(header.tobytes() + b"\0" * 8)
    with pytest.raises(ValueError, match="magic number 12345, expected 20240520"):
        build_dataset("fineweb", seq_len=100, path=str(d), token_bytes_path=npy, vocab_size=64)
    header[0] = SHARD_MAGIC
    bad.write_bytes(header.tobytes() + b"\0" * 6)
    with pytest.raises(ValueError, match="says 4 tokens"):
        build_dataset("fineweb", seq_len=100, path=str(d), token_bytes_path=npy, vocab_size=64)
    bad.unlink()
    with pytest.raises(ValueError, match="vocab_size is 32"):
        build_dataset("fineweb", seq_len=100, path=str(d), token_bytes_path=npy, vocab_size=32)
    with pytest.raises(DatasetUnavailable, match="tokenizer_path"):
        build_dataset("fineweb", seq_len=100, path=str(d), vocab_size=64)
    with pytest.raises(DatasetUnavailable, match="fineweb_train_"):
        build_dataset("fineweb", seq_len=100, path=str(tmp_path), token_bytes_path=npy, vocab_size=64)
    with pytest.raises(DatasetUnavailable, match="parameter-golf"):
        build_dataset("fineweb", seq_len=100, token_bytes_path=npy)


def test_fineweb_rejects_tokens_beyond_vocab_size(shard_dir):
    d, *_ = shard_dir
    np.save(d.parent / "tb16.npy", np.ones(16, dtype=np.int64))
    ds = fineweb(d, token_bytes_path=str(d.parent / "tb16.npy"), vocab_size=16)
    with pytest.raises(ValueError, match="vocab_size is 16"):
        ds.train_batch(4, gen(0))


class _FakeSentencePiece:
    """The few SentencePieceProcessor calls the byte table uses, over a tiny vocab."""

    PIECES = ["<unk>", "<s>", "</s>", "<0x41>", "\u2581the", "ing", "\u2581", "é", "\u2581日本"]

    def __init__(self, model_file):
        self.model_file = model_file

    def vocab_size(self):
        return len(self.PIECES)

    def is_control(self, i):
        return i in (1, 2)

    def is_unknown(self, i):
        return i == 0

    def is_unused(self, i):
        return False

    def is_byte(self, i):
        return i == 3

    def id_to_piece(self, i):
        return self.PIECES[i]


def test_token_bytes_from_sentencepiece_counts_utf8_bytes(monkeypatch, tmp_path):
    fake = types.SimpleNamespace(SentencePieceProcessor=_FakeSentencePiece)
    monkeypatch.setitem(sys.modules, "sentencepiece", fake)
    table = token_bytes_from_sentencepiece(tmp_path / "m.model", vocab_size=12)
    # unk, bos, eos, byte, "▁the", "ing", "▁", "é", "▁日本", then 3 padding ids
    assert table.tolist() == [0, 0, 0, 1, 4, 3, 1, 2, 7, 0, 0, 0]


def test_tokenizer_without_sentencepiece_says_what_to_do(monkeypatch, shard_dir):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import fails as if not installed
    d, *_ = shard_dir
    (d / "tok.model").write_bytes(b"x")
    with pytest.raises(DatasetUnavailable, match="token_bytes_path"):
        build_dataset("fineweb", seq_len=100, path=str(d), tokenizer_path=str(d / "tok.model"), vocab_size=64)


# ---------------------------------------------------------------- WikiText-103

TRAIN_LINES = 20 * [
    " \n",
    " = Valkyria Chronicles III = \n",
    " \n",
    " Senjō no Valkyria 3 : Unrecorded Chronicles \n",
]
VALID_LINES = 5 * [" \n", " = Homarus gammarus = \n", " \n", " Homarus gammarus , known as the European lobster \n"]


def test_wikitext_from_local_raw_files(tmp_path):
    d = tmp_path / "wikitext-103-raw"
    d.mkdir()
    (d / "wiki.train.raw").write_text("".join(TRAIN_LINES), encoding="utf-8")
    (d / "wiki.valid.raw").write_text("".join(VALID_LINES), encoding="utf-8")
    ds = build_dataset("wikitext103", seq_len=64, path=str(tmp_path))  # finds the subfolder
    assert joined(ds, "train") == "".join(TRAIN_LINES).encode()
    assert joined(ds, "val") == "".join(VALID_LINES).encode()
    x, y = ds.train_batch(4, gen(0))
    assert torch.equal(x[:, 1:], y[:, :-1]) and ds.vocab_size == 256 and ds.metric == "bpb"
    assert "Homarus" in b"".join(bytes(x.flatten().tolist()) for x, _ in ds.eval_batches(8, 10)).decode()
    json.dumps(ds.describe())


def test_wikitext_from_hugging_face_parquet_matches_the_raw_text(tmp_path):
    d = tmp_path / "wikitext-103-raw-v1"
    d.mkdir()
    pq.write_table(pa.table({"text": TRAIN_LINES[:40]}), d / "train-00000-of-00002.parquet")
    pq.write_table(pa.table({"text": TRAIN_LINES[40:]}), d / "train-00001-of-00002.parquet", row_group_size=7)
    pq.write_table(pa.table({"text": VALID_LINES}), d / "validation-00000-of-00001.parquet")
    ds = build_dataset("wikitext103", seq_len=64, path=str(d))
    assert joined(ds, "train") == "".join(TRAIN_LINES).encode()
    assert joined(ds, "val") == "".join(VALID_LINES).encode()
    assert ds.describe()["format"] == "parquet"


def test_missing_wikitext_says_what_to_download_and_where(tmp_path, monkeypatch):
    with pytest.raises(DatasetUnavailable) as err:
        build_dataset("wikitext103", seq_len=64, path=str(tmp_path / "absent"))
    message = str(err.value)
    assert "https://huggingface.co/datasets/Salesforce/wikitext" in message
    assert "wiki.train.raw" in message and "`path`" in message and "absent" in message
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if `datasets` were not installed
    with pytest.raises(DatasetUnavailable, match="`datasets` is not installed"):
        build_dataset("wikitext103", seq_len=64)


def test_wikitext_falls_back_to_hugging_face_datasets(monkeypatch):
    calls = []

    def load_dataset(repo, config):
        calls.append((repo, config))
        return {"train": {"text": TRAIN_LINES}, "validation": {"text": VALID_LINES}}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    ds = build_dataset("wikitext103", seq_len=64)
    assert calls == [("Salesforce/wikitext", "wikitext-103-raw-v1")]
    assert joined(ds, "val") == "".join(VALID_LINES).encode()

    def offline(repo, config):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DatasetUnavailable, match="no network.*Salesforce/wikitext"):
        build_dataset("wikitext103", seq_len=64)


# ---------------------------------------------------------------- build_dataset


def test_unknown_benchmark_is_named_with_the_choices():
    with pytest.raises(ValueError) as err:
        build_dataset("imagenet", seq_len=64)
    assert "'imagenet'" in str(err.value) and all(b in str(err.value) for b in BENCHMARKS)


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match="unknown parameter 'num_pairs' for benchmark 'mqar'.*num_kv_pairs"):
        build_dataset("mqar", seq_len=64, num_pairs=4)
    with pytest.raises(ValueError, match="unknown parameter 'tokenizer_path' for benchmark 'bytes'"):
        build_dataset("bytes", seq_len=64, tokenizer_path="x")


def test_bad_sizes_are_named(stdlib_corpus):
    with pytest.raises(ValueError, match="seq_len"):
        build_dataset("mqar", seq_len=0)
    with pytest.raises(ValueError, match="batch_size"):
        stdlib_corpus.train_batch(0, gen(0))
    with pytest.raises(ValueError, match="max_batches"):
        list(stdlib_corpus.eval_batches(4, 0))
