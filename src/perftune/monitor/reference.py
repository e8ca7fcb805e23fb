"""The reference profile of a registered version: built at registration, stored with it, found again later.

:func:`build_profile` runs inside ``perftune register`` (the training split is in memory then) and the result is
logged as the artifact ``monitor/profile.json`` of the version's run. :func:`load_profile` reads it back; a
version registered before monitoring existed has none, and gets it on first use from its refit recipe (the
``perftune.refit`` tag: the same data, split, seed and configuration), or with ``perftune profile REF``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from perftune.errors import PerftuneError
from perftune.measure.ml import class_key
from perftune.monitor.performance import fit_calibration
from perftune.monitor.profile import CATEGORICAL, NUMERIC, ColumnProfile, ReferenceProfile
from perftune.spec import MonitorSpec
from perftune.track.artifacts import read_json_artifact

log = logging.getLogger("perftune.monitor")

PROFILE_ARTIFACT = "monitor/profile.json"
SERVED_METRICS = ("latency_ms_p50", "latency_ms_p95", "error_rate")  # budgets a served model is checked against


def build_profile(
    pipeline: Any,
    X_train: np.ndarray,
    feature_names: list[str],
    test_frame: pd.DataFrame,
    y_test: np.ndarray,
    task: str,
    test_metrics: dict[str, float],
    settings: MonitorSpec | None = None,
    budgets: dict[str, float] | None = None,
) -> ReferenceProfile:
    """The profile of a fitted serving ``pipeline`` from its training split and its held-out test split."""
    settings = settings or MonitorSpec()
    unknown = sorted(set(settings.categorical + settings.numeric) - set(feature_names))
    if unknown:
        raise PerftuneError(f"monitor: columns {unknown} are not features of this model; features: {feature_names}")
    declared = {**{c: NUMERIC for c in settings.numeric}, **{c: CATEGORICAL for c in settings.categorical}}
    columns = [ColumnProfile.build(name, X_train[:, j], declared.get(name)) for j, name in enumerate(feature_names)]
    train_predictions = np.asarray(pipeline.predict(pd.DataFrame(X_train, columns=feature_names)), dtype=np.float64)
    kind = CATEGORICAL if task == "classification" else None
    prediction = ColumnProfile.build("prediction", train_predictions, kind=kind)
    calibration = classes = None
    if task == "classification":
        classes = [float(c) for c in getattr(pipeline, "classes_", [])]
        if hasattr(pipeline, "predict_proba"):  # a hinge-loss SVM has none: its performance is not estimable
            calibration = fit_calibration(pipeline.predict_proba(test_frame), np.asarray(y_test), pipeline.classes_)
    return ReferenceProfile(
        columns,
        prediction,
        task,
        int(X_train.shape[0]),
        {k: float(v) for k, v in test_metrics.items() if np.isfinite(v)},
        calibration,
        classes,
        test_metrics.get("latency_ms_p95"),
        settings.model_dump(mode="json"),
        dict(budgets or {}),
    )


def build_derived_profile(
    pipeline: Any,
    raw: Any,
    y: np.ndarray,
    inputs: str,
    task: str,
    test_metrics: dict[str, float],
    settings: MonitorSpec | None = None,
    budgets: dict[str, float] | None = None,
) -> ReferenceProfile:
    """The profile of a text or image model from raw inputs ``raw`` (the held-out split, which the vocabulary never
    saw, as it never sees served texts): its columns are what the pipeline's features step derives per row
    (``monitor_features``: lengths and out-of-vocabulary rate, pixel statistics), its prediction column the index
    of the predicted class; the drift tests and CBPE (calibrated on the labels ``y``) then apply unchanged."""
    settings = settings or MonitorSpec()
    features = pipeline.steps[0][1]
    derived = features.monitor_features(raw)
    columns = [ColumnProfile.build(name, derived[:, j]) for j, name in enumerate(features.monitor_names)]
    names = [class_key(c) for c in pipeline.classes_]
    index = class_index(pipeline.predict(raw), names)
    # CBPE on class indices: the served probabilities' columns are the classes in this order
    calibration = fit_calibration(pipeline.predict_proba(raw), class_index(y, names), np.arange(len(names)))
    return ReferenceProfile(
        columns,
        ColumnProfile.build("prediction", index, kind=CATEGORICAL),
        task,
        len(derived),
        {k: float(v) for k, v in test_metrics.items() if np.isfinite(v)},
        calibration,
        [float(i) for i in range(len(names))],
        test_metrics.get("latency_ms_p95"),
        settings.model_dump(mode="json"),
        dict(budgets or {}),
        inputs=inputs,
        class_names=names,
    )


def class_index(predictions: Any, class_names: list[str]) -> np.ndarray:
    """Predicted classes as their index in ``class_names`` (float; an unknown class is NaN, counted missing)."""
    position = {name: float(i) for i, name in enumerate(class_names)}
    keys = map(class_key, np.asarray(predictions).reshape(-1))
    return np.array([position.get(key, np.nan) for key in keys], dtype=np.float64)


def budgets_of(constraints: list[Any]) -> dict[str, float]:
    """The spec's ``<=`` constraints on metrics a served model has (latency, error rate)."""
    return {c.metric: float(c.bound) for c in constraints if c.op == "<=" and c.metric in SERVED_METRICS}


def log_profile(client: Any, run_id: str, profile: ReferenceProfile) -> None:
    client.log_dict(run_id, profile.to_dict(), PROFILE_ARTIFACT)


def load_profile(client: Any, version: Any) -> ReferenceProfile | None:
    """The stored profile of ``version`` (None when it was registered before monitoring existed)."""
    raw = read_json_artifact(client, version.run_id, PROFILE_ARTIFACT)
    return ReferenceProfile.from_dict(raw) if raw is not None else None


def profile_from_recipe(client: Any, version: Any) -> ReferenceProfile:
    """Rebuild ``version``'s profile from its refit recipe (same data, split and configuration) and store it."""
    from perftune.registry.register import refit_version

    log.warning("%s v%s has no reference profile (registered before monitoring); building it from its refit "
                "recipe", version.name, version.version)  # fmt: skip
    profile = refit_version(version, "its reference profile").profile(MonitorSpec())
    log_profile(client, version.run_id, profile)
    return profile
