"""The server and trainer images, built by ``make images`` (buildah, no Docker engine) and run.

The images are built from the Dockerfiles as they ship, on a stand-in base: Debian's python3
from ``mmdebstrap`` passed through the ``PYTHON_IMAGE`` build argument (the production base
cannot be pulled here). ``buildah run --isolation chroot`` runs them on the host network with
the image's own user. The trainer registers the bundled sample into a mounted registry; the
server serves that version from a directory mounted read-only, as KServe's storage initializer
leaves it in ``/mnt/models``; the test calls it over HTTP on 127.0.0.1.

``make image-test`` (and ``make test``) builds the images and sets MODEL_SERVER_TEST_IMAGE and
MODEL_TRAINER_TEST_IMAGE; without them these tests are skipped with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_registry import Registry
from serving_common.net import free_port

SERVER = os.environ.get("MODEL_SERVER_TEST_IMAGE", "")
TRAINER = os.environ.get("MODEL_TRAINER_TEST_IMAGE", "")
BUILDAH = ["buildah", "--storage-driver", "vfs"]
USER = "10001:10001"
# The budget, measured on the stand-in base (Debian's python3, 225 MB; python:3.11-slim is about
# 130 MB): /opt/venv is about 740 MB, mostly kserve's own dependencies (pyarrow 170 MB,
# kubernetes 130 MB with bytecode, scipy 145 MB, pandas 80 MB, scikit-learn 50 MB, numpy 75 MB,
# grpc 20 MB), all imported by kserve or the server at start, plus ONNX Runtime (80 MB) and onnx
# (30 MB) for the trainer's ONNX export and check: 1,093 MB measured. Bytecode (about 200 MB) is
# kept on purpose: a Knative cold start would otherwise compile it. What the runtime never uses
# (pip, setuptools, test suites: about 140 MB) is cut.
SIZE_BUDGET_MB = 1150

pytestmark = pytest.mark.skipif(
    not (SERVER and TRAINER),
    reason="images not built: run `make image-test` (MODEL_SERVER_TEST_IMAGE unset)",
)


def buildah(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [*BUILDAH, *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def config(image: str) -> dict[str, Any]:
    oci: dict[str, Any] = json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]
    return oci


class Container:
    """A working container from an image; removed on exit."""

    def __init__(self, image: str) -> None:
        self.name = buildah("from", "--quiet", image)

    def run(
        self, *command: str, volumes: tuple[str, ...] = (), timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._command(command, volumes), capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip

    def start(
        self, *command: str, volumes: tuple[str, ...] = (), log: Path
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                self._command(command, volumes), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def _command(self, command: tuple[str, ...], volumes: tuple[str, ...]) -> list[str]:
        mounts = [arg for volume in volumes for arg in ("-v", volume)]
        return [*BUILDAH, "run", "--isolation", "chroot", "--network", "host", *mounts,
                self.name, "--", *command]  # fmt: skip

    def mount(self) -> Path:
        return Path(buildah("mount", self.name))

    def remove(self) -> None:
        subprocess.run([*BUILDAH, "rm", self.name], capture_output=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample registered by the trainer image into a mounted registry."""
    root = tmp_path_factory.mktemp("image-registry")
    registry = root / "registry"
    registry.mkdir()
    os.chown(registry, 10001, 10001)  # the image's user writes here, as on a volume
    container = Container(TRAINER)
    try:
        done = container.run(
            "model-trainer", "--sample", "breast-cancer", "--model-name", "breast-cancer",
            "--registry-uri", "/registry", "--promote", "--log-format", "text",
            volumes=(f"{registry}:/registry",),
        )  # fmt: skip
    finally:
        container.remove()
    assert done.returncode == 0, done.stdout + done.stderr
    return registry


def test_the_trainer_image_registers_a_verified_version(registry_dir: Path) -> None:
    registry = Registry(str(registry_dir))
    (status,) = registry.verify("breast-cancer")
    assert status.ok, status.problem
    assert registry.resolve("breast-cancer", "production") == "v1"
    metadata = json.loads((registry_dir / "breast-cancer" / "v1" / "metadata.json").read_text())
    assert (
        metadata["provenance"]["git_sha"]
        == config(TRAINER)["config"]["Labels"]["org.opencontainers.image.revision"]
    )
    owner = (registry_dir / "breast-cancer" / "v1" / "metadata.json").stat()
    assert (owner.st_uid, owner.st_gid) == (10001, 10001)  # written as the image's user


