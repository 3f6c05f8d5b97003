"""Registry: immutable versions, concurrent publishers, crashes mid-publish, aliases, integrity."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from model_registry import (
    IntegrityError,
    InvalidMetadata,
    InvalidName,
    NotFound,
    Registry,
    VersionConflict,
)
from model_registry.registry import sha256_hex
from model_registry.storage import Storage
from tests.conftest import metadata_body


def publish(registry: Registry, name: str = "churn", payload: bytes = b"model-1") -> str:
    return registry.publish(name, payload, metadata_body()).version


def test_publish_allocates_increasing_versions_and_fills_metadata(registry: Registry) -> None:
    first = registry.publish("churn", b"one", metadata_body())
    second = registry.publish("churn", b"two", metadata_body())
    assert (first.version, second.version) == ("v1", "v2")
    assert second.model_name == "churn"
    assert second.artifact.sha256 == sha256_hex(b"two")
    assert second.artifact.size_bytes == 3
    assert second.created_at.tzinfo is not None
    assert [m.version for m in registry.list_versions("churn")] == ["v1", "v2"]
    assert registry.resolve("churn") == "v2"
    assert registry.resolve("churn", "1") == "v1"
    assert registry.read_artifact("churn", "v1")[1] == b"one"
    assert registry.list_models() == ["churn"]


def spy_on_creates(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``Storage.create`` writes from now on, in order."""
    written: list[str] = []
    original = Storage.create

    def spy(self: Storage, rel: str, data: bytes) -> None:
        written.append(rel)
        original(self, rel, data)

    monkeypatch.setattr(Storage, "create", spy)
    return written


def test_metadata_is_written_last(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    written = spy_on_creates(monkeypatch)
    publish(registry)
    assert written == ["churn/v1/.claim", "churn/v1/model.skops", "churn/v1/metadata.json"]


def test_versions_are_never_overwritten(registry: Registry) -> None:
    publish(registry, payload=b"original")
    with pytest.raises(FileExistsError):
        registry.storage.create("churn/v1/metadata.json", b"{}")
    with pytest.raises(FileExistsError):
        registry.storage.create("churn/v1/model.skops", b"evil")
    assert registry.read_artifact("churn", "v1")[1] == b"original"


def test_concurrent_publishers_in_threads_get_distinct_versions(registry: Registry) -> None:
    writers = 8
    barrier = threading.Barrier(writers)

    def one(i: int) -> tuple[str, bytes]:
        payload = f"model-from-writer-{i}".encode()
        barrier.wait()
        return registry.publish("race", payload, metadata_body()).version, payload

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(one, range(writers)))
    versions = sorted(v for v, _ in results)
    assert versions == [f"v{n}" for n in range(1, writers + 1)]
    for version, payload in results:  # each writer's bytes are exactly where it was told
        assert registry.read_artifact("race", version)[1] == payload


def _publish_in_child(root: str, index: int, start: Any, out: Any) -> None:
    start.wait()
    version = Registry(root).publish("race", f"p{index}".encode(), metadata_body()).version
    out.put((index, version))


def test_concurrent_publishers_in_processes_get_distinct_versions(tmp_path: Path) -> None:
    root = str(tmp_path / "registry")
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    children = [ctx.Process(target=_publish_in_child, args=(root, i, start, out)) for i in range(6)]
    for child in children:
        child.start()
    start.set()
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    results = dict(out.get(timeout=5) for _ in children)
    assert sorted(results.values(), key=lambda v: int(v[1:])) == [f"v{n}" for n in range(1, 7)]
    registry = Registry(root)
    for index, version in results.items():
        assert registry.read_artifact("race", version)[1] == f"p{index}".encode()


