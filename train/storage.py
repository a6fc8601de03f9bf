"""Where training and sweeps keep what every node must reach: one storage setting.

    --storage URI             on python -m train.run, python -m tune.hw_scaling, python -m actors.main
    RAY_AUTORESEARCH_STORAGE  the same, for every node (cluster.yaml exports it)

URI is a local path, a folder every node mounts, `s3://BUCKET/PREFIX` or
`gs://BUCKET/PREFIX`: anything pyarrow's filesystems open (`FileSystem.from_uri`),
which is what Ray Train and Tune use for `RunConfig(storage_path)` themselves.
Credentials come from the usual environment of each node (AWS_* variables or an
instance role, Google's application-default credentials or the VM's service
account); they are never part of the URI, so they never reach a log, a
results.json or a Ray runtime_env. Query parameters pyarrow understands (e.g.
`?endpoint_override=HOST:PORT&scheme=http` for an S3-compatible server) pass through.

Unset, training keeps its checkpoints beside its results on this machine, as
on a laptop. That cannot work on a cluster of several nodes (a worker's first
checkpoint fails in Ray's StorageContext: "A local path on the head node is not
accessible by worker nodes"), so `check_every_node_reaches` refuses it before
any worker, and so any GPU, is requested.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

STORAGE_ENV = "RAY_AUTORESEARCH_STORAGE"

# Schemes pyarrow opens. file:// is a local path.
REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
HOW_TO_SET = (f"set --storage s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (or a folder every node mounts), "
              f"or {STORAGE_ENV} on every node")


class StorageError(ValueError):
    """The storage setting is malformed, or cannot work on this cluster; the message says what to set."""


@dataclass(frozen=True)
class Storage:
    """A storage location: `uri` is an absolute local path or a URI with its scheme."""

    uri: str

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri

    @property
    def display(self) -> str:
        """The URI to show in logs and errors: without its query parameters."""
        return self.uri.split("?", 1)[0]

    def join(self, *parts: str) -> "Storage":
        """A location under this one (query parameters kept at the end)."""
        if self.is_local:
            return Storage(str(Path(self.uri, *parts)))
        base, sep, query = self.uri.partition("?")
        return Storage("/".join([base.rstrip("/"), *(p.strip("/") for p in parts)]) + sep + query)

    def filesystem(self):
        """(pyarrow filesystem, path on it), as Ray resolves a storage_path."""
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(self.uri)

    def uri_of(self, fs_path: str) -> str:
        """The URI of `fs_path`, a path on this location's filesystem (what Ray's
        Checkpoint.path holds: the bucket and key, without the scheme)."""
        if self.is_local:
            return fs_path
        _, root = self.filesystem()
        rel = os.path.relpath(fs_path, root) if fs_path != root else ""
        if rel.startswith(".."):
            raise ValueError(f"{fs_path} is not under {self.display}")
        return self.join(rel).uri if rel else self.uri


def parse_storage(value: str | os.PathLike) -> Storage:
    """A storage setting as the user wrote it, checked without touching the network."""
    text = str(value).strip()
    if not text:
        raise StorageError("storage: empty; " + HOW_TO_SET)
    if text.startswith("file://"):
        text = urlsplit(text).path
    if "://" not in text:
        return Storage(str(Path(text).expanduser().resolve()))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    shown = text.split("?", 1)[0]
    if scheme not in REMOTE_SCHEMES:
        raise StorageError(f"storage {shown}: unknown scheme {scheme!r}; use s3://, gs:// or a local path")
    if "@" in parts.netloc:
        # pyarrow would take user:secret@bucket; then it would be in every log line that shows the URI.
        raise StorageError(f"storage {scheme}://...@{parts.netloc.rsplit('@', 1)[1]}: credentials do not belong "
                           "in the URI; give them through the environment (e.g. AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY, or the node's service account)")
    if not parts.netloc:
        raise StorageError(f"storage {shown}: no bucket; e.g. {scheme}://BUCKET/PREFIX")
    return Storage(text)


def storage_field(value: str | None) -> str | None:
    """A storage setting as a config field holds it (normalised), for pydantic
    validators: ValueError with the reason, the caller's error naming the field."""
    try:
        return None if value is None else parse_storage(value).uri
    except StorageError as exc:
        raise ValueError(str(exc).removeprefix("storage ").removeprefix("storage: ")) from None


def resolve_storage(value: "str | os.PathLike | Storage | None" = None) -> Storage | None:
    """The storage to use: `value` (a --storage flag), else $RAY_AUTORESEARCH_STORAGE,
    else None (beside the results on this machine)."""
    if isinstance(value, Storage):
        return value
    if value is None or str(value) == "":
        value = os.environ.get(STORAGE_ENV) or None
    return None if value is None else parse_storage(value)


