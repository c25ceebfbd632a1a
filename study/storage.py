"""Study storage: a local folder or any URI pyarrow can open (``s3://``, ``gs://``, ...).

Ray Tune writes trials under ``<storage>/<study name>/``; we add, beside it, the
content-addressed classifier stage ``<storage>/classifiers/<key>/`` (shared by every
study with the same storage, so one f serves several studies) and the study manifest
``<storage>/<study name>/study.json`` that ``wsol evaluate`` reads.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs


def uri(filesystem: pafs.FileSystem | None, path: str) -> str:
    """A path on ``filesystem`` as a location :func:`open_storage` opens again: the path
    itself on the local filesystem, else ``<scheme>://path`` (GCS as ``gs://``, an fsspec
    filesystem by its protocol)."""
    if filesystem is None or isinstance(filesystem, pafs.LocalFileSystem):
        return str(path)
    scheme = {"gcs": "gs"}.get(filesystem.type_name, filesystem.type_name)
    if scheme == "py":  # an fsspec filesystem wrapped by pyarrow
        protocol = getattr(getattr(filesystem.handler, "fs", None), "protocol", None)
        if isinstance(protocol, tuple | list):
            protocol = protocol[0] if protocol else None
        scheme = protocol or scheme
    return f"{scheme}://{str(path).lstrip('/')}"


def open_storage(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for paths and URIs alike."""
    return "/".join([location.rstrip("/"), *parts])


def exists(location: str) -> bool:
    fs, path = open_storage(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_text(location: str) -> str:
    fs, path = open_storage(location)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


def write_text(location: str, text: str) -> None:
    """Write a small file; readers see the old or the new content, never half of it
    (a local rename; object stores replace an object whole)."""
    fs, path = open_storage(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    partial = f"{path}.partial-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(partial) as stream:
        stream.write(text.encode())
    fs.move(partial, path)


def write_json(location: str, payload: Any) -> None:
    write_text(location, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def upload_file(local: Path, location: str) -> None:
    """Copy ``local`` to ``location`` under a temporary name, then move it into place."""
    fs, path = open_storage(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    partial = f"{path}.partial-{uuid.uuid4().hex[:8]}"
    pafs.copy_files(str(local), partial, destination_filesystem=fs)
    fs.move(partial, path)


@contextmanager
def local_copy(location: str):
    """Yield a local path holding the file at ``location`` (itself when it is local)."""
    if "://" not in location:
        yield Path(location).expanduser().resolve()
        return
    directory = Path(tempfile.mkdtemp(prefix="wsol-"))
    try:
        target = directory / location.rsplit("/", 1)[-1]
        fs, path = open_storage(location)
        pafs.copy_files(path, str(target), source_filesystem=fs)
        yield target
    finally:
        shutil.rmtree(directory, ignore_errors=True)
