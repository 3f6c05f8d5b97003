"""The model registry: immutable, checksummed versions and movable aliases.

Layout (DESIGN.md, "Registry layout")::

    {root}/{model}/v{N}/.claim          written first: reserves N for one publisher
    {root}/{model}/v{N}/model.skops     the artifact
    {root}/{model}/v{N}/metadata.json   written last: its presence publishes the version
    {root}/{model}/aliases.json         {"production": "v3", ...}

Publishing claims ``v{max+1}`` with an exclusive create of ``.claim``; a publisher that loses the
race re-reads the listing and claims the next number, so two publishers never share a version and
nothing is overwritten. A crash leaves at most a claim and an artifact without ``metadata.json``:
readers skip it, and the number is never reused. A version whose artifact size or sha256 does not
match its metadata does not exist for readers either.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, ParamSpec, TypeVar

import orjson
from pydantic import ValidationError

from model_registry import artifacts
from model_registry.errors import (
    AliasConflict,
    IntegrityError,
    InvalidMetadata,
    InvalidName,
    NotFound,
    RegistryError,
    StorageError,
    VersionConflict,
)
from model_registry.metadata import (
    ARTIFACT_FILES,
    MODEL_NAME_RE,
    VERSION_RE,
    ArtifactFormat,
    ModelMetadata,
    version_number,
)
from model_registry.storage import ConcurrentUpdate, Storage

METADATA_FILE = "metadata.json"
ALIASES_FILE = "aliases.json"
CLAIM_FILE = ".claim"
LATEST = "latest"
ALIAS_RE = r"^[a-z][a-z0-9-]{0,62}$"
ALIAS_ATTEMPTS = 8

State = Literal["published", "incomplete", "corrupt"]

P = ParamSpec("P")
R = TypeVar("R")

_BACKEND_MODULES = ("gcsfs", "s3fs", "botocore", "aiobotocore", "aiohttp", "google", "fsspec")


def _storage_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Report backend failures (network, permissions, missing bucket) as ``StorageError``."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except RegistryError:
            raise
        except Exception as error:
            backend = type(error).__module__.split(".")[0] in _BACKEND_MODULES
            if not (isinstance(error, OSError) or backend):
                raise
            raise StorageError(
                f"registry storage failed: {type(error).__name__}: {error}"
            ) from error

    return wrapper


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a DNS-1123 label, else raise ``InvalidName``."""
    if not MODEL_NAME_RE.match(name):
        raise InvalidName(
            f"invalid model name {name!r}: use lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit, at most 63 characters "
            "(it becomes a Kubernetes name)"
        )
    return name


def check_alias_name(alias: str) -> str:
    """Return ``alias`` if it may name an alias, else raise ``InvalidName``."""
    import re

    if alias == LATEST or VERSION_RE.match(alias) or not re.match(ALIAS_RE, alias):
        raise InvalidName(
            f"invalid alias {alias!r}: use lowercase letters, digits and hyphens, starting with "
            f"a letter; {LATEST!r} and version names like 'v3' are reserved"
        )
    return alias


def normalize_version(ref: str) -> str | None:
    """``"3"`` or ``"v3"`` -> ``"v3"``; anything else -> None."""
    candidate = f"v{ref}" if ref.isdigit() else ref
    return candidate if VERSION_RE.match(candidate) else None


@dataclass(frozen=True)
class VersionStatus:
    """What a reader finds at ``{model}/v{N}/``."""

    model_name: str
    version: str
    state: State
    problem: str | None = None
    metadata: ModelMetadata | None = None

    @property
    def ok(self) -> bool:
        return self.state == "published"