def test_loser_of_a_claim_race_takes_the_next_version(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(registry)
    original = Registry._version_files
    calls = {"n": 0}

    def stale_listing(self: Registry, model_name: str) -> dict[str, dict[str, int]]:
        calls["n"] += 1
        listing = original(self, model_name)
        if calls["n"] == 1:
            # Another publisher claims v2 between our listing and our claim.
            self.storage.create(f"{model_name}/v2/.claim", b"{}")
        return listing

    monkeypatch.setattr(Registry, "_version_files", stale_listing)
    assert publish(registry) == "v3"


def test_claims_give_up_after_bounded_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(str(tmp_path / "r"), max_claim_attempts=3)

    def always_taken(self: Storage, rel: str, data: bytes) -> None:
        raise FileExistsError(rel)

    monkeypatch.setattr(Storage, "create", always_taken)
    with pytest.raises(VersionConflict, match="after 3 attempts"):
        publish(registry)


def test_crash_after_artifact_leaves_nothing_readers_load(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(registry, payload=b"good")
    original = Storage.create

    def crash_on_metadata(self: Storage, rel: str, data: bytes) -> None:
        if rel.endswith("metadata.json"):
            raise KeyboardInterrupt  # the process dies here
        original(self, rel, data)

    monkeypatch.setattr(Storage, "create", crash_on_metadata)
    with pytest.raises(KeyboardInterrupt):
        publish(registry, payload=b"half")
    monkeypatch.undo()

    assert (Path(registry.storage.path("churn/v2/model.skops"))).exists()
    assert [m.version for m in registry.list_versions("churn")] == ["v1"]
    assert registry.resolve("churn") == "v1"
    with pytest.raises(NotFound, match="incomplete"):
        registry.get("churn", "v2")
    statuses = {s.version: s for s in registry.verify("churn")}
    assert statuses["v2"].state == "incomplete"
    # The number is burned, never reused: the next publish is v3.
    assert publish(registry, payload=b"next") == "v3"


def test_partial_temp_file_from_crashed_local_write_is_invisible(registry: Registry) -> None:
    publish(registry)
    version_dir = Path(registry.storage.path("churn/v1"))
    (version_dir / ".metadata.json.tmp-dead").write_bytes(b'{"trunc')
    assert registry.get("churn", "v1").version == "v1"
    assert registry.verify("churn")[0].ok


def test_tampered_artifact_is_refused_and_reported(registry: Registry) -> None:
    publish(registry, payload=b"12345678")
    path = Path(registry.storage.path("churn/v1/model.skops"))
    path.write_bytes(b"87654321")  # same size, other bytes
    with pytest.raises(IntegrityError, match="sha256"):
        registry.read_artifact("churn", "v1")
    [status] = registry.verify("churn", "v1")
    assert status.state == "corrupt"
    assert status.problem is not None
    assert "sha256" in status.problem


def test_truncated_artifact_does_not_exist_for_readers(registry: Registry) -> None:
    publish(registry, payload=b"12345678")
    Path(registry.storage.path("churn/v1/model.skops")).write_bytes(b"1234")
    assert registry.list_versions("churn") == []
    with pytest.raises(NotFound, match="4 bytes"):
        registry.get("churn", "v1")


def test_invalid_metadata_on_disk_is_corrupt(registry: Registry) -> None:
    publish(registry)
    Path(registry.storage.path("churn/v1/metadata.json")).write_bytes(b"{not json")
    [status] = registry.statuses("churn")
    assert status.state == "corrupt"
    assert registry.list_versions("churn") == []


def test_metadata_in_the_wrong_place_is_corrupt(registry: Registry) -> None:
    publish(registry)
    publish(registry)
    v1 = Path(registry.storage.path("churn/v1/metadata.json"))
    v2 = Path(registry.storage.path("churn/v2/metadata.json"))
    v2.write_bytes(v1.read_bytes())
    assert (
        registry.statuses("churn")[1].problem
        == "metadata.json names churn v1, but sits at churn/v2"
    )


def test_incomplete_metadata_is_refused_before_anything_is_written(registry: Registry) -> None:
    body = metadata_body()
    del body["provenance"]
    with pytest.raises(InvalidMetadata, match="provenance"):
        registry.publish("churn", b"x", body)
    assert registry.storage.find("") == {}


@pytest.mark.parametrize(
    "name", ["Churn", "churn_model", "-churn", "churn-", "", "a" * 64, "ch urn"]
)
def test_invalid_model_names_are_refused(registry: Registry, name: str) -> None:
    with pytest.raises(InvalidName):
        registry.publish(name, b"x", metadata_body())


def test_aliases_point_at_verified_versions(registry: Registry) -> None:
    publish(registry)
    publish(registry)
    assert registry.aliases("churn") == {}
    assert registry.set_alias("churn", "production", "v1") == "v1"
    assert registry.set_alias("churn", "candidate", "latest") == "v2"
    assert registry.aliases("churn") == {"candidate": "v2", "production": "v1"}
    assert registry.resolve("churn", "production") == "v1"
    assert registry.get("churn", "candidate").version == "v2"
    assert registry.delete_alias("churn", "candidate") == "v2"
    assert registry.aliases("churn") == {"production": "v1"}
    stored = orjson.loads(Path(registry.storage.path("churn/aliases.json")).read_bytes())
    assert stored == {"production": "v1"}


def test_alias_to_missing_or_corrupt_version_is_refused(registry: Registry) -> None:
    publish(registry, payload=b"12345678")
    with pytest.raises(NotFound):
        registry.set_alias("churn", "production", "v9")
    Path(registry.storage.path("churn/v1/model.skops")).write_bytes(b"87654321")
    with pytest.raises(NotFound, match="corrupt"):
        registry.set_alias("churn", "production", "v1")
    assert registry.aliases("churn") == {}


@pytest.mark.parametrize("alias", ["latest", "v3", "Prod", "9lives", ""])
def test_reserved_or_invalid_alias_names_are_refused(registry: Registry, alias: str) -> None:
    publish(registry)
    with pytest.raises(InvalidName):
        registry.set_alias("churn", alias, "v1")


def test_unknown_alias_and_model_are_not_found(registry: Registry) -> None:
    publish(registry)
    with pytest.raises(NotFound, match="no alias 'production'"):
        registry.resolve("churn", "production")
    with pytest.raises(NotFound, match="no published versions"):
        registry.resolve("other")


def test_concurrent_alias_updates_lose_nothing(registry: Registry) -> None:
    for _ in range(3):
        publish(registry)
    names = [f"team-{i}" for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda n: registry.set_alias("churn", n, "v2"), names))
    assert registry.aliases("churn") == dict.fromkeys(names, "v2")


@pytest.mark.parametrize(
    ("code", "status", "conflict"),
    [
        ("PreconditionFailed", 412, True),  # If-Match: the object changed since it was read
        ("ConditionalRequestConflict", 409, True),  # another conditional write in progress
        ("AccessDenied", 403, False),
        ("InternalError", 500, False),
    ],
)
def test_s3_refusals_of_a_conditional_write_are_told_from_other_failures(
    code: str, status: int, conflict: bool
) -> None:
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]

    from model_registry.storage import _precondition_failed

    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    cause = ClientError(response, "PutObject")
    wrapped = OSError(22, f"{code} (as s3fs raises it)")
    wrapped.__cause__ = cause
    assert _precondition_failed(wrapped) is conflict
    assert _precondition_failed(OSError("no response at all")) is False


