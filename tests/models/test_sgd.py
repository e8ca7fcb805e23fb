from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, hinge_loss, log_loss

from perftune.data import load_dataset, prepare
from perftune.errors import SpecError
from perftune.models import TaskInfo, get_family
from perftune.models.base import TrialDiverged, validate_params
from perftune.spec import DatasetSpec, EvaluationSpec


@pytest.fixture(scope="module")
def diabetes():
    return prepare(load_dataset(DatasetSpec(name="diabetes")), EvaluationSpec(), seed=0)


def train(family_name, data, **params):
    family = get_family(family_name)
    trainer = family(
        validate_params(family, {"batch_size": 32, "learning_rate": 0.01, **params}),
        TaskInfo(data.task, data.n_features, data.classes),
        seed=0,
    )
    fold = data.folds[0]
    for start in range(0, len(fold.y_train), 32):
        trainer.step(fold.X_train[start : start + 32], fold.y_train[start : start + 32])
    return trainer, fold


def test_logistic_metrics_match_scikit_learn(diabetes):
    trainer, fold = train("sgd_logistic", diabetes)
    scores = trainer.evaluate(fold.X_val, fold.y_val)
    assert scores["accuracy"] == pytest.approx(accuracy_score(fold.y_val, trainer.predict(fold.X_val)))
    # log loss of the decision function equals scikit-learn's on sigmoid probabilities
    proba = 1 / (1 + np.exp(-trainer.model.decision_function(fold.X_val)))
    assert scores["val_loss"] == pytest.approx(log_loss(fold.y_val, proba), rel=1e-6)
    assert 0.6 < scores["accuracy"] < 0.9


def test_svm_hinge_matches_scikit_learn(diabetes):
    trainer, fold = train("sgd_svm", diabetes)
    scores = trainer.evaluate(fold.X_val, fold.y_val)
    assert scores["val_loss"] == pytest.approx(hinge_loss(fold.y_val, trainer.model.decision_function(fold.X_val)))


def test_serialization_round_trips(diabetes):
    trainer, fold = train("sgd_linear", diabetes)
    restored = pickle.loads(trainer.serialize())
    assert np.array_equal(restored.predict(fold.X_val), trainer.predict(fold.X_val))


def test_bad_hyperparameters_are_named():
    family = get_family("sgd_svm")
    with pytest.raises(SpecError, match=r"sgd_svm: learning_rate=-1"):
        validate_params(family, {"batch_size": 8, "learning_rate": -1})
    with pytest.raises(SpecError, match="sgd_svm has no hyperparameter 'momentum'"):
        validate_params(family, {"batch_size": 8, "learning_rate": 0.1, "momentum": 0.9})
    with pytest.raises(SpecError, match="unknown model family 'sgd_lineer' \\(did you mean 'sgd_linear'\\?\\)"):
        get_family("sgd_lineer")


def test_divergence_is_detected():
    # values whose squares overflow float64: the loss becomes inf (sklearn clips gradients, not inputs)
    X = np.full((64, 3), 1e200)
    y = np.full(64, 1e200)
    family = get_family("sgd_linear")
    trainer = family(
        validate_params(family, {"batch_size": 8, "learning_rate": 10.0}), TaskInfo("regression", 3), seed=0
    )
    with pytest.raises(TrialDiverged):
        for start in range(0, 64, 8):
            trainer.step(X[start : start + 8], y[start : start + 8])
