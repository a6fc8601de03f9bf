"""The storage setting (train.storage) and the custom model files that travel
with a job, on local folders (the S3 paths run against a real S3 API in
tests/integration/test_storage.py)."""

import pytest

from train.storage import (STORAGE_ENV, Storage, StorageError, copy_down, local_folder, parse_storage, read_bytes,
                           resolve_storage, run_key, write_bytes)


def test_a_storage_is_a_local_folder_or_a_uri_with_a_bucket(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_storage("results").uri == str(tmp_path / "results") and parse_storage("results").is_local
    assert parse_storage(f"file://{tmp_path}/x").uri == str(tmp_path / "x")
    s3 = parse_storage("s3://bucket/team/runs?endpoint_override=127.0.0.1:9000&scheme=http")
    assert not s3.is_local and s3.display == "s3://bucket/team/runs"
    assert s3.join("runs", "a").uri == "s3://bucket/team/runs/runs/a?endpoint_override=127.0.0.1:9000&scheme=http"
    assert parse_storage("gs://bucket").join("tracker", "x.parquet").uri == "gs://bucket/tracker/x.parquet"
    for bad, words in [("ftp://host/x", "unknown scheme 'ftp'"), ("s3://", "no bucket"), ("", "empty"),
                       ("s3://KEY:hunter2@bucket/x", "credentials do not belong in the URI")]:
        with pytest.raises(StorageError, match=words) as err:
            parse_storage(bad)
        assert "hunter2" not in str(err.value)


def test_the_flag_wins_over_the_environment_and_unset_means_beside_the_run(monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert resolve_storage(None) is None
    monkeypatch.setenv(STORAGE_ENV, "gs://team-bucket/ray")
    assert resolve_storage(None).uri == "gs://team-bucket/ray"
    assert resolve_storage("s3://other/x").uri == "s3://other/x"


def test_a_run_keeps_its_folder_in_the_storage_and_runs_named_alike_do_not_meet(tmp_path):
    a, b = tmp_path / "code/001_scaled/run", tmp_path / "code/002_scaled/run"
    assert run_key(a) == run_key(a) and run_key(a) != run_key(b)
    assert run_key(a).startswith("001_scaled-run-")


def test_objects_and_folders_go_to_and_come_from_a_storage_whole(tmp_path):
    store = parse_storage(tmp_path / "shared")
    write_bytes(store.join("tracker", "state.parquet"), b"one")
    write_bytes(store.join("tracker", "state.parquet"), b"two")
    assert read_bytes(store.join("tracker", "state.parquet")) == b"two"
    assert read_bytes(store.join("tracker", "missing")) is None
    assert [p.name for p in (tmp_path / "shared/tracker").iterdir()] == ["state.parquet"]  # no temporaries left
    assert copy_down(store.join("tracker"), tmp_path / "here") and (tmp_path / "here/state.parquet").read_bytes() == b"two"
    assert not copy_down(store.join("nothing"), tmp_path / "there")
    with local_folder(str(tmp_path / "shared/tracker")) as folder:
        assert folder == tmp_path / "shared/tracker"


def test_a_checkpoint_uri_is_rebuilt_from_the_path_ray_reports():
    store = Storage("s3://bucket/team?endpoint_override=h:1&scheme=http")
    assert store.uri_of("bucket/team/run/ckpt_1") == "s3://bucket/team/run/ckpt_1?endpoint_override=h:1&scheme=http"
    assert Storage("/data/runs").uri_of("/data/runs/x/ckpt") == "/data/runs/x/ckpt"


def test_custom_model_files_travel_with_the_job_and_build_without_the_original(tmp_path):
    import shutil

    from train.models.custom import load_custom_model, pack_model_files, unpack_model_files

    src = tmp_path / "user/models"
    src.mkdir(parents=True)
    (src / "travel_layers.py").write_text("from torch import nn\nclass Mix(nn.Linear):\n    pass\n")
    (src / "net.py").write_text("from torch import nn\nfrom travel_layers import Mix\n"
                                "class Net(nn.Module):\n    def __init__(self, vocab_size, seq_len):\n"
                                "        super().__init__()\n        self.emb = nn.Embedding(vocab_size, 8)\n"
                                "        self.mix = Mix(8, vocab_size)\n"
                                "    def forward(self, idx):\n        return self.mix(self.emb(idx))\n")
    (src / "notes.txt").write_text("not code")
    packed = pack_model_files(src / "net.py")
    assert packed["entry"] == "net.py" and sorted(packed["files"]) == ["net.py", "travel_layers.py"]
    shutil.rmtree(tmp_path / "user")  # the worker's machine has no such folder
    entry = unpack_model_files(packed)
    assert unpack_model_files(packed) == entry  # one folder per content, shared by a job's workers
    model = load_custom_model(entry, vocab_size=16, seq_len=4, class_name="Net")
    assert sum(p.numel() for p in model.parameters()) == 16 * 8 + 8 * 16 + 16
