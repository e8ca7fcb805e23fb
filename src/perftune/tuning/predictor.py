"""A learned performance predictor (in the spirit of Baker et al. 2017, "Accelerating neural architecture
search using performance prediction"): from a trial's hyperparameters and its first ``k`` report windows,
predict the final value of a metric.

It is fitted on the completed trials of a finished study (e.g. the full search of ``perftune savings``) for one
dataset × model, with a gradient-boosted regressor on

* the hyperparameters (log scale where they span orders of magnitude) and the planned number of steps,
* the metric's values in the first ``k`` windows, their last difference, and the step of the k-th window.

Its error is estimated by k-fold cross-validation on those trials and reported with the study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perftune.results import TrialState

MIN_TRAIN_TRIALS = 6


@dataclass
class CurvePredictor:
    """Predicts the final value of ``metric`` from a trial's first ``observations`` windows."""

    metric: str
    observations: int
    params: list[str]
    log_params: list[str]
    model: Any = None
    n_train: int = 0
    cv_mae: float = math.nan
    cv_rel_error: float = math.nan
    notes: list[str] = field(default_factory=list)

    def features(
        self, params: dict[str, Any], history: list[dict[str, float]], total_steps: float
    ) -> list[float] | None:
        windows = [w for w in history if self.metric in w][: self.observations]
        if len(windows) < self.observations:
            return None
        row = []
        for name in self.params:
            value = float(params.get(name, 0.0))
            row.append(math.log10(value) if name in self.log_params and value > 0 else value)
        values = [w[self.metric] for w in windows]
        row += [
            math.log10(max(total_steps, 1.0)),
            *values,
            values[-1] - values[-2] if len(values) > 1 else 0.0,
            windows[-1]["steps"],
        ]
        return row

    def predict(self, params: dict[str, Any], history: list[dict[str, float]], total_steps: float) -> float | None:
        row = self.features(params, history, total_steps)
        if row is None or self.model is None:
            return None
        return float(self.model.predict(np.array([row]))[0])

    def error(self) -> dict[str, float]:
        return {"n_train": self.n_train, "cv_mae": self.cv_mae, "cv_rel_error": self.cv_rel_error}


def fit_predictor(
    trials: list[Any], histories: dict[str, list[dict[str, float]]], metric: str, observations: int = 2, seed: int = 0
) -> CurvePredictor:
    """Fit on completed trials that have at least ``observations`` windows of ``metric``.

    Raises ValueError when there are too few such trials to learn from.
    """
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.model_selection import KFold, cross_val_predict

    completed = [t for t in trials if t.status == TrialState.COMPLETED and metric in t.metrics]
    names = sorted(
        {
            n
            for t in completed
            for n in t.params
            if isinstance(t.params[n], (int, float)) and not isinstance(t.params[n], bool)
        }
    )
    logs = [
        n
        for n in names
        if min(t.params[n] for t in completed) > 0
        and max(t.params[n] for t in completed) / min(t.params[n] for t in completed) >= 100
    ]
    predictor = CurvePredictor(metric, observations, names, logs)
    rows, targets = [], []
    for trial in completed:
        row = predictor.features(trial.params, histories.get(trial.trial_id, []), trial.metrics.get("total_steps", 0))
        if row is not None:
            rows.append(row)
            targets.append(float(trial.metrics[metric]))
    if len(rows) < MIN_TRAIN_TRIALS:
        raise ValueError(
            f"only {len(rows)} completed trials with {observations} windows of {metric}; "
            f"a predictor needs at least {MIN_TRAIN_TRIALS}"
        )
    X, y = np.array(rows), np.array(targets)
    model = GradientBoostingRegressor(n_estimators=200, max_depth=3, learning_rate=0.05, random_state=seed)
    folds = min(5, len(rows))
    predicted = cross_val_predict(model, X, y, cv=KFold(folds, shuffle=True, random_state=seed))
    predictor.cv_mae = float(np.mean(np.abs(predicted - y)))
    scale = float(np.mean(np.abs(y))) or 1.0
    predictor.cv_rel_error = predictor.cv_mae / scale
    predictor.model = model.fit(X, y)
    predictor.n_train = len(rows)
    return predictor
