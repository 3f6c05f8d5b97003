"""Real servers on 127.0.0.1 for integration tests: GCS emulator, S3 (moto), Pushgateway."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from serving_common.net import free_port
from tests.integration.gcs_precondition_proxy import PreconditionProxy

BIN = Path(sys.executable).parent
BUCKET = "registry-it"


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers: good enough
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def start(args: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:  # the child keeps its own descriptor
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_http(url, process)
    except RuntimeError:
        process.kill()
        raise RuntimeError(f"{args[0]} failed to start; log: {log.read_text()[-2000:]}") from None
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def registry_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registry the servers under test read (never write): a classifier (breast-cancer,
    promoted), a regressor (diabetes, promoted) and a model with a categorical feature (shop)."""
    from tests.conftest import mixed_frame
    from trainer.settings import TrainerSettings
    from trainer.train import run

    root = tmp_path_factory.mktemp("served") / "registry"
    uri = str(root)
    run(TrainerSettings(sample="breast-cancer", registry_uri=uri, promote=True))
    run(TrainerSettings(sample="diabetes", registry_uri=uri, promote=True))
    data = root.parent / "shop.csv"
    mixed_frame(300).to_csv(data, index=False)
    run(TrainerSettings(data_uri=str(data), target="label", model_name="shop", registry_uri=uri))
    return uri


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gcp-storage-emulator behind a proxy enforcing ifGenerationMatch=0.

    Sets STORAGE_EMULATOR_HOST, which gcsfs reads, for the session.
    """
    port = free_port()
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    process = start(
        [
            str(BIN / "gcp-storage-emulator"),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
        ],
        f"http://127.0.0.1:{port}/storage/v1/b",
        log,
    )
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        with PreconditionProxy(port) as proxy:
            os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{proxy.port}"
            fs = fsspec.filesystem("gs", skip_instance_cache=True)
            fs.mkdir(BUCKET)
            yield os.environ["STORAGE_EMULATOR_HOST"]
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        stop(process)


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret (moto's fake credentials)
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server (one request at a time, as atomic as S3's conditional writes); sets
    AWS_ENDPOINT_URL_S3 and dummy credentials."""
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    process = start(
        [sys.executable, "-m", "tests.integration.serial_moto", str(port)],
        f"http://127.0.0.1:{port}/moto-api/",
        log,
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL_S3"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL_S3=endpoint)
    try:
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(BUCKET)
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop(process)


@pytest.fixture(params=["gs", "s3"])
def remote_uri(request: pytest.FixtureRequest) -> str:
    """A fresh registry root on each object store."""
    request.getfixturevalue("gcs_endpoint" if request.param == "gs" else "s3_endpoint")
    return f"{request.param}://{BUCKET}/{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus Pushgateway from Debian (installed by `make system-deps`)."""
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.fail("prometheus-pushgateway is not installed: run `make system-deps`")
    port = free_port()
    state = tmp_path_factory.mktemp("pushgateway")
    # Debian's build persists to /var/lib/prometheus by default: keep this instance's state apart.
    process = start(
        [
            binary,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={state / 'pushgateway.data'}",
        ],
        f"http://127.0.0.1:{port}/-/ready",
        state / "pushgateway.log",
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
