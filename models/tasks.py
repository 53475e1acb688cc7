"""`Task`: what a model's outputs mean. The one list of tasks; the CLI's `--task` choices, the
dataset checks, the metrics and the bundle manifest derive from it. Imports nothing."""

from __future__ import annotations

from enum import Enum

__all__ = ["Task"]


class Task(str, Enum):
    CLASSIFICATION = "classification"  # integer labels; metric: top-1 accuracy
    REGRESSION = "regression"          # float targets; metric: mean squared error
    ANOMALY = "anomaly"                # an autoencoder scored by reconstruction error; labels 0/1; metric: ROC AUC

    def __str__(self) -> str:
        return self.value

    @property
    def metric(self) -> str:
        """The metric validation and the device check report for this task."""
        return {Task.CLASSIFICATION: "accuracy", Task.REGRESSION: "mse", Task.ANOMALY: "auc"}[self]

    @classmethod
    def names(cls) -> list[str]:
        return [task.value for task in cls]