@pytest.fixture(scope="module")
def served(registry_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server image serving v1 from a read-only /mnt/models, on a loopback port."""
    version = registry_dir / "breast-cancer" / "v1"
    port = free_port()
    log = tmp_path_factory.mktemp("server-log") / "server.log"
    container = Container(SERVER)
    process = container.start(
        "model-server", "--model-dir=/mnt/models", "--model-name=breast-cancer",
        f"--http-port={port}", "--host=127.0.0.1",
        volumes=(f"{version}:/mnt/models:ro",), log=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"the server exited: {log.read_text()}"
            try:
                if httpx.get(f"{url}/v2/models/breast-cancer/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"not ready in 120 s: {log.read_text()}"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        container.remove()


def features(registry_dir: Path) -> list[str]:
    metadata = json.loads((registry_dir / "breast-cancer" / "v1" / "metadata.json").read_text())
    return [f["name"] for f in metadata["features"]]


def test_the_server_image_serves_v1_v2_and_metrics(served: str, registry_dir: Path) -> None:
    names = features(registry_dir)
    row = [1.0] * len(names)
    v1 = httpx.post(f"{served}/v1/models/breast-cancer:predict", json={"instances": [row]})
    assert v1.status_code == 200, v1.text
    assert v1.headers["x-model-version"] == "v1"
    assert len(v1.json()["predictions"]) == 1
    body = {"inputs": [{"name": "input-0", "shape": [1, len(names)], "datatype": "FP64",
                        "data": row}]}  # fmt: skip
    v2 = httpx.post(f"{served}/v2/models/breast-cancer/infer", json=body)
    assert v2.status_code == 200, v2.text
    assert v2.json()["model_version"] == "v1"
    bad = httpx.post(f"{served}/v1/models/breast-cancer:predict", json={"instances": [[1.0]]})
    assert bad.status_code == 400
    metrics = httpx.get(f"{served}/metrics").text
    assert 'model_server_requests_total{code="200",model_name="breast-cancer"' in metrics
    # The image's trainer registered model.onnx, and the image's server runs it.
    assert (
        'model_server_model_info{engine="onnx",model_name="breast-cancer",model_version="v1"'
        in metrics
    )


@pytest.mark.parametrize("image", [SERVER, TRAINER], ids=["server", "trainer"])
def test_image_config(image: str) -> None:
    oci = config(image)["config"]
    assert oci["User"] == USER
    labels = oci["Labels"]
    assert labels["org.opencontainers.image.version"] == os.environ.get("MODEL_SERVING_VERSION")
    assert len(labels["org.opencontainers.image.revision"]) == 40  # the git commit
    name = "model-server" if image == SERVER else "model-trainer"
    assert labels["org.opencontainers.image.title"] == name
    assert oci["Entrypoint"] == [name]


@pytest.mark.parametrize("image", [SERVER, TRAINER], ids=["server", "trainer"])
def test_the_runtime_holds_no_sources_build_tools_or_build_config(image: str) -> None:
    container = Container(image)
    try:
        root = container.mount()
        site = next((root / "opt" / "venv" / "lib").glob("python3.*/site-packages"))
        assert not (root / "src").exists(), "the builder's source tree reached the runtime"
        for tool in ("gcc", "cc", "make", "pip", "pip3", "apt-get"):
            assert shutil.which(tool, path=str(root / "opt" / "venv" / "bin")) is None, tool
        for tool in ("gcc", "cc", "make"):
            assert not (root / "usr" / "bin" / tool).exists(), tool
        assert not (site / "pip").exists()
        assert not (site / "setuptools").exists()
        assert not list(site.glob("*/tests")), "packages' test suites were kept"
        # The build's pip config and CA bundle were mounted, not copied: buildah leaves an empty
        # mount point at most, and the bundle is the base image's own.
        pip_conf = root / "etc" / "pip.conf"
        assert not pip_conf.exists() or pip_conf.stat().st_size == 0, "pip config copied"
        bundle = root / "etc" / "ssl" / "certs" / "ca-certificates.crt"
        host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.exists() and host_bundle.exists():
            assert bundle.read_bytes() != host_bundle.read_bytes(), "the build's CA bundle copied"
        assert (site / "model_server").is_dir()
        assert (site / "trainer").is_dir()
    finally:
        container.remove()


@pytest.mark.parametrize("image", [SERVER, TRAINER], ids=["server", "trainer"])
def test_image_size_within_budget(image: str) -> None:
    done = subprocess.run(
        ["podman", "--storage-driver", "vfs", "image", "inspect", "--format", "{{.Size}}", image],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    size_mb = int(done.stdout.strip()) / 1e6
    print(f"{image}: {size_mb:.0f} MB (budget {SIZE_BUDGET_MB} MB)")
    assert size_mb <= SIZE_BUDGET_MB