class Registry:
    """Read and write models under one registry URI (local path, ``gs://`` or ``s3://``)."""

    def __init__(
        self,
        uri: str,
        *,
        storage_options: dict[str, Any] | None = None,
        max_claim_attempts: int = 100,
    ) -> None:
        self.storage = Storage(uri, storage_options)
        self.max_claim_attempts = max_claim_attempts

    @property
    def uri(self) -> str:
        return self.storage.uri

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"

    def version_uri(self, model_name: str, version: str) -> str:
        """The URI of a version's directory (what KServe's ``storageUri`` points at)."""
        return self.storage.url(f"{model_name}/{version}")

    # -- reading -------------------------------------------------------------------------

    @_storage_errors
    def list_models(self) -> list[str]:
        """Names of models that have at least one version directory."""
        names = set()
        for rel in self.storage.find(""):
            parts = rel.split("/")
            if len(parts) >= 3 and MODEL_NAME_RE.match(parts[0]) and VERSION_RE.match(parts[1]):
                names.add(parts[0])
        return sorted(names)

    @_storage_errors
    def statuses(self, model_name: str, *, verify_checksums: bool = False) -> list[VersionStatus]:
        """Every version directory of a model, oldest first, with what a reader would make of it.

        Without ``verify_checksums`` the artifact's presence and size are checked (one listing,
        cheap on object stores); with it, the artifact is read and its sha256 compared.
        """
        check_model_name(model_name)
        files = self._version_files(model_name)
        return [
            self._status(model_name, version, files[version], verify_checksums)
            for version in sorted(files, key=version_number)
        ]

    def list_versions(self, model_name: str) -> list[ModelMetadata]:
        """Published versions, oldest first."""
        return [s.metadata for s in self.statuses(model_name) if s.ok and s.metadata]

    @_storage_errors
    def resolve(self, model_name: str, ref: str = LATEST) -> str:
        """Turn ``latest``, ``v3``, ``3`` or an alias into a published version name."""
        check_model_name(model_name)
        if ref == LATEST:
            return self.get(model_name, LATEST).version
        version = normalize_version(ref)
        if version:
            return version
        check_alias_name(ref)
        aliases = self.aliases(model_name)
        if ref not in aliases:
            known = ", ".join(f"{k}={v}" for k, v in sorted(aliases.items())) or "none"
            raise NotFound(f"model {model_name!r} has no alias {ref!r} (aliases: {known})")
        return aliases[ref]

    @_storage_errors
    def get(self, model_name: str, ref: str = LATEST) -> ModelMetadata:
        """Metadata of a published version (artifact present with the recorded size)."""
        if ref == LATEST:  # resolving "latest" already read and checked every version
            published = self.list_versions(model_name)
            if not published:
                raise NotFound(f"model {model_name!r} has no published versions in {self.uri}")
            return published[-1]
        version = self.resolve(model_name, ref)
        files = self._version_files(model_name).get(version)
        if files is None:
            raise NotFound(f"model {model_name!r} has no version {version} in {self.uri}")
        status = self._status(model_name, version, files, verify_checksum=False)
        return self._published(status)

    @_storage_errors
    def read_artifact(self, model_name: str, ref: str = LATEST) -> tuple[ModelMetadata, bytes]:
        """Metadata and artifact bytes of a version, after checking the artifact's sha256."""
        metadata = self.get(model_name, ref)
        data = self.storage.read_bytes(f"{model_name}/{metadata.version}/{metadata.artifact.file}")
        _check_artifact(metadata, data)
        return metadata, data

    @_storage_errors
    def read_onnx(self, metadata: ModelMetadata) -> bytes | None:
        """The version's ``model.onnx`` after checking its sha256; None when it has none."""
        return _read_onnx(self.storage, f"{metadata.model_name}/{metadata.version}/", metadata)

    def load_model(
        self, model_name: str, ref: str = LATEST, *, allow_pickle: bool = False
    ) -> tuple[ModelMetadata, Any]:
        """Metadata and the deserialized model, checksum-verified and type-checked."""
        metadata, data = self.read_artifact(model_name, ref)
        model = artifacts.load_model(data, metadata.artifact.format, allow_pickle=allow_pickle)
        return metadata, model

    @_storage_errors
    def verify(self, model_name: str, ref: str | None = None) -> list[VersionStatus]:
        """Full check (sha256 included) of one version, or of every version directory."""
        if ref is None:
            return self.statuses(model_name, verify_checksums=True)
        version = self.resolve(model_name, ref)
        files = self._version_files(model_name).get(version)
        if files is None:
            raise NotFound(f"model {model_name!r} has no version {version} in {self.uri}")
        return [self._status(model_name, version, files, verify_checksum=True)]

    @_storage_errors
    def aliases(self, model_name: str) -> dict[str, str]:
        """The model's aliases, ``{}`` when it has none."""
        check_model_name(model_name)
        try:
            raw = self.storage.read_bytes(f"{model_name}/{ALIASES_FILE}")
        except FileNotFoundError:
            return {}
        return _parse_aliases(model_name, raw)

    # -- writing -------------------------------------------------------------------------

    @_storage_errors
    def publish(
        self,
        model_name: str,
        artifact: bytes,
        metadata: Mapping[str, Any],
        *,
        artifact_format: ArtifactFormat = "skops",
        onnx: bytes | None = None,
    ) -> ModelMetadata:
        """Register ``artifact`` as the next version of ``model_name`` and return its metadata.

        ``metadata`` holds everything but ``model_name``, ``version``, ``created_at`` and
        ``artifact``, which the registry fills in. It is validated before anything is written.
        ``onnx``, the compiled model, is written beside the artifact (before ``metadata.json``)
        and must match ``metadata["onnx"]``'s sha256 and size.
        """
        check_model_name(model_name)
        file_name = ARTIFACT_FILES[artifact_format]
        document: dict[str, Any] = {
            **metadata,
            "model_name": model_name,
            "version": "v1",
            "created_at": datetime.now(UTC),
            "artifact": {
                "file": file_name,
                "format": artifact_format,
                "sha256": sha256_hex(artifact),
                "size_bytes": len(artifact),
            },
        }
        checked = _validate(document, f"metadata for {model_name}")
        if (onnx is None) != (checked.onnx is None or checked.onnx.file is None):
            raise InvalidMetadata(
                f"metadata for {model_name}: the onnx bytes and metadata's onnx.file must come "
                "together"
            )
        if onnx is not None:
            assert checked.onnx is not None
            if (checked.onnx.sha256, checked.onnx.size_bytes) != (sha256_hex(onnx), len(onnx)):
                raise InvalidMetadata(f"metadata for {model_name}: onnx sha256 or size is wrong")

        version = self._claim(model_name)
        prefix = f"{model_name}/{version}"
        try:
            self.storage.create(f"{prefix}/{file_name}", artifact)
            if onnx is not None:
                assert checked.onnx is not None  # checked above: metadata names its file
                self.storage.create(f"{prefix}/{checked.onnx.file}", onnx)
            document.update(version=version, created_at=datetime.now(UTC))
            final = _validate(document, f"metadata for {model_name} {version}")
            self.storage.create(f"{prefix}/{METADATA_FILE}", _dump_metadata(final))
        except FileExistsError as error:
            raise VersionConflict(
                f"{self.storage.url(prefix)} was written by another publisher after this one "
                "claimed it; nothing was overwritten"
            ) from error
        return final

    @_storage_errors
    def set_alias(self, model_name: str, alias: str, ref: str) -> str:
        """Point ``alias`` at a verified, published version; returns that version."""
        check_alias_name(alias)
        version = self.resolve(model_name, ref)
        status = self.verify(model_name, version)[0]
        self._published(status)

        def point(aliases: dict[str, str]) -> str:
            aliases[alias] = version
            return version

        return self._update_aliases(model_name, point)

    @_storage_errors
    def delete_alias(self, model_name: str, alias: str) -> str:
        """Remove ``alias``; returns the version it pointed at."""
        check_alias_name(alias)

        def drop(aliases: dict[str, str]) -> str:
            if alias not in aliases:
                raise NotFound(f"model {model_name!r} has no alias {alias!r}")
            return aliases.pop(alias)

        return self._update_aliases(model_name, drop)

    # -- internals -----------------------------------------------------------------------

    def _update_aliases(self, model_name: str, change: Callable[[dict[str, str]], str]) -> str:
        """Apply ``change`` to the aliases as compare-and-swap: read them with their generation
        (ETag), change them, write only if nobody wrote in between. A writer that loses the race
        applies its change again on the fresh aliases, so no update is lost; after
        ``ALIAS_ATTEMPTS`` lost races it fails with ``AliasConflict`` and writes nothing."""
        rel = f"{model_name}/{ALIASES_FILE}"
        for attempt in range(ALIAS_ATTEMPTS):
            with self.storage.lock(rel):
                raw, token = self.storage.read_versioned(rel)
                aliases = {} if raw is None else _parse_aliases(model_name, raw)
                result = change(aliases)
                try:
                    self.storage.write_if(rel, _dump_json(aliases), token)
                except ConcurrentUpdate:
                    time.sleep(random.uniform(0, 0.05 * 2**attempt))  # noqa: S311 (jitter)
                    continue
            return result
        raise AliasConflict(
            f"{self.storage.url(rel)} was changed by other writers {ALIAS_ATTEMPTS} times while "
            "this update was applied; nothing was written by this one, try again"
        )

    def _version_files(self, model_name: str) -> dict[str, dict[str, int]]:
        """``{"v3": {"metadata.json": size, ...}}`` from one listing of the model's prefix."""
        grouped: dict[str, dict[str, int]] = {}
        for rel, size in self.storage.find(model_name).items():
            parts = rel.split("/")
            if len(parts) == 2 and VERSION_RE.match(parts[0]):
                grouped.setdefault(parts[0], {})[parts[1]] = size
        return grouped

    def _claim(self, model_name: str) -> str:
        claim = _dump_json(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "claimed_at": datetime.now(UTC).isoformat(),
            }
        )
        for _ in range(self.max_claim_attempts):
            taken = self._version_files(model_name)
            number = max((version_number(v) for v in taken), default=0) + 1
            try:
                self.storage.create(f"{model_name}/v{number}/{CLAIM_FILE}", claim)
            except FileExistsError:
                continue  # another publisher took it: re-list and take the next number
            return f"v{number}"
        raise VersionConflict(
            f"could not claim a new version of {model_name!r} after "
            f"{self.max_claim_attempts} attempts: too many concurrent publishers"
        )

    def _status(
        self, model_name: str, version: str, files: Mapping[str, int], verify_checksum: bool
    ) -> VersionStatus:
        def bad(state: State, problem: str, meta: ModelMetadata | None = None) -> VersionStatus:
            return VersionStatus(model_name, version, state, problem, meta)

        if METADATA_FILE not in files:
            return bad("incomplete", "no metadata.json: publishing did not finish")
        try:
            raw = self.storage.read_bytes(f"{model_name}/{version}/{METADATA_FILE}")
            metadata = _validate(orjson.loads(raw), f"{model_name}/{version}/{METADATA_FILE}")
        except (orjson.JSONDecodeError, InvalidMetadata) as error:
            return bad("corrupt", f"invalid metadata.json: {error}")
        if metadata.model_name != model_name or metadata.version != version:
            return bad(
                "corrupt",
                f"metadata.json names {metadata.model_name} {metadata.version}, "
                f"but sits at {model_name}/{version}",
                metadata,
            )
        artifact = metadata.artifact
        if artifact.file not in files:
            return bad("corrupt", f"artifact {artifact.file} is missing", metadata)
        if files[artifact.file] != artifact.size_bytes:
            return bad(
                "corrupt",
                f"artifact {artifact.file} has {files[artifact.file]} bytes, "
                f"metadata.json records {artifact.size_bytes}",
                metadata,
            )
        onnx = metadata.onnx
        if onnx is not None and onnx.file is not None and files.get(onnx.file) != onnx.size_bytes:
            return bad(
                "corrupt",
                f"{onnx.file} has {files.get(onnx.file, 'no')} bytes, metadata.json records "
                f"{onnx.size_bytes}",
                metadata,
            )
        if verify_checksum:
            data = self.storage.read_bytes(f"{model_name}/{version}/{artifact.file}")
            try:
                _check_artifact(metadata, data)
                if onnx is not None and onnx.file is not None:
                    compiled = self.storage.read_bytes(f"{model_name}/{version}/{onnx.file}")
                    check_onnx(metadata, compiled)
            except IntegrityError as error:
                return bad("corrupt", str(error), metadata)
        return VersionStatus(model_name, version, "published", None, metadata)

    def _published(self, status: VersionStatus) -> ModelMetadata:
        if status.ok and status.metadata is not None:
            return status.metadata
        raise NotFound(
            f"model {status.model_name!r} version {status.version} is not available "
            f"({status.state}: {status.problem})"
        )


