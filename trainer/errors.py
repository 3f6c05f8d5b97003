"""Trainer errors; each maps to one exit code of ``model-trainer``."""

from __future__ import annotations


class TrainerError(Exception):
    """Base of the trainer's own errors."""


class ConfigError(TrainerError):
    """Settings that cannot work together (unknown estimator parameter, wrong task)."""


class DataError(TrainerError):
    """Training data that cannot be used. Nothing is registered.

    ``problems`` lists every problem found, so one run reports them all.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid training data: " + "; ".join(problems))
