"""ML metrics computed from a linear model's decision values, cheaply enough to run every step.

Losses are the data term of the family's training objective, so ``train_loss`` and ``val_loss`` are
comparable. Multi-class classifiers are one-vs-rest (as scikit-learn's SGD is); their loss is the mean of
the per-class binary losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

LossFn = Callable[[np.ndarray, np.ndarray], float]


def signed_targets(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """±1 targets: a vector for two classes (positive = ``classes[1]``), an (n, k) one-vs-rest matrix otherwise."""
    if len(classes) == 2:
        return np.where(y == classes[1], 1.0, -1.0)
    return np.where(y[:, None] == classes[None, :], 1.0, -1.0)


def squared_loss(target: np.ndarray, decision: np.ndarray) -> float:
    return float(np.mean((target - decision) ** 2))


def hinge_loss(target: np.ndarray, decision: np.ndarray) -> float:
    return float(np.mean(np.maximum(0.0, 1.0 - target * decision)))


def log_loss(target: np.ndarray, decision: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, -target * decision)))


def epsilon_insensitive_loss(target: np.ndarray, decision: np.ndarray, epsilon: float = 0.1) -> float:
    return float(np.mean(np.maximum(0.0, np.abs(target - decision) - epsilon)))


def classify(decision: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Labels from decision values (the same rule as scikit-learn's linear classifiers)."""
    if decision.ndim == 1:
        return classes[(decision > 0).astype(np.intp)]
    return classes[np.argmax(decision, axis=1)]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def class_key(value: Any) -> str:
    """A class as its name: integer classes read back from JSON as floats (9.0) are the class "9"."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)
