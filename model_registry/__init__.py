"""The model registry shared by the trainer and the model server."""

from model_registry.errors import (
    AliasConflict,
    IntegrityError,
    InvalidMetadata,
    InvalidName,
    NotFound,
    RegistryError,
    StorageError,
    UntrustedArtifact,
    VersionConflict,
)
from model_registry.metadata import ModelMetadata
from model_registry.registry import LATEST, Registry, VersionStatus

__all__ = [
    "LATEST",
    "AliasConflict",
    "IntegrityError",
    "InvalidMetadata",
    "InvalidName",
    "ModelMetadata",
    "NotFound",
    "Registry",
    "RegistryError",
    "StorageError",
    "UntrustedArtifact",
    "VersionConflict",
    "VersionStatus",
]
