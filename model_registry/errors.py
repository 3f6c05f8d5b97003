"""Registry errors. Each names the model, version or file it is about."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every registry error."""


class InvalidName(RegistryError):
    """A model name, version or alias that the registry layout does not allow."""


class NotFound(RegistryError):
    """The model, version or alias does not exist (for readers)."""


class VersionConflict(RegistryError):
    """A version could not be claimed or written because another writer holds it."""


class AliasConflict(RegistryError):
    """An alias update lost every compare-and-swap race to other writers; nothing was written."""


class IntegrityError(RegistryError):
    """An artifact does not match the checksum or size its metadata records."""


class InvalidMetadata(RegistryError):
    """``metadata.json`` is missing required fields or cannot be parsed."""


class UntrustedArtifact(RegistryError):
    """An artifact holds types outside the trusted set, or uses a format not allowed here."""


class StorageError(RegistryError):
    """The storage backend (local disk, GCS, S3) failed or could not be reached."""
