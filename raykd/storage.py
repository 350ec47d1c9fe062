"""Where a study keeps what: the study folder (a local or shared POSIX path) and, optionally, remote storage.

The study folder holds what needs a POSIX file system: the teacher stage's folder (its cache is read by
every trial), MLflow's sqlite store (unless MLFLOW_TRACKING_URI names a server), the results and the report. Ray
Tune's and Train's storage and the trials' checkpoints can instead live on any storage pyarrow understands
(``--storage s3://bucket/prefix``, ``gs://...``, ``file:///...``); on a cluster, one of the two must be shared by
every node (KubeRay: a ReadWriteMany volume for the study folder).
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

from raykd.config import ConfigError


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def study_root(output_dir: str | Path) -> Path:
    """The POSIX folder that holds studies: `output_dir`, or the path of a ``file://`` URI. Other URIs are refused,
    naming what needs a POSIX path and where the rest can go."""
    text = str(output_dir)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    if is_uri(text):
        raise ConfigError(
            f"--output-dir {text!r}: the study folder must be a (shared) POSIX path: the teacher cache is "
            "read by every trial and MLflow's local store is a sqlite file. Give a path there, and "
            "put Ray's storage and the trial checkpoints on remote storage with --storage URI"
        )
    return Path(text)


def join(location: str | Path, *parts: str) -> str:
    """`location` / parts, for paths and URIs alike."""
    return "/".join([str(location).rstrip("/"), *parts])


def check_storage(uri: str) -> None:
    """Refuse storage that cannot be written, before anything starts: a URI pyarrow cannot open, a missing bucket,
    wrong credentials. Writes, reads back and deletes one small object under `uri`."""
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
        filesystem.create_dir(path, recursive=True)
        probe = f"{path.rstrip('/')}/.raykd-write-check-{uuid.uuid4().hex}"
        with filesystem.open_output_stream(probe) as out:
            out.write(b"raykd")
        with filesystem.open_input_stream(probe) as back:
            if back.read() != b"raykd":
                raise OSError(f"{probe} read back differs from what was written")
        filesystem.delete_file(probe)
    except Exception as error:  # noqa: BLE001 - any failure means the same to the user
        where = (
            "the bucket exists and the credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; "
            "AWS_ENDPOINT_URL for an S3-compatible server) may write to it"
            if uri.startswith("s3://")
            else "it exists and may be written"
        )
        raise ConfigError(
            f"--storage {uri!r} cannot be written ({type(error).__name__}: {error}); check that {where}. Any URI "
            "pyarrow understands works (s3://, gs://, hdfs://, file://), with its credentials in the environment"
        ) from None


def delete_dir(location: str | Path) -> None:
    """Remove a folder (path or URI) if it exists."""
    from pyarrow import fs

    filesystem, path = (
        fs.FileSystem.from_uri(str(location)) if is_uri(location) else (fs.LocalFileSystem(), str(location))
    )
    filesystem.delete_dir_contents(path, missing_dir_ok=True)
    with contextlib.suppress(OSError):  # already gone
        filesystem.delete_dir(path)