def onnx_meta(blob: bytes) -> dict[str, Any]:
    return {"file": "model.onnx", "sha256": sha256_hex(blob), "size_bytes": len(blob)}


def test_onnx_is_written_beside_the_artifact_before_metadata(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = spy_on_creates(monkeypatch)
    blob = b"compiled"
    meta = registry.publish("churn", b"model", metadata_body(onnx=onnx_meta(blob)), onnx=blob)
    assert written == [
        "churn/v1/.claim",
        "churn/v1/model.skops",
        "churn/v1/model.onnx",
        "churn/v1/metadata.json",
    ]
    assert registry.read_onnx(meta) == blob
    assert [s.ok for s in registry.verify("churn")] == [True]


def test_onnx_bytes_and_metadata_must_agree(registry: Registry) -> None:
    blob = b"compiled"
    with pytest.raises(InvalidMetadata, match="sha256 or size"):
        registry.publish("churn", b"m", metadata_body(onnx=onnx_meta(b"other")), onnx=blob)
    with pytest.raises(InvalidMetadata, match="must come together"):
        registry.publish("churn", b"m", metadata_body(), onnx=blob)
    with pytest.raises(InvalidMetadata, match="must come together"):
        registry.publish("churn", b"m", metadata_body(onnx=onnx_meta(blob)))
    # No ONNX, with the reason: fine.
    meta = registry.publish("churn", b"m", metadata_body(onnx={"reason": "cannot convert"}))
    assert registry.read_onnx(meta) is None
    assert meta.onnx is not None
    assert meta.onnx.reason == "cannot convert"


def test_a_tampered_onnx_file_is_refused_by_its_sha256(registry: Registry) -> None:
    blob = b"compiled"
    meta = registry.publish("churn", b"model", metadata_body(onnx=onnx_meta(blob)), onnx=blob)
    path = Path(registry.storage.path("churn/v1/model.onnx"))
    path.chmod(0o644)
    path.write_bytes(b"COMPILED")  # same size, other bytes
    with pytest.raises(IntegrityError, match=r"model\.onnx has sha256"):
        registry.read_onnx(meta)
    assert [s.state for s in registry.verify("churn")] == ["corrupt"]
