"""Model performance on a window: realized from labels, estimated (CBPE) before they arrive.

**Realized** performance joins the window's predictions with the labels that came back through feedback
(``perftune_feedback``, one label per row of a request): accuracy with a Wilson interval
(``scipy.stats.binomtest(...).proportion_ci``), RMSE with a bootstrap percentile interval
(``scipy.stats.bootstrap``, on at most :data:`BOOTSTRAP_ROWS` rows).

**Estimated** performance is confidence-based performance estimation (CBPE, the method NannyML
implements): at registration, on the held-out test split, isotonic regression (``sklearn.isotonic``) learns
the chance that a prediction is right from the model's probability of the class it predicted; the map is
stored in the version's profile. On a window, the calibrated chance of each row's prediction being right is
read off that map; their mean is the expected accuracy. (NannyML calibrates every class one-vs-rest to
estimate the whole confusion matrix; for accuracy the one-dimensional calibration of the predicted class's
probability is the direct form of the same idea, needs fewer calibration rows, and isotonic regression keeps
the calibration split's mean equal to its accuracy.) The 95 % interval adds the calibration's own error to
the window's sampling error. A model without ``predict_proba`` (a hinge-loss SVM, a regressor) is "not
estimable": no guess is made.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BOOTSTRAP_ROWS = 50_000
Z95 = 1.959963984540054


@dataclass
class Performance:
    """One performance figure of a window, with its 95 % interval and the test-split value."""

    metric: str  # accuracy | rmse
    kind: str  # realized | estimated
    value: float | None
    low: float | None
    high: float | None
    rows: int
    test_value: float | None
    degraded: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_calibration(probabilities: np.ndarray, y: np.ndarray, classes: np.ndarray) -> dict[str, Any]:
    """The calibration CBPE needs, fitted on the held-out test split at registration (stored with the version):
    isotonic regression (``sklearn.isotonic``) of "the prediction was right" on the model's probability of the
    class it predicted."""
    from sklearn.isotonic import IsotonicRegression

    classes = np.asarray(classes)
    confidence = probabilities.max(axis=1)
    right = classes[probabilities.argmax(axis=1)] == y
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(confidence, right)
    return {
        "method": "isotonic regression of correctness on the predicted class's probability",
        "classes": [float(c) for c in classes],
        "x": iso.X_thresholds_.tolist(),
        "y": iso.y_thresholds_.tolist(),
        "rows": len(y),
        "accuracy": float(np.mean(right)),
    }


class ExpectedAccuracy:
    """CBPE: the expected accuracy of a window's predictions from calibrated confidences, with a 95 % interval.

    Chunks are added as they are read (:meth:`add`); only three sums are kept, so a window of any size costs
    no memory. The interval combines the window's sampling error, ``sqrt(Σ p(1 − p)) / n``, with the
    calibration's own (it was fitted on ``rows`` test rows: ``sqrt(a(1 − a) / rows)``).
    """

    def __init__(self, calibration: dict[str, Any]) -> None:
        self.calibration = calibration
        self._classes = np.asarray(calibration["classes"])
        self.rows = 0
        self._right = self._variance = 0.0  # Σ p and Σ p(1 − p) over the rows' chances of being right

    def add(self, probabilities: np.ndarray, predictions: np.ndarray) -> None:
        classes = self._classes
        index = np.minimum(np.searchsorted(classes, predictions), classes.size - 1)
        known = classes[index] == predictions  # a prediction outside the classes is never right
        confidence = probabilities[np.arange(len(probabilities)), index]
        right = np.where(known, np.interp(confidence, self.calibration["x"], self.calibration["y"]), 0.0)
        self.rows += len(right)
        self._right += float(right.sum())
        self._variance += float(np.sum(right * (1 - right)))

    def result(self, test_value: float | None) -> Performance:
        n = self.rows
        if not n:
            return Performance("accuracy", "estimated", None, None, None, 0, test_value, note="no rows")
        value = self._right / n
        se = math.sqrt(self._variance / n**2 + value * (1 - value) / max(self.calibration["rows"], 1))
        low, high = max(0.0, value - Z95 * se), min(1.0, value + Z95 * se)
        return Performance("accuracy", "estimated", value, low, high, n, test_value)


def not_estimable(task: str, test_value: float | None, why: str) -> Performance:
    metric = "accuracy" if task == "classification" else "rmse"
    return Performance(metric, "estimated", None, None, None, 0, test_value, note=f"not estimable: {why}")


def realized(
    task: str, predictions: np.ndarray, labels: np.ndarray, test_value: float | None, seed: int = 0
) -> Performance:
    """Accuracy (Wilson interval) or RMSE (bootstrap interval) of labelled rows."""
    from scipy import stats

    n = len(labels)
    metric = "accuracy" if task == "classification" else "rmse"
    if not n:
        return Performance(metric, "realized", None, None, None, 0, test_value, note="no labels yet")
    if task == "classification":
        k = int(np.sum(predictions == labels))
        interval = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        return Performance(metric, "realized", k / n, float(interval.low), float(interval.high), n, test_value)
    squared = (np.asarray(predictions, dtype=float) - np.asarray(labels, dtype=float)) ** 2
    return _bootstrapped(metric, squared, np.sqrt, test_value, seed)


def realized_loss(row_losses: np.ndarray, test_value: float | None, seed: int = 0) -> Performance:
    """The family's training loss on labelled rows (the spec's ``val_loss`` objective), bootstrap interval."""
    if not len(row_losses):
        return Performance("loss", "realized", None, None, None, 0, test_value, note="no labels yet")
    return _bootstrapped("loss", np.asarray(row_losses, dtype=float), lambda m: m, test_value, seed)


def _bootstrapped(metric: str, per_row: np.ndarray, of_mean, test_value: float | None, seed: int) -> Performance:
    """``of_mean(mean(per_row))`` with a bootstrap percentile interval (on at most BOOTSTRAP_ROWS rows)."""
    from scipy import stats

    n = len(per_row)
    value = float(of_mean(per_row.mean()))
    if n < 2:
        return Performance(metric, "realized", value, None, None, n, test_value, note="one label: no interval")
    rng = np.random.default_rng(seed)
    sample = per_row if n <= BOOTSTRAP_ROWS else rng.choice(per_row, BOOTSTRAP_ROWS, replace=False)
    result = stats.bootstrap(
        (sample,), lambda s, axis=-1: of_mean(np.mean(s, axis=axis)), n_resamples=1000, method="percentile",
        vectorized=True, random_state=rng, batch=100,
    )  # fmt: skip
    low, high = result.confidence_interval
    return Performance(metric, "realized", value, float(low), float(high), n, test_value)


def judge(performance: Performance, margin: float) -> Performance:
    """Mark a figure degraded when it is worse than the test-split value by more than ``margin`` (accuracy:
    absolute drop; RMSE and loss: relative rise) — judged on the interval's favourable end, so noise alone does not."""
    if performance.value is None or performance.test_value is None:
        return performance
    if performance.metric == "accuracy":
        best = performance.high if performance.high is not None else performance.value
        performance.degraded = best < performance.test_value - margin
    else:
        best = performance.low if performance.low is not None else performance.value
        performance.degraded = best > performance.test_value * (1 + margin)
    return performance
