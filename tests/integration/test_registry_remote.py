"""The registry and trainer against real object-store servers on 127.0.0.1 (gs:// and s3://)."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import fsspec
import orjson
import pytest

from model_registry import AliasConflict, IntegrityError, NotFound, Registry, VersionConflict
from model_registry.storage import ConcurrentUpdate
from tests.conftest import metadata_body, mixed_frame
from trainer.settings import TrainerSettings
from trainer.train import run

pytestmark = pytest.mark.integration


def test_publish_read_alias_verify(remote_uri: str) -> None:
    registry = Registry(remote_uri)
    assert registry.list_models() == []
    first = registry.publish("churn", b"first", metadata_body())
    second = registry.publish("churn", b"second", metadata_body())
    assert (first.version, second.version) == ("v1", "v2")
    assert registry.list_models() == ["churn"]
    assert [m.version for m in registry.list_versions("churn")] == ["v1", "v2"]
    assert registry.read_artifact("churn", "v1") == (first, b"first")
    assert registry.set_alias("churn", "production", "v1") == "v1"
    assert Registry(remote_uri).resolve("churn", "production") == "v1"
    assert all(status.ok for status in registry.verify("churn"))
    assert registry.version_uri("churn", "v2") == f"{remote_uri}/churn/v2"


def test_second_writer_of_a_version_is_refused(remote_uri: str) -> None:
    registry = Registry(remote_uri)
    registry.publish("churn", b"original", metadata_body())
    with pytest.raises(FileExistsError):
        registry.storage.create("churn/v1/model.skops", b"clobber")
    with pytest.raises(FileExistsError):
        registry.storage.create("churn/v1/metadata.json", b"{}")
    assert registry.read_artifact("churn", "v1")[1] == b"original"


def test_concurrent_publishers_get_distinct_versions(remote_uri: str) -> None:
    writers = 6
    barrier = threading.Barrier(writers)

    def one(i: int) -> tuple[str, bytes]:
        payload = f"writer-{i}".encode()
        registry = Registry(remote_uri)
        barrier.wait()
        return registry.publish("race", payload, metadata_body()).version, payload

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(one, range(writers)))
    assert sorted(int(v[1:]) for v, _ in results) == list(range(1, writers + 1))
    registry = Registry(remote_uri)
    for version, payload in results:
        assert registry.read_artifact("race", version)[1] == payload


def test_losing_publisher_gets_a_clear_error_when_its_version_was_taken(remote_uri: str) -> None:
    registry = Registry(remote_uri)
    registry.storage.create("churn/v1/.claim", b"{}")
    registry.storage.create("churn/v1/model.skops", b"someone else's")
    # A publisher that believes it holds v1 must not overwrite what is there.
    with pytest.raises(FileExistsError):
        registry.storage.create("churn/v1/model.skops", b"mine")
    assert registry.publish("churn", b"mine", metadata_body()).version == "v2"


def test_crashed_publish_and_tampered_artifact_are_invisible(remote_uri: str) -> None:
    registry = Registry(remote_uri)
    registry.publish("churn", b"good-one", metadata_body())
    # A publisher died after its artifact: claim and artifact, no metadata.
    registry.storage.create("churn/v2/.claim", b"{}")
    registry.storage.create("churn/v2/model.skops", b"half-written")
    assert [m.version for m in registry.list_versions("churn")] == ["v1"]
    assert registry.resolve("churn") == "v1"
    with pytest.raises(NotFound, match="incomplete"):
        registry.get("churn", "v2")
    # Someone rewrites v1's artifact behind the registry's back (same size).
    fs, _ = fsspec.core.url_to_fs(remote_uri)
    fs.pipe_file(registry.storage.path("churn/v1/model.skops"), b"bad-one!")
    with pytest.raises(IntegrityError):
        registry.read_artifact("churn", "v1")
    states = {s.version: s.state for s in registry.verify("churn")}
    assert states == {"v1": "corrupt", "v2": "incomplete"}
    assert registry.publish("churn", b"next", metadata_body()).version == "v3"


def test_trainer_reads_data_and_registers_on_the_object_store(remote_uri: str) -> None:
    scheme = remote_uri.split("://", maxsplit=1)[0]
    data_uri = f"{remote_uri}/data/churn.csv"
    with fsspec.open(data_uri, "wb") as handle:
        handle.write(mixed_frame(150).to_csv(index=False).encode())
    settings = TrainerSettings(
        registry_uri=f"{remote_uri}/models",
        data_uri=data_uri,
        target="label",
        model_name="churn",
        promote=True,
    )
    result = run(settings)
    assert result.outcome == "registered"
    assert result.uri == f"{remote_uri}/models/churn/v1"
    registry = Registry(f"{remote_uri}/models")
    meta, model = registry.load_model("churn", "production")
    assert meta.training.data_uri == data_uri
    assert meta.training.data_uri.startswith(f"{scheme}://")
    assert set(model.predict(mixed_frame(5, seed=9).drop(columns="label"))) <= {"yes", "no"}


def test_registry_cli_on_the_object_store(remote_uri: str) -> None:
    Registry(remote_uri).publish("churn", b"one", metadata_body())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_registry",
            "--registry-uri",
            remote_uri,
            "-o",
            "json",
            "list",
            "churn",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [v["version"] for v in orjson.loads(result.stdout)["versions"]] == ["v1"]


def test_claim_attempts_are_bounded(remote_uri: str) -> None:
    registry = Registry(remote_uri, max_claim_attempts=1)
    registry.storage.create("busy/v1/.claim", b"{}")

    class Always(Registry):
        def _version_files(self, model_name: str) -> dict[str, dict[str, int]]:
            return {}  # a listing that never sees the competitor's claim

    stuck = Always(remote_uri, max_claim_attempts=2)
    with pytest.raises(VersionConflict):
        stuck.publish("busy", b"x", metadata_body())


def test_backend_precondition_refuses_an_existing_object(remote_uri: str) -> None:
    """The conditional write itself (not the existence check before it) refuses to overwrite."""
    registry = Registry(remote_uri)
    path = registry.storage.path("churn/v1/metadata.json")
    registry.storage.fs.pipe_file(path, b"first", mode="create")
    with pytest.raises(FileExistsError):
        registry.storage.fs.pipe_file(path, b"second", mode="create")
    assert registry.storage.read_bytes("churn/v1/metadata.json") == b"first"


def test_alias_write_is_refused_when_the_aliases_changed_since_read(remote_uri: str) -> None:
    """The backend's precondition (generation / ETag), not a check before it, refuses the write."""
    storage = Registry(remote_uri).storage
    assert storage.read_versioned("m/aliases.json") == (None, None)
    storage.write_if("m/aliases.json", b'{"a": "v1"}', None)
    data, token = storage.read_versioned("m/aliases.json")
    assert (data, token is not None) == (b'{"a": "v1"}', True)
    with pytest.raises(ConcurrentUpdate):  # absent was expected: someone created it first
        storage.write_if("m/aliases.json", b'{"b": "v1"}', None)
    storage.replace("m/aliases.json", b'{"a": "v2"}')  # another writer, after our read
    with pytest.raises(ConcurrentUpdate):
        storage.write_if("m/aliases.json", b'{"a": "v1", "c": "v1"}', token)
    assert storage.read_bytes("m/aliases.json") == b'{"a": "v2"}'
    _, fresh = storage.read_versioned("m/aliases.json")
    storage.write_if("m/aliases.json", b'{"a": "v3"}', fresh)
    assert storage.read_bytes("m/aliases.json") == b'{"a": "v3"}'