def run_key(out_dir: Path) -> str:
    """A run's folder in shared storage: readable, and the same for the same output
    folder, so that running a spec again into the same folder finds its checkpoints
    (Ray Train resumes a run whose name and storage path it has seen) while two runs
    whose folders share a name do not meet."""
    out = Path(out_dir).resolve()
    digest = hashlib.sha1(str(out).encode()).hexdigest()[:8]
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{out.parent.name}-{out.name}").strip("-") or "run"
    return f"{label}-{digest}"


# -- a cluster whose nodes must all reach the storage ---------------------------------------


def check_every_node_reaches(storage: Storage | None, local_default: Path, workers_need_gpu: bool) -> None:
    """Refuse, before any worker is requested, a storage the training workers
    cannot reach. Call it once Ray is up.

    The workers may run on another node when the cluster has several nodes, or
    when they need GPUs and this node has none (the autoscaler will start one).
    Then the default (a folder on this node) is refused; a local path that was set
    on purpose must be a mount every live node sees (checked with a marker file);
    s3:// and gs:// are reachable by construction (credentials are each node's)."""
    import ray

    if storage is not None and not storage.is_local:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    here = ray.get_runtime_context().get_node_id()
    gpus_here = next((n["Resources"].get("GPU", 0) for n in nodes if n["NodeID"] == here), 0)
    if len(nodes) > 1:
        why = f"this Ray cluster has {len(nodes)} nodes"
    elif workers_need_gpu and gpus_here == 0:
        why = "the training workers need GPUs, which this node does not have, so they run on other nodes"
    else:
        return
    if storage is None:
        raise StorageError(f"{why}, and checkpoints would go to {local_default} on this node only, which the "
                           f"others cannot reach: {HOW_TO_SET}")
    others = [n for n in nodes if n["NodeID"] != here]
    blind = _nodes_that_cannot_see(Path(storage.uri), others)
    if blind:
        raise StorageError(f"{why}, and the storage {storage.uri} is a folder that node(s) {', '.join(blind)} "
                           f"cannot see: {HOW_TO_SET}")


def _marker_exists(path: str) -> bool:
    return os.path.exists(path)


def _nodes_that_cannot_see(folder: Path, nodes: list[dict], timeout_s: float = 60.0) -> list[str]:
    """The addresses of `nodes` on which a file just written in `folder` is absent."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not nodes:
        return []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / f".reachable-{uuid.uuid4().hex[:12]}"
        marker.write_text("written by ray-autoresearch to check that every node sees this folder\n")
    except OSError as exc:
        raise StorageError(f"storage {folder}: cannot write there: {exc.strerror or exc}") from None
    try:
        probe = ray.remote(_marker_exists)
        refs = {n["NodeManagerAddress"] + f" ({n['NodeID'][:8]})": probe.options(
                    num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                ).remote(str(marker)) for n in nodes}
        try:
            seen = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout_s)))
        except ray.exceptions.GetTimeoutError:
            raise StorageError(f"storage {folder}: the other nodes did not answer within {timeout_s:.0f}s, so "
                               f"whether they see this folder is unknown: {HOW_TO_SET}") from None
        return [name for name, ok in seen.items() if not ok]
    finally:
        marker.unlink(missing_ok=True)


# -- moving files to and from it --------------------------------------------------------------


def exists(location: Storage) -> bool:
    import pyarrow.fs

    fs, path = location.filesystem()
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_bytes(location: Storage) -> bytes | None:
    """The object's bytes, or None when there is none."""
    import pyarrow.fs

    fs, path = location.filesystem()
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(location: Storage, data: bytes) -> None:
    """Write one object whole: an object store's PUT replaces it at once; on a
    (shared) folder, a temporary file renamed over it does the same."""
    import pyarrow.fs

    fs, path = location.filesystem()
    parent = path.rsplit("/", 1)[0]
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        fs.create_dir(parent, recursive=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def copy_down(location: Storage, dest: Path) -> bool:
    """Copy a folder from the storage into `dest` (merged into what is there).
    False when the storage has no such folder."""
    import pyarrow.fs

    fs, path = location.filesystem()
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return False
    dest.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(path, str(dest), source_filesystem=fs,
                          destination_filesystem=pyarrow.fs.LocalFileSystem())
    return True


@contextlib.contextmanager
def local_folder(location: str) -> Iterator[Path]:
    """A checkpoint (or any folder) as a local folder: itself when it is local, else
    a temporary copy that is removed afterwards."""
    storage = parse_storage(location)
    if storage.is_local:
        yield Path(storage.uri)
        return
    with tempfile.TemporaryDirectory(prefix="checkpoint-") as tmp:
        if not copy_down(storage, Path(tmp)):
            raise FileNotFoundError(f"{storage.display}: no such folder in the storage")
        yield Path(tmp)
