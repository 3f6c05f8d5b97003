"""Storage primitives the registry needs, over fsspec: local paths, ``gs://`` and ``s3://``.

Two writes matter for correctness:

- ``create``: exclusive. It fails with ``FileExistsError`` when the object exists, and a
  reader never sees a partly written object. Locally: write a temporary file, fsync, then
  ``link()`` it into place (atomic, fails if the name exists). GCS: ``ifGenerationMatch=0``.
  S3: ``If-None-Match: *``. Both object stores make a single upload visible all at once.
- ``replace``: atomic overwrite (``os.replace`` locally, a single PUT on object stores).

Credentials and endpoints come from each backend's usual environment (GKE Workload Identity or
``GOOGLE_APPLICATION_CREDENTIALS`` and ``STORAGE_EMULATOR_HOST`` for GCS; the AWS variables,
including ``AWS_ENDPOINT_URL_S3``, for S3), so nothing here is specific to one deployment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from model_registry.errors import StorageError


class Storage:
    """A registry root: ``uri`` plus relative paths such as ``my-model/v3/metadata.json``."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        if not uri:
            raise StorageError("registry URI is empty")
        self.uri = uri.rstrip("/") or uri
        try:
            fs, root = fsspec.core.url_to_fs(self.uri, **(storage_options or {}))
        except (ImportError, ValueError) as error:
            raise StorageError(f"cannot open registry {uri!r}: {error}") from error
        self.fs: fsspec.AbstractFileSystem = fs
        self.root: str = root.rstrip("/")
        self.is_local = isinstance(fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    def path(self, rel: str) -> str:
        """The backend path of ``rel`` under the root."""
        return f"{self.root}/{rel}" if rel else self.root

    def url(self, rel: str) -> str:
        """The URI of ``rel``, as a user would type it."""
        return f"{self.uri}/{rel}" if rel else self.uri

    def read_bytes(self, rel: str) -> bytes:
        """Whole object; ``FileNotFoundError`` when absent."""
        data = self.fs.cat_file(self.path(rel))
        assert isinstance(data, bytes)
        return data

    def exists(self, rel: str) -> bool:
        """True when an object (or local file) is at ``rel``."""
        return bool(self.fs.exists(self.path(rel)))

    def find(self, rel: str) -> dict[str, int]:
        """Every object under ``rel`` (relative to it) with its size, read fresh."""
        base = self.path(rel)
        self.fs.invalidate_cache(base)
        if self.is_local and not Path(base).is_dir():
            return {}
        found = self.fs.find(base, detail=True)
        sizes: dict[str, int] = {}
        prefix = base.rstrip("/") + "/"
        for name, info in found.items():
            if info.get("type", "file") != "file":
                continue
            key = name[len(prefix) :] if name.startswith(prefix) else name
            sizes[key] = int(info.get("size") or 0)
        return sizes

    def create(self, rel: str, data: bytes) -> None:
        """Write ``data`` at ``rel`` only if nothing is there (``FileExistsError`` otherwise)."""
        target = self.path(rel)
        if self.is_local:
            _local_create(Path(target), data)
            return
        # The conditional write below is what makes this atomic on GCS and S3. Checking first
        # also protects stores that ignore the precondition (some S3-compatible servers and
        # the GCS emulator) against a writer that comes after, if not against an exact race.
        self.fs.invalidate_cache(target)
        if self.fs.exists(target):
            raise FileExistsError(target)
        self.fs.pipe_file(target, data, mode="create")
        self.fs.invalidate_cache(target)

    def replace(self, rel: str, data: bytes) -> None:
        """Write ``data`` at ``rel`` atomically, replacing what was there."""
        target = self.path(rel)
        if self.is_local:
            _local_replace(Path(target), data)
            return
        self.fs.pipe_file(target, data)
        self.fs.invalidate_cache(target)

    def remove(self, rel: str) -> None:
        """Delete the object at ``rel`` if present."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(rel))

    @contextlib.contextmanager
    def lock(self, rel: str) -> Iterator[None]:
        """Serialize read-modify-write of ``rel`` between processes (local registries only).

        Object stores have no cross-process lock here; their writes are still atomic, and the
        last writer of an alias wins.
        """
        if not self.is_local:
            yield
            return
        lock_path = Path(self.path(rel + ".lock"))
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _write_temp(target: Path, data: bytes) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    with temp.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return temp


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _local_create(target: Path, data: bytes) -> None:
    temp = _write_temp(target, data)
    try:
        os.link(temp, target)
    finally:
        temp.unlink()
    _fsync_dir(target.parent)


def _local_replace(target: Path, data: bytes) -> None:
    temp = _write_temp(target, data)
    try:
        temp.replace(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
