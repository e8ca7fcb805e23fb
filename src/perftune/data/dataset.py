"""A loaded, validated dataset: numeric features, a target, a task and a content fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from perftune.errors import DatasetError

# A target with at most this many distinct integer values is taken as class labels.
MAX_INFERRED_CLASSES = 50


@dataclass
class Dataset:
    """Features ``X`` (float64) and target ``y`` of one dataset, ready to split."""

    name: str
    source: str
    location: str
    task: str
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target: str
    fingerprint: str
    classes: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    version: str | None = None  # the data store's version (store: datasets)
    weights: np.ndarray | None = None  # per-row sample weights (training draws rows in proportion to them)
    test_rows: np.ndarray | None = None  # the held-out test rows when the data comes split (else drawn)
    scaled: bool = False  # features already share one scale (pixels, TF-IDF): no per-fold standardization
    transform: dict[str, object] | None = None  # how text/image rows became features (kind, options, cache)
    raw_inputs: np.ndarray | None = None  # the rows as served (texts N×1, images N×H×W) when features are derived

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def card(self) -> dict[str, object]:
        """What lineage and reports show about the dataset."""
        card: dict[str, object] = {
            "name": self.name,
            "source": self.source,
            "location": self.location,
            "task": self.task,
            "rows": self.n_rows,
            "features": self.n_features,
            "target": self.target,
            "fingerprint": self.fingerprint,
        }
        if self.version:
            card["version"] = self.version
        if self.classes is not None:
            card["classes"] = len(self.classes)
        if self.transform:
            card["transform"] = self.transform
        return card


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """sha256 over column names, dtypes and values, in order: same content → same fingerprint."""
    digest = hashlib.sha256()
    for name in frame.columns:
        column = frame[name]
        digest.update(f"{name}\x00{column.dtype}\x00".encode())
        values = column.to_numpy()
        if values.dtype == object and len(values) and isinstance(values[0], bytes):  # e.g. images
            digest.update(np.array([len(v) for v in values], dtype=np.int64).tobytes() + b"".join(values))
        elif values.dtype == object:
            digest.update("\x1f".join(map(str, values)).encode())
        else:
            digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def infer_task(y: pd.Series) -> str:
    """Classification for text labels or few distinct integer values; regression otherwise."""
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    values = y.to_numpy(dtype=float)
    if np.all(np.mod(values, 1) == 0) and y.nunique() <= MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


def dataset_from_frame(
    frame: pd.DataFrame,
    *,
    name: str,
    source: str,
    location: str,
    target: str,
    task: str | None = None,
    sample: int | None = None,
    seed: int = 0,
    version: str | None = None,
    weight: str | None = None,
) -> Dataset:
    """Validate a raw table and turn it into a :class:`Dataset`.

    The fingerprint is taken over the table as read (before sampling), so it identifies the source data.
    ``weight`` names a column of non-negative per-row sample weights; it is not a feature.
    """
    where = f"dataset {name!r} ({location})"
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DatasetError(f"{where} is empty: it has {frame.shape[0]} rows and {frame.shape[1]} columns")
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns[:30])) + (" …" if frame.shape[1] > 30 else "")
        raise DatasetError(
            f"{where} has no target column {target!r}; its columns are: {columns}. "
            "Set 'target' in the dataset's spec entry"
        )
    weights = _weights(frame, weight, where) if weight else None
    features = frame.drop(columns=[target] + ([weight] if weight else []))
    if features.shape[1] == 0:
        raise DatasetError(f"{where} has only the target column {target!r}; it needs at least one feature")
    non_numeric = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise DatasetError(
            f"{where} has non-numeric feature columns: {', '.join(non_numeric[:10])}; "
            "encode them as numbers or drop them before tuning"
        )
    missing = features.columns[features.isna().any()].tolist() + ([target] if frame[target].isna().any() else [])
    if missing:
        raise DatasetError(
            f"{where} has missing values in: {', '.join(map(str, missing[:10]))}; fill or drop them before tuning"
        )
    fingerprint = fingerprint_frame(frame)
    y_series = frame[target]
    resolved_task = task or infer_task(y_series)
    if resolved_task == "regression" and not pd.api.types.is_numeric_dtype(y_series):
        raise DatasetError(f"{where}: task is regression but target {target!r} is not numeric")
    X = features.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(X)):
        raise DatasetError(f"{where} has infinite feature values; clean them before tuning")
    y = y_series.to_numpy()
    classes = None
    if resolved_task == "classification":
        classes = np.unique(y)
        if len(classes) < 2:
            raise DatasetError(f"{where}: classification needs at least 2 classes in {target!r}, found {len(classes)}")
    else:
        y = y.astype(np.float64)
    notes: list[str] = []
    if sample is not None and sample < len(y):
        rows = _subsample(y, sample, seed, stratify=resolved_task == "classification")
        X, y = X[rows], y[rows]
        weights = weights[rows] if weights is not None else None
        notes.append(f"random subsample of {sample} of {frame.shape[0]} rows (seed {seed})")
    return Dataset(
        name=name,
        source=source,
        location=location,
        task=resolved_task,
        X=np.ascontiguousarray(X),
        y=y,
        feature_names=[str(c) for c in features.columns],
        target=target,
        fingerprint=fingerprint,
        classes=classes,
        notes=notes,
        version=version,
        weights=weights,
    )


def _weights(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    if column not in frame.columns:
        raise DatasetError(f"{where} has no weight column {column!r}")
    weights = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not np.any(weights > 0):
        raise DatasetError(f"{where}: weight column {column!r} must hold finite values >= 0, not all 0")
    return weights


def _subsample(y: np.ndarray, n: int, seed: int, stratify: bool) -> np.ndarray:
    """Positions of a random subsample of ``n`` rows (stratified when it can be)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    labels = y if stratify and np.min(np.unique(y, return_counts=True)[1]) >= 2 else None
    try:
        return train_test_split(index, train_size=n, random_state=seed, stratify=labels)[0]
    except ValueError:  # a class too small to stratify at this size
        return train_test_split(index, train_size=n, random_state=seed)[0]
