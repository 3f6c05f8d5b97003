"""Locust population for ``model-rollout experiment rehearse``: users with stable ids, and a
planted true lift.

Each request comes from one of ``EXPERIMENT_POPULATION`` end users (``user-0`` ...), chosen at
random, with its id in the ``x-user-id`` header, so every user stays in the variant the server
assigns. The response's ``x-experiment-variant`` says which; the user then converts with
probability ``EXPERIMENT_BASE_RATE`` in the control and ``EXPERIMENT_BASE_RATE x (1 +
EXPERIMENT_LIFT)`` in the treatment, and the outcome goes back through the feedback endpoint
with the user key. Environment also: EXPERIMENT_NAME, LOADTEST_REGISTRY_URI, LOADTEST_MODEL,
LOADTEST_VERSION.
"""

from __future__ import annotations

import os

from locust import HttpUser, between, task

from loadtests.payloads import Payloads
from model_registry import Registry

METADATA = Registry(os.environ.get("LOADTEST_REGISTRY_URI", "./registry")).get(
    os.environ.get("LOADTEST_MODEL", "breast-cancer"), os.environ.get("LOADTEST_VERSION", "latest")
)
MODEL = METADATA.model_name
EXPERIMENT = os.environ["EXPERIMENT_NAME"]
POPULATION = int(os.environ.get("EXPERIMENT_POPULATION", "20000"))
BASE_RATE = float(os.environ.get("EXPERIMENT_BASE_RATE", "0.1"))
LIFT = float(os.environ.get("EXPERIMENT_LIFT", "0"))
RATES = {"control": BASE_RATE, "treatment": min(1.0, max(0.0, BASE_RATE * (1 + LIFT)))}


class ExperimentUser(HttpUser):
    wait_time = between(0.001, 0.005)

    def on_start(self) -> None:
        self.payloads = Payloads(METADATA, seed=id(self))

    @task
    def visit(self) -> None:
        user = f"user-{self.payloads.random.randrange(POPULATION)}"
        with self.client.post(
            f"/v2/models/{MODEL}/infer",
            json=self.payloads.v2(1),
            headers={"x-user-id": user},
            name="infer",
            catch_response=True,
        ) as response:
            variant = response.headers.get("x-experiment-variant")
            if response.status_code != 200 or variant not in RATES:
                response.failure(f"status {response.status_code}, variant {variant!r}")
                return
        converted = self.payloads.random.random() < RATES[variant]
        self.client.post(
            f"/v2/models/{MODEL}/feedback",
            json={"experiment": EXPERIMENT, "user_id": user, "converted": converted},
            name="outcome",
        )