@_storage_errors
def read_version_dir(uri: str) -> tuple[ModelMetadata, bytes]:
    """Metadata and verified artifact bytes from one version's directory.

    This is what KServe's storage initializer copies to ``/mnt/models`` from a ``storageUri`` that
    points at ``{registry}/{model}/v{N}``; a local path, ``gs://`` or ``s3://`` URI all work.
    """
    storage = Storage(uri)
    try:
        raw = storage.read_bytes(METADATA_FILE)
    except FileNotFoundError as error:
        raise NotFound(f"no {METADATA_FILE} in {uri}: not a published model version") from error
    try:
        metadata = _validate(orjson.loads(raw), storage.url(METADATA_FILE))
    except orjson.JSONDecodeError as error:
        raise InvalidMetadata(f"{storage.url(METADATA_FILE)} is not valid JSON: {error}") from error
    try:
        data = storage.read_bytes(metadata.artifact.file)
    except FileNotFoundError as error:
        raise NotFound(f"{storage.url(metadata.artifact.file)} is missing") from error
    _check_artifact(metadata, data)
    return metadata, data


def read_version_dir_onnx(uri: str, metadata: ModelMetadata) -> bytes | None:
    """The verified ``model.onnx`` of the version directory at ``uri``; None when it has none."""
    return _read_onnx(Storage(uri), "", metadata)


