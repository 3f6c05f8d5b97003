"""Locust load split between a control and a treatment server by a percentage in a file.

Used by ``model-rollout rehearse``: the rehearsal writes the canary's current percent to
``SPLIT_FILE`` at every step, and each request goes to the treatment with that probability,
as KServe's traffic split would send it. Payloads come from the model's registry metadata.
Environment: CONTROL_URL, TREATMENT_URL, SPLIT_FILE, LOADTEST_REGISTRY_URI, LOADTEST_MODEL,
LOADTEST_VERSION.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from locust import HttpUser, between, task

from loadtests.payloads import Payloads
from model_registry import Registry

CONTROL = os.environ["CONTROL_URL"].rstrip("/")
TREATMENT = os.environ["TREATMENT_URL"].rstrip("/")
SPLIT_FILE = Path(os.environ["SPLIT_FILE"])
METADATA = Registry(os.environ.get("LOADTEST_REGISTRY_URI", "./registry")).get(
    os.environ.get("LOADTEST_MODEL", "breast-cancer"), os.environ.get("LOADTEST_VERSION", "latest")
)
MODEL = METADATA.model_name


class SplitUser(HttpUser):
    wait_time = between(0.005, 0.02)

    def on_start(self) -> None:
        self.payloads = Payloads(METADATA, seed=id(self))
        self._percent, self._read_at = 0.0, 0.0

    def percent(self) -> float:
        now = time.monotonic()
        if now - self._read_at > 0.5:
            try:
                self._percent = float(SPLIT_FILE.read_text().strip() or 0)
            except (OSError, ValueError):
                self._percent = 0.0
            self._read_at = now
        return self._percent

    @task
    def infer(self) -> None:
        treatment = self.payloads.random.random() * 100 < self.percent()
        base, name = (TREATMENT, "treatment") if treatment else (CONTROL, "control")
        rows = self.payloads.random.randint(1, 4)
        self.client.post(f"{base}/v2/models/{MODEL}/infer", json=self.payloads.v2(rows), name=name)