RACER = """
import sys
from model_registry import Registry
uri, writer, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
registry = Registry(uri)
for i in range(rounds):
    registry.set_alias("race", f"w{writer}-{i}", "v1")
"""


def test_racing_alias_writers_lose_no_update(remote_uri: str) -> None:
    """Processes setting aliases at once: every alias each one set is there at the end."""
    Registry(remote_uri).publish("race", b"one", metadata_body())
    writers, rounds = 4, 5
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, remote_uri, str(w), str(rounds)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    for racer in racers:
        _, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
    expected = {f"w{w}-{i}": "v1" for w in range(writers) for i in range(rounds)}
    assert Registry(remote_uri).aliases("race") == expected


def test_alias_update_gives_up_with_a_clear_error_after_losing_every_race(
    remote_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(remote_uri)
    registry.publish("race", b"one", metadata_body())
    registry.set_alias("race", "production", "v1")
    storage = registry.storage

    def always_lose(rel: str, data: bytes, token: str | None) -> None:
        storage.replace(rel, storage.read_bytes(rel))  # someone else writes first, every time
        raise ConcurrentUpdate(rel)

    monkeypatch.setattr(storage, "write_if", always_lose)
    with pytest.raises(AliasConflict, match="changed by other writers 8 times"):
        registry.set_alias("race", "staging", "v1")
    assert Registry(remote_uri).aliases("race") == {"production": "v1"}
