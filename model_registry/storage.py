"""Storage primitives the registry needs, over fsspec: local paths, ``gs://`` and ``s3://``.

Two writes matter for correctness:

- ``create``: exclusive. It fails with ``FileExistsError`` when the object exists, and a
  reader never sees a partly written object. Locally: write a temporary file, fsync, then
  ``link()`` it into place (atomic, fails if the name exists). GCS: ``ifGenerationMatch=0``.
  S3: ``If-None-Match: *``. Both object stores make a single upload visible all at once.
- ``replace``: atomic overwrite (``os.replace`` locally, a single PUT on object stores).
- ``read_versioned`` / ``write_if``: compare-and-swap for read-modify-write of small documents
  (the aliases). The write succeeds only if the object is still the one read: GCS
  ``ifGenerationMatch=<generation>``, S3 ``If-Match: <ETag>`` (``If-None-Match: *`` when it was
  absent); locally the caller holds ``lock`` and the write is a ``replace``. A lost race raises
  ``ConcurrentUpdate`` and nothing is written.

Listings are never cached (``use_listings_cache=False``): fsspec shares one filesystem object
per set of options in a process, and a listing cached by one thread while another publishes
would hide the new files from readers.

Credentials and endpoints come from each backend's usual environment (GKE Workload Identity or
``GOOGLE_APPLICATION_CREDENTIALS`` and ``STORAGE_EMULATOR_HOST`` for GCS; the AWS variables,
including ``AWS_ENDPOINT_URL_S3``, for S3), so nothing here is specific to one deployment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from model_registry.errors import StorageError

_REMOTE_DEFAULTS: dict[str, Any] = {"use_listings_cache": False}


class ConcurrentUpdate(Exception):
    """The object changed between ``read_versioned`` and ``write_if``; nothing was written."""


_VERSIONED_READ_ATTEMPTS = 8
"""Reads of an object that keeps changing before ``read_versioned`` gives up, each after a
jittered pause: a burst of writers (aliases set at once) passes, as ``set_alias``'s retries do."""


class Storage:
    """A registry root: ``uri`` plus relative paths such as ``my-model/v3/metadata.json``."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        if not uri:
            raise StorageError("registry URI is empty")
        self.uri = uri.rstrip("/") or uri
        options = dict(storage_options or {})
        if "://" in self.uri and not self.uri.startswith("file://"):
            options = {**_REMOTE_DEFAULTS, **options}
        try:
            fs, root = fsspec.core.url_to_fs(self.uri, **options)
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

    def read_versioned(self, rel: str) -> tuple[bytes | None, str | None]:
        """The object at ``rel`` (None when absent) and a token naming that exact content, for
        ``write_if``: the GCS generation or the S3 ETag, read before and after the data so the
        two belong together (a generation never repeats; equal ETags mean equal bytes)."""
        if self.is_local:
            try:
                return self.read_bytes(rel), None
            except FileNotFoundError:
                return None, None
        for attempt in range(_VERSIONED_READ_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0, 0.02 * 2**attempt))  # noqa: S311 (jitter)
            before = self._token(rel)
            if before is None:
                return None, None
            try:
                data = self.read_bytes(rel)
            except FileNotFoundError:
                continue
            if self._token(rel) == before:
                return data, before
        raise StorageError(f"{self.url(rel)} kept changing while it was read; try again")

    def write_if(self, rel: str, data: bytes, token: str | None) -> None:
        """Write ``data`` at ``rel`` only if it is still what ``read_versioned`` returned with
        ``token`` (absent when None); ``ConcurrentUpdate`` otherwise."""
        if self.is_local:
            self.replace(rel, data)
            return
        target = self.path(rel)
        try:
            if token is None:
                self.fs.pipe_file(target, data, mode="create")
            elif self.fs.protocol[0] in ("gs", "gcs"):
                self._gcs_write_if(target, data, token)
            else:
                self._s3_write_if(target, data, token)
        except FileExistsError as error:
            raise ConcurrentUpdate(self.url(rel)) from error
        except OSError as error:
            if _precondition_failed(error):
                raise ConcurrentUpdate(self.url(rel)) from error
            raise
        finally:
            self.fs.invalidate_cache(target)

    def _token(self, rel: str) -> str | None:
        try:
            info = self.fs.info(self.path(rel))
        except FileNotFoundError:
            return None
        token = info.get("generation") or info.get("ETag")
        if not token:
            raise StorageError(f"{self.uri} reports no generation or ETag for {rel}")
        return str(token)

    def _gcs_write_if(self, target: str, data: bytes, generation: str) -> None:
        # The JSON API's media upload with the ifGenerationMatch query parameter: "request
        # proceeds if the generation of the target resource matches", else 412 (Cloud Storage's
        # "Request preconditions" page); gcsfs raises FileExistsError for a 412.
        bucket, key, _ = self.fs.split_path(target)
        self.fs.call(
            "POST",
            f"{self.fs._location}/upload/storage/v1/b/{bucket}/o",
            uploadType="media",
            name=key,
            ifGenerationMatch=generation,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def _s3_write_if(self, target: str, data: bytes, etag: str) -> None:
        bucket, key, _ = self.fs.split_path(target)
        self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=etag)

    def remove(self, rel: str) -> None:
        """Delete the object at ``rel`` if present."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(rel))

    @contextlib.contextmanager
    def lock(self, rel: str) -> Iterator[None]:
        """Serialize read-modify-write of ``rel`` between processes (local registries only).

        Object stores have no lock: there ``write_if``'s precondition detects a concurrent writer.
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


def _precondition_failed(error: BaseException) -> bool:
    """True when S3 refused a conditional write because the object changed: 412
    ``PreconditionFailed``, or 409 ``ConditionalRequestConflict`` when another conditional write
    to the key was in progress ("fetch the object's ETag and retry", the S3 API reference for
    PutObject's If-Match). s3fs reports both as an ``OSError`` caused by botocore's error."""
    seen: BaseException | None = error
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = response.get("Error", {}).get("Code")
            return bool(
                code in {"PreconditionFailed", "ConditionalRequestConflict"} or status in {409, 412}
            )
        seen = seen.__cause__
    return False


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