def _read_onnx(storage: Storage, prefix: str, metadata: ModelMetadata) -> bytes | None:
    """``{prefix}model.onnx`` after checking its sha256; None when the version has none."""
    onnx = metadata.onnx
    if onnx is None or onnx.file is None:
        return None
    try:
        data = storage.read_bytes(prefix + onnx.file)
    except FileNotFoundError as error:
        raise NotFound(f"{storage.url(prefix + onnx.file)} is missing") from error
    check_onnx(metadata, data)
    return data


def _parse_aliases(model_name: str, raw: bytes) -> dict[str, str]:
    try:
        aliases = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidMetadata(f"{model_name}/{ALIASES_FILE} is not valid JSON: {error}") from error
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        raise InvalidMetadata(f"{model_name}/{ALIASES_FILE} must map alias names to versions")
    return dict(aliases)


def _check_artifact(metadata: ModelMetadata, data: bytes) -> None:
    digest = sha256_hex(data)
    if digest != metadata.artifact.sha256:
        raise IntegrityError(
            f"{metadata.model_name} {metadata.version}: {metadata.artifact.file} has sha256 "
            f"{digest}, metadata.json records {metadata.artifact.sha256}"
        )


def check_onnx(metadata: ModelMetadata, data: bytes) -> None:
    """Raise ``IntegrityError`` unless ``data`` is the ``model.onnx`` metadata describes."""
    onnx = metadata.onnx
    digest = sha256_hex(data)
    if onnx is None or digest != onnx.sha256:
        raise IntegrityError(
            f"{metadata.model_name} {metadata.version}: {onnx.file if onnx else 'model.onnx'} "
            f"has sha256 {digest}, metadata.json records {onnx.sha256 if onnx else 'none'}"
        )


def _validate(document: Any, what: str) -> ModelMetadata:
    try:
        return ModelMetadata.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(root)'}: {item['msg']}"
            for item in error.errors()
        )
        raise InvalidMetadata(f"{what} is invalid: {problems}") from error


def _dump_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _dump_metadata(metadata: ModelMetadata) -> bytes:
    return orjson.dumps(metadata.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"
