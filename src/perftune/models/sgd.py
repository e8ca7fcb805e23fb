"""The thesis' model families on scikit-learn's SGD, trained with ``partial_fit`` and a constant step size.

=============  ==============================  =====================================
family         classification                  regression
=============  ==============================  =====================================
sgd_linear     least squares (squared_error)   linear regression (squared_error)
sgd_logistic   logistic regression (log_loss)  — (needs classes)
sgd_svm        linear SVM (hinge)              linear SVR (epsilon_insensitive)
=============  ==============================  =====================================
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from perftune.measure import ml
from perftune.models.base import TaskInfo, TrainingParams, TrialDiverged, register_family

if TYPE_CHECKING:
    from sklearn.linear_model import SGDClassifier, SGDRegressor

_LOSS_FNS: dict[str, ml.LossFn] = {
    "squared_error": ml.squared_loss,
    "hinge": ml.hinge_loss,
    "log_loss": ml.log_loss,
    "epsilon_insensitive": ml.epsilon_insensitive_loss,
}


class SGDParams(TrainingParams):
    """Hyperparameters of the SGD families (the thesis grid: batch size × learning rate × alpha)."""

    learning_rate: float = Field(gt=0, description="constant step size (scikit-learn's eta0)")
    alpha: float = Field(default=1e-4, ge=0, description="L2 regularisation strength")


class _SGDTrainer:
    """Shared implementation; subclasses name the loss per task."""

    name: ClassVar[str]
    Params: ClassVar[type[TrainingParams]] = SGDParams

    def __init__(self, params: SGDParams, info: TaskInfo, seed: int) -> None:
        # Imported here: checking a spec against the family's hyperparameters must not wait for scikit-learn.
        from sklearn.linear_model import SGDClassifier, SGDRegressor

        self.params, self.info = params, info
        self.loss_name = self.losses[info.task]
        self._loss_fn = _LOSS_FNS[self.loss_name]
        common: dict[str, Any] = {
            "loss": self.loss_name,
            "penalty": "l2",
            "alpha": params.alpha,
            "learning_rate": "constant",
            "eta0": params.learning_rate,
            "random_state": seed,
        }
        if info.task == "classification":
            assert info.classes is not None, "classification needs the list of classes"
            self.model: SGDClassifier | SGDRegressor = SGDClassifier(**common)
        else:
            self.model = SGDRegressor(**common)
        self._fitted = False

    tasks: ClassVar[frozenset[str]]

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if self.info.task == "classification":
            return ml.signed_targets(y, self.info.classes)  # type: ignore[arg-type]
        return y

    def decision(self, X: np.ndarray) -> np.ndarray:
        """Decision values with plain numpy (no input validation: this runs every step)."""
        coef, intercept = self.model.coef_, self.model.intercept_
        if coef.ndim == 2 and coef.shape[0] == 1:
            return X @ coef[0] + intercept[0]
        if coef.ndim == 1:
            return X @ coef + intercept[0]
        return X @ coef.T + intercept

    def step(self, X: np.ndarray, y: np.ndarray) -> float:
        loss = self._loss_fn(self._targets(y), self.decision(X)) if self._fitted else float("nan")
        if self._fitted and not np.isfinite(loss):
            raise TrialDiverged(f"training loss became {loss} (learning rate too large for this data?)")
        try:
            if self.info.task == "classification" and not self._fitted:
                self.model.partial_fit(X, y, classes=self.info.classes)
            else:
                self.model.partial_fit(X, y)
        except ValueError as exc:
            if "overflow" in str(exc).lower() or "nan" in str(exc).lower():
                raise TrialDiverged(str(exc).splitlines()[0]) from exc
            raise
        self._fitted = True
        return loss

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        decision = self.decision(X)
        out = {"val_loss": self._loss_fn(self._targets(y), decision)}
        if self.info.task == "classification":
            out["accuracy"] = ml.accuracy(y, ml.classify(decision, self.info.classes))  # type: ignore[arg-type]
        else:
            out["rmse"] = ml.rmse(y, decision)
        if not all(np.isfinite(v) for v in out.values()):
            raise TrialDiverged(f"validation metrics are not finite: {out}")
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)

    @classmethod
    def row_losses(cls, served: Any, X: Any, y: np.ndarray, task: str) -> np.ndarray:
        """The training loss of each row (``val_loss`` is their mean) of a fitted serving pipeline on raw ``X``:
        its decision values are the model's on standardized inputs, as in training."""
        loss = _LOSS_FNS[cls.losses[task]]
        if task == "classification":
            decision, target = served.decision_function(X), ml.signed_targets(y, np.asarray(served.classes_))
        else:
            decision, target = served.predict(X), y
        decision = np.asarray(decision, dtype=float)
        return np.array([loss(target[i : i + 1], decision[i : i + 1]) for i in range(len(y))])

    def serialize(self) -> bytes:
        return pickle.dumps(self.model, protocol=pickle.HIGHEST_PROTOCOL)

    @property
    def estimator(self) -> Any:
        return self.model


@register_family
class SGDLinear(_SGDTrainer):
    """Linear regression with squared loss (a least-squares classifier on classification data)."""

    name = "sgd_linear"
    tasks = frozenset({"regression", "classification"})
    losses: ClassVar[dict[str, str]] = {"regression": "squared_error", "classification": "squared_error"}


@register_family
class SGDLogistic(_SGDTrainer):
    """Logistic regression (log loss); classification only."""

    name = "sgd_logistic"
    tasks = frozenset({"classification"})
    losses: ClassVar[dict[str, str]] = {"classification": "log_loss"}


@register_family
class SGDSVM(_SGDTrainer):
    """Linear SVM (hinge loss); linear SVR (epsilon-insensitive loss) on regression data."""

    name = "sgd_svm"
    tasks = frozenset({"regression", "classification"})
    losses: ClassVar[dict[str, str]] = {"classification": "hinge", "regression": "epsilon_insensitive"}
