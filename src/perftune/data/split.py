"""Holdout split, cross-validation folds and per-fold standardization.

The test part (``test_fraction``, 30 % by default) is set aside and never seen during tuning. Tuning uses
the training part: ``cv_folds`` ≥ 2 gives k-fold CV (stratified for classification), 1 gives a single
validation split. Each fold is standardized with statistics of its own training rows only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from perftune.data.dataset import Dataset
from perftune.spec import EvaluationSpec


@dataclass
class Fold:
    """Standardized training and validation arrays of one fold."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    w_train: np.ndarray | None = None  # sample weights of the training rows; None: all equal


@dataclass
class PreparedData:
    """What every trial of a dataset needs; put into Ray's object store once per study."""

    name: str
    task: str
    classes: np.ndarray | None
    n_features: int
    folds: list[Fold]
    train_index: np.ndarray
    test_index: np.ndarray

    @property
    def n_train_fold(self) -> int:
        """Rows in the smallest training fold: the largest batch that fits in one step."""
        return min(len(f.y_train) for f in self.folds)


def _can_stratify(y: np.ndarray, parts: int) -> bool:
    return int(np.min(np.unique(y, return_counts=True)[1])) >= parts


def holdout_split(dataset: Dataset, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and the held-out test part (stratified for classification); data that comes
    split (``dataset.test_rows``) keeps its own test part."""
    index = np.arange(dataset.n_rows)
    if dataset.test_rows is not None:
        return np.setdiff1d(index, dataset.test_rows), np.sort(dataset.test_rows)
    stratify = dataset.y if dataset.task == "classification" and _can_stratify(dataset.y, 2) else None
    train, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(test)


def fold_indices(
    y: np.ndarray, task: str, evaluation: EvaluationSpec, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) positions within the training part, one pair per fold."""
    index = np.arange(len(y))
    if evaluation.cv_folds >= 2:
        stratified = task == "classification" and _can_stratify(y, evaluation.cv_folds)
        splitter = (StratifiedKFold if stratified else KFold)(evaluation.cv_folds, shuffle=True, random_state=seed)
        return list(splitter.split(index, y if stratified else None))
    stratify = y if task == "classification" and _can_stratify(y, 2) else None
    train, val = train_test_split(index, test_size=evaluation.validation_fraction, random_state=seed, stratify=stratify)
    return [(train, val)]


def weighted_draw(rows: np.ndarray, weights: np.ndarray | None, seed: int) -> np.ndarray:
    """``rows`` as they are without weights; with them, as many rows drawn with replacement in proportion to their
    weights (seeded, sorted): metrics on the draw estimate the weighted metrics, for every family alike."""
    if weights is None or len(rows) == 0:
        return rows
    w = weights[rows]
    drawn = np.random.default_rng(seed).choice(rows, size=len(rows), replace=True, p=w / w.sum())
    return np.sort(drawn)


def standardize(X_train: np.ndarray, X_other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale with the training rows' mean and standard deviation only (no leakage)."""
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_other)


def prepare(dataset: Dataset, evaluation: EvaluationSpec, seed: int) -> PreparedData:
    """Split off the test part and build the standardized folds used for tuning."""
    train_index, test_index = holdout_split(dataset, evaluation.test_fraction, seed)
    X, y = dataset.X[train_index], dataset.y[train_index]
    w = dataset.weights[train_index] if dataset.weights is not None else None
    folds = []
    for fit_rows, val_rows in fold_indices(y, dataset.task, evaluation, seed):
        val_rows = weighted_draw(val_rows, w, seed)  # validation ranks trials on the weighted world too
        if dataset.scaled:
            X_fit, X_val = X[fit_rows], X[val_rows]
        else:
            X_fit, X_val = standardize(X[fit_rows], X[val_rows])
        folds.append(Fold(X_fit, y[fit_rows], X_val, y[val_rows], w[fit_rows] if w is not None else None))
    return PreparedData(
        name=dataset.name,
        task=dataset.task,
        classes=dataset.classes,
        n_features=dataset.n_features,
        folds=folds,
        train_index=train_index,
        test_index=test_index,
    )
