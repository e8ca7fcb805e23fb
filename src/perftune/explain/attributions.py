"""Per-row attributions: how much each feature moved one prediction away from the expected one.

For the linear families (a standardizing step, then a linear model) attributions are exact: feature ``j`` of a
row contributes ``coef_j · (z_j − z̄_j)``, where ``z`` is the standardized row and ``z̄`` the mean of the training
split's standardized rows (0 for a scaler fitted on it). This equals SHAP's linear explainer under feature
independence, and the attributions of a row sum to its decision value minus the expected decision value (the
intercept). The explained output is the model's decision function: the regression value; for a binary
classifier the score of ``classes[1]`` (its log-odds for logistic regression); for more classes the score of the
class the row was predicted as (one-vs-rest).

A family that is not linear has no explainer here yet: :func:`explainer_for` says so in one line rather than
guess. (The deep-learning families bring theirs, from Captum, with the deep-learning issue.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from perftune.errors import PerftuneError


class NotExplainable(PerftuneError):
    """No explainer exists for this model's family."""


@dataclass
class Attributions:
    feature_names: list[str]
    values: np.ndarray  # rows × features
    base_value: np.ndarray  # per row: the expected output the values start from
    output: np.ndarray  # per row: the explained output (base + sum of values)
    explained: list[str]  # per row: what the output is, e.g. "decision function of class 1"

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_names": self.feature_names,
            "attributions": self.values.tolist(),
            "base_value": self.base_value.tolist(),
            "output": self.output.tolist(),
            "explained": self.explained,
            "method": "exact linear attributions: coef × (standardized input − its training mean)",
        }


class LinearExplainer:
    """Exact attributions of a fitted ``Pipeline([... StandardScaler, linear model])``."""

    def __init__(self, served: Any, feature_names: list[str]) -> None:
        steps = getattr(served, "steps", None)
        model = steps[-1][1] if steps else served
        if not hasattr(model, "coef_") or not hasattr(model, "intercept_"):
            raise NotExplainable(f"{type(model).__name__} is not a linear model; no explainer for it yet")
        self.feature_names = feature_names
        self.prefix = [step for _, step in steps[:-1]] if steps else []
        self.coef = np.atleast_2d(np.asarray(model.coef_, dtype=float))  # classes (or 1) × features
        self.intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=float))
        self.classes = getattr(model, "classes_", None)
        self.z_mean = np.zeros(self.coef.shape[1])  # the scaler was fitted on the training split

    def _standardize(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X, dtype=float)
        for step in self.prefix:
            if hasattr(step, "mean_") and hasattr(step, "scale_"):  # StandardScaler, without its name checks
                Z = (Z - step.mean_) / step.scale_
            else:
                Z = np.asarray(step.transform(Z), dtype=float)
        return Z

    def explain(self, X: np.ndarray) -> Attributions:
        Z = self._standardize(X)
        centered = Z - self.z_mean
        if self.coef.shape[0] == 1:  # regression, or a binary classifier's score of classes[1]
            rows = np.zeros(len(Z), dtype=int)
            label = "prediction" if self.classes is None else f"decision function of class {self.classes[1]}"
            explained = [label] * len(Z)
        else:  # one-vs-rest: the score of each row's predicted class
            rows = np.argmax(Z @ self.coef.T + self.intercept, axis=1)
            explained = [f"decision function of class {self.classes[r]}" for r in rows]
        values = centered * self.coef[rows]
        base = self.intercept[rows] + (self.coef[rows] * self.z_mean).sum(axis=1)  # the expected decision
        return Attributions(self.feature_names, values, base, base + values.sum(axis=1), explained)


def explainer_for(served: Any, feature_names: list[str]) -> LinearExplainer:
    """The explainer of a fitted serving pipeline (raises :class:`NotExplainable` when there is none)."""
    return LinearExplainer(served, feature_names)
