"""What both rehearsals share on this machine: the registry they read, the child processes
they start (each with its log in one work directory), waiting for them with progress, and the
local Prometheus.

``model-rollout rehearse`` and ``model-rollout experiment rehearse`` run real model servers,
Prometheus and locust as child processes. This makes a registry URI mean the same in every
child (``absolute_uri``), checks the registry up front (``resolve_versions``), starts and stops
the children (``Children``: the work directory is removed when a rehearsal ends well and kept,
every log named, when it fails), waits for them while saying what it waits for
(``Children.wait``), and finds and starts Prometheus (scraping every second). It knows nothing
of the analysis, the commands, Kubernetes or what either rehearsal runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import yaml

from rollout.output import EXIT_ERROR, EXIT_USAGE, Printer
from serving_common.net import free_port

ROOT = Path(__file__).resolve().parents[1]
PROGRESS_SECONDS = 10.0
"""Longest silence while a rehearsal waits: a progress line at least this often."""
TAIL_CHARS = 2000
"""How much of the end of a failed child's log is shown."""


def absolute_uri(value: str) -> str:
    """A registry URI that means the same from any working directory (an argparse ``type``).

    A local path, or a ``file://`` URI, is made absolute against this process's working
    directory, where the user typed it: the children start elsewhere. ``gs://``, ``s3://`` and
    any other scheme are left as given.
    """
    if not value.strip():
        raise argparse.ArgumentTypeError("the registry URI is empty")
    if value.startswith("file://"):
        return "file://" + str(Path(value.removeprefix("file://")).expanduser().resolve())
    if "://" in value:
        return value
    return str(Path(value).expanduser().resolve())


def add_version_arguments(
    group: argparse._ArgumentGroup, control_help: str, treatment_help: str
) -> None:
    """The arguments both rehearsals take to find their two versions: the registry (made
    absolute where the user typed it), the model, control and treatment."""
    group.add_argument(
        "--registry-uri",
        type=absolute_uri,
        default="./registry",
        help="registry: a path (relative to this directory), file://, gs:// or s3:// URI "
        "(./registry)",
    )
    group.add_argument("--model", default="breast-cancer", help="model name (breast-cancer)")
    group.add_argument("--control", required=True, help=control_help)
    group.add_argument("--treatment", required=True, help=treatment_help)


