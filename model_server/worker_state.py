"""What worker processes share on disk: who should be serving, who is, and their metrics.

With ``--workers N`` the main process runs KServe's ``RESTServerMultiProcess``, which replaces a
worker that dies (``keep_subprocess_alive``; ``model_server.server`` supervises it). This module
keeps the files a replacement needs:

- a roster in ``$PROMETHEUS_MULTIPROC_DIR/workers``: the main process lists the workers that
  should be serving (``pids.json``), each worker marks itself ready once its model is loaded
  (``ready-PID``). Readiness, answered by any worker, is 503 while a listed worker is not ready:
  from the moment one dies until its replacement has loaded the model.
- metrics that survive a worker: prometheus_client keeps each process's values in files named by
  pid. When a worker dies its counters and histograms are added into ``*_archive.db`` (so no
  count is lost, none counted twice) and its files removed, so the directory holds the live
  workers' files plus one archive, however many workers have died. Its gauges are dropped: the
  replacement publishes its own (model info, drift). Merging and scraping take a lock on
  ``.lock``, so a scrape never sees a value both in the dead worker's file and in the archive.

It knows only files and prometheus_client's file format: nothing of models, requests or
KServe, so every layer above may read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

log = logging.getLogger(__name__)

ROSTER_DIR = "workers"
MERGED_TYPES = ("counter", "histogram")


def metrics_dir() -> Path | None:
    """The multiprocess metrics directory, when several workers share one."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(directory) if directory else None


@contextlib.contextmanager
def metrics_lock(directory: Path, *, exclusive: bool) -> Iterator[None]:
    """Shared for a scrape, exclusive while a dead worker's values move into the archive."""
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def archive_metrics(directory: Path, pid: int) -> int:
    """Move a dead worker's counters and histograms into the archive; drop its gauges.

    Returns how many values were moved. The archive is rewritten to a temporary name and renamed
    into place, then the dead worker's file is removed, all under the exclusive lock.
    """
    moved = 0
    with metrics_lock(directory, exclusive=True):
        for kind in MERGED_TYPES:
            dead = directory / f"{kind}_{pid}.db"
            if not dead.exists():
                continue
            archive = directory / f"{kind}_archive.db"
            totals: dict[str, float] = {}
            if archive.exists():
                for key, value in _values(archive):
                    totals[key] = value
            for key, value in _values(dead):
                totals[key] = totals.get(key, 0.0) + value
                moved += 1
            temporary = directory / f".{kind}_archive.tmp"
            temporary.unlink(missing_ok=True)
            merged = MmapedDict(str(temporary))  # type: ignore[no-untyped-call]
            try:
                for key, value in totals.items():
                    merged.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
            finally:
                merged.close()  # type: ignore[no-untyped-call]
            temporary.replace(archive)
            dead.unlink()
        for gauge in directory.glob(f"gauge_*_{pid}.db"):
            gauge.unlink()
    return moved


def _values(path: Path) -> list[tuple[str, float]]:
    found = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
    return [(key, value) for key, value, _, _ in found]


class Roster:
    """Which workers should serve (written by the main process) and which are ready."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / ROSTER_DIR
        self.directory.mkdir(parents=True, exist_ok=True)

    def expect(self, pids: list[int]) -> None:
        """Main process: these workers should be serving."""
        temporary = self.directory / ".pids.tmp"
        temporary.write_text(json.dumps(sorted(pids)))
        temporary.replace(self.directory / "pids.json")

    def forget(self, pid: int) -> None:
        """Main process: ``pid`` is gone."""
        (self.directory / f"ready-{pid}").unlink(missing_ok=True)

    def mark_ready(self, pid: int) -> None:
        """Worker: this process has its model loaded and serves."""
        (self.directory / f"ready-{pid}").touch()

    def not_ready(self) -> list[int]:
        """Listed workers that are not (yet) ready; [] when all are or none are listed."""
        try:
            pids = json.loads((self.directory / "pids.json").read_text())
        except FileNotFoundError:
            return []
        return [pid for pid in pids if not (self.directory / f"ready-{pid}").exists()]


@functools.cache
def roster() -> Roster | None:
    """This process's roster, when it is one of several workers (or their parent); made once
    (readiness probes ask on every call)."""
    directory = metrics_dir()
    return Roster(directory) if directory is not None else None
