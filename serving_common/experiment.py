"""Sticky A/B assignment, shared by the model server (which assigns) and the rollout tool
(which analyses): both must compute the same variant for the same user key.

The variant comes from SHA-1 of ``experiment:key``: salted with the experiment's name, so a new
experiment reshuffles users, and the same on every replica and worker without shared state.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

Variant = Literal["control", "treatment"]
VARIANTS: tuple[Variant, Variant] = ("control", "treatment")
BUCKETS = 10_000
"""Assignment resolution: a treatment share is honoured to 0.01%."""
NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""An experiment name: a DNS-1123 label (it is a metric label and a Kubernetes value)."""


def assign(user_key: str, experiment: str, treatment_percent: float) -> Variant:
    """The variant of ``user_key`` in ``experiment``: the same every time, for every replica."""
    if not 0 <= treatment_percent <= 100:
        raise ValueError(f"treatment percent must be 0 to 100, got {treatment_percent}")
    digest = hashlib.sha1(f"{experiment}:{user_key}".encode(), usedforsecurity=False).digest()
    bucket = int.from_bytes(digest[:8], "big") % BUCKETS
    return "treatment" if bucket < round(treatment_percent * BUCKETS / 100) else "control"


def hashed_user(user_key: str, experiment: str) -> str:
    """What provenance lines carry instead of the user key: SHA-256 of ``experiment:key``,
    16 hex digits. Stable within an experiment (lines of one user can be joined), different
    across experiments. Pseudonymous, not anonymous: an id that can be guessed can be hashed
    and matched by whoever reads the logs."""
    return hashlib.sha256(f"{experiment}:{user_key}".encode()).hexdigest()[:16]
