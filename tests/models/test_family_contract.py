"""The contract every registered model family keeps (scikit-learn's ``parametrize_with_checks`` is the model):
a new family is one file, and this test checks it without being told about it."""

from __future__ import annotations

import numpy as np
import pytest

from perftune.errors import SpecError
from perftune.models import TaskInfo, get_family
from perftune.models.base import TrainingParams, family_names, validate_params

N_FEATURES = 16  # a square: image families read rows as 4×4 images


def synthetic(task: str, seed: int = 0, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """A learnable problem: three well-separated classes, or a linear target with a little noise."""
    rng = np.random.default_rng(seed)
    if task == "classification":
        y = rng.integers(0, 3, n)
        centers = rng.normal(0, 3, (3, N_FEATURES))
        return (centers[y] + rng.normal(0, 1, (n, N_FEATURES))).astype(np.float64), y
    X = rng.normal(0, 1, (n, N_FEATURES))
    return X, X @ rng.normal(0, 1, N_FEATURES) + rng.normal(0, 0.1, n)


def cases() -> list[tuple[str, str]]:
    return [(name, task) for name in family_names() for task in sorted(get_family(name).tasks)]


def trained(name: str, task: str, seed: int = 0):
    family = get_family(name)
    X, y = synthetic(task)
    params = validate_params(family, {"batch_size": 32, "epochs": 1, "learning_rate": 0.01})
    classes = np.unique(y) if task == "classification" else None
    trainer = family(params, TaskInfo(task, N_FEATURES, classes, threads=1), seed)
    losses = []
    for _ in range(8):
        for start in range(0, 480, 32):
            losses.append(trainer.step(X[start : start + 32], y[start : start + 32]))
    return trainer, X[480:], y[480:], losses


def test_every_family_is_registered_under_its_name():
    assert {"sgd_linear", "sgd_logistic", "sgd_svm", "torch_mlp", "torch_cnn"} <= set(family_names())
    for name in family_names():
        family = get_family(name)
        assert family.name == name and family.tasks <= {"classification", "regression"} and family.tasks
        assert issubclass(family.Params, TrainingParams)


@pytest.mark.parametrize("name", family_names())
def test_an_unknown_hyperparameter_is_a_one_line_error_naming_it(name):
    with pytest.raises(SpecError, match="no hyperparameter 'learnig_rate'"):
        validate_params(get_family(name), {"batch_size": 8, "learnig_rate": 0.1})


@pytest.mark.parametrize(("name", "task"), cases())
def test_a_family_learns_evaluates_predicts_and_serializes(name, task):
    trainer, X_val, y_val, losses = trained(name, task)
    assert all(isinstance(v, float) for v in losses) and np.isfinite(losses[-1])
    scores = trainer.evaluate(X_val, y_val)
    assert {"val_loss", "accuracy" if task == "classification" else "rmse"} <= set(scores)
    assert all(np.isfinite(v) for v in scores.values())
    predictions = trainer.predict(X_val)
    assert predictions.shape == (len(y_val),)
    if task == "classification":
        assert set(np.unique(predictions)) <= set(np.unique(y_val)) | {0, 1, 2}
        assert scores["accuracy"] > 0.8  # three separated classes: chance is 1/3
        assert np.mean(losses[-15:]) < np.mean(losses[1:16])  # training lowers the loss
    else:
        assert scores["rmse"] < np.std(y_val)  # better than predicting the mean
    blob = trainer.serialize()
    assert isinstance(blob, bytes) and len(blob) > 0 and trainer.estimator is not None


@pytest.mark.parametrize(("name", "task"), cases())
def test_the_same_seed_gives_the_same_model(name, task):
    first, X_val, _, _ = trained(name, task, seed=3)
    again, _, _, _ = trained(name, task, seed=3)
    np.testing.assert_array_equal(first.predict(X_val), again.predict(X_val))