class RehearsalError(Exception):
    """A rehearsal cannot start; ``code`` is its exit code (usage: the arguments name something
    that is not there; error: the registry cannot be read)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def resolve_versions(uri: str, model: str, refs: dict[str, str]) -> dict[str, str]:
    """Each side's registry version (``v3`` for ``3``, ``latest`` or an alias), checked to be
    published before any child starts; :class:`RehearsalError` says what the registry has instead.

    The servers would otherwise retry a missing version for minutes, and the metrics label
    each side by its version, not by the name it was asked for.
    """
    from model_registry import NotFound, Registry, RegistryError

    try:
        registry = Registry(uri)
        statuses = registry.statuses(model)
        if not statuses:
            models = ", ".join(registry.list_models()) or "none"
            raise RehearsalError(
                f"model {model!r} has no versions in {uri} (models there: {models})"
            )
        published = [s.version for s in statuses if s.ok]
        has = f"it has {', '.join(published) or 'no published version'}"
        resolved: dict[str, str] = {}
        for side, ref in refs.items():
            try:
                version = registry.resolve(model, ref)
            except NotFound as error:
                raise RehearsalError(f"--{side} {ref}: {error}; {has}") from error
            if version not in published:
                found = next((s for s in statuses if s.version == version), None)
                why = f" ({found.state}: {found.problem})" if found and found.problem else ""
                raise RehearsalError(
                    f"--{side} {ref}: model {model!r} has no version {version} in {uri}{why}; {has}"
                )
            resolved[side] = version
    except RegistryError as error:
        raise RehearsalError(f"cannot read the registry {uri}: {error}", EXIT_ERROR) from error
    if len(set(resolved.values())) < len(resolved):
        raise RehearsalError(f"control and treatment are the same version ({resolved})")
    return resolved


def prometheus_binary() -> str | None:
    """The local Prometheus to rehearse with; None (said on stderr) when it is not installed."""
    found = shutil.which("prometheus")
    if found is None:
        print(
            "model-rollout: error: prometheus is not installed (make system-deps)", file=sys.stderr
        )
    return found


def ready_detail(url: str) -> str | None:
    """None when ``url`` answers 200; else what it says instead (a 503's reason)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            if response.status == 200:
                return None
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        try:
            reason = json.loads(error.read()).get("error")
        except (ValueError, AttributeError, OSError):
            reason = None
        return f"HTTP {error.code}" + (f": {reason}" if reason else "")
    except (urllib.error.URLError, OSError):
        return "not listening yet"


class ChildExited(Exception):
    """A child a rehearsal needs stopped while it ran (``name``, its exit ``code``)."""

    def __init__(self, name: str, code: int | None) -> None:
        super().__init__(f"the {name} process exited (code {code})")
        self.name, self.code = name, code


class Children:
    """The processes one rehearsal starts, each logging to ``NAME.log`` in one work directory.

    Used as a context manager: on leaving, every child is stopped (last started first). The
    directory is removed when the rehearsal ended well, and kept when it failed (:meth:`fail`,
    :meth:`keep`) or was interrupted, or with ``keep=True``; then stderr says where.
    """

    def __init__(self, prefix: str, *, keep: bool = False) -> None:
        self.work = Path(tempfile.mkdtemp(prefix=prefix))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kept = keep
        self.said = False
        """Where the logs are was said on stderr."""

    def log(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def start(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` as child ``name`` in the project's root, its output in its log."""
        with self.log(name).open("wb") as handle:  # the child keeps its own descriptor
            process = subprocess.Popen(  # noqa: S603 (our own commands)
                command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        self.processes[name] = process
        return process

    def exited(self) -> str | None:
        """The first child (in start order) that is no longer running, if any."""
        return next((n for n, p in self.processes.items() if p.poll() is not None), None)

    def tail(self, name: str) -> str:
        try:
            text = self.log(name).read_text(errors="replace")
        except OSError:
            return ""
        return text[-TAIL_CHARS:].rstrip()

    def wait(
        self,
        what: str,
        pending: Callable[[], str | None],
        printer: Printer,
        timeout: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> str | None:
        """Poll ``pending`` (None when done, else what is still awaited) until it is done:
        None. A ``waiting`` progress line names ``what`` and the seconds waited at least every
        ``PROGRESS_SECONDS``. Returns why it stopped instead: a child exited, or the timeout."""
        started = clock()
        said = started
        while True:
            gone = self.exited()
            if gone is not None:
                code = self.processes[gone].returncode
                return f"the {gone} process exited (code {code})"
            detail = pending()
            if detail is None:
                return None
            now = clock()
            if now - started >= timeout:
                return f"nothing after {timeout:.0f}s ({detail})"
            if now - said >= PROGRESS_SECONDS:
                printer.event("waiting", f"{what} ({now - started:.0f}s): {detail}")
                said = now
            sleep(0.5)

    def sleep(self, seconds: float) -> None:
        """Sleep, then raise :class:`ChildExited` if any child has stopped meanwhile (a loop
        given this as its sleep stops as soon as a server, Prometheus or the load is gone)."""
        time.sleep(seconds)
        gone = self.exited()
        if gone is not None:
            raise ChildExited(gone, self.processes[gone].returncode)

    def keep(self, culprit: str | None = None) -> None:
        """Keep the work directory, and say on stderr where each child's log is, after the
        end of ``culprit``'s log."""
        self.kept = self.said = True
        lines = []
        if culprit is not None:
            lines.append(f"last lines of {self.log(culprit)}:")
            lines += ["  " + line for line in self.tail(culprit).splitlines() or ["(empty)"]]
        lines.append(f"logs (kept in {self.work}):")
        lines += [f"  {name}: {self.log(name)}" for name in self.processes]
        print("\n".join(lines), file=sys.stderr, flush=True)

    def fail(self, message: str, culprit: str | None = None) -> int:
        """Say what failed, the end of ``culprit``'s log and where every log is: EXIT_ERROR."""
        print(f"model-rollout: error: {message}", file=sys.stderr, flush=True)
        self.keep(culprit)
        return EXIT_ERROR

    def stop(self) -> None:
        """Terminate the children (last started first), killing any still up after 20 s."""
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if error is not None or self.kept:
            if not self.said:
                self.keep()
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def start_prometheus(
    prometheus_bin: str, targets: list[str], children: Children, printer: Printer
) -> str | int:
    """A Prometheus on a free loopback port scraping ``targets`` (URLs) every second, its
    storage in the work directory; its URL, or the exit code once its failure is said."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "model-serving",
                "static_configs": [{"targets": [u.removeprefix("http://") for u in targets]}],
            }
        ],
    }
    work = children.work
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    children.start(
        "prometheus",
        [
            prometheus_bin,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    why = children.wait(
        "Prometheus starting", lambda: ready_detail(f"{url}/-/ready"), printer, timeout=60
    )
    if why is not None:
        return children.fail(f"the local Prometheus did not start: {why}", "prometheus")
    return url
