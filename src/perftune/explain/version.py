"""``perftune explain NAME VERSION``: a version's global importance and the attributions of its latest rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from perftune.explain.attributions import Attributions, explainer_for
from perftune.explain.importance import FeatureImportance, load_importance, log_importance, permutation_importance

log = logging.getLogger("perftune.explain")


@dataclass
class Explanation:
    name: str
    version: str
    importance: list[FeatureImportance]
    attributions: Attributions | None  # None: no scored rows yet
    rows_note: str


def _importance_from_recipe(client: Any, version: Any) -> list[FeatureImportance]:
    """For a version registered before explanations existed: refit from its recipe, compute, store."""
    from perftune.registry.register import refit_version

    log.warning("%s v%s has no stored importance; computing it from its refit recipe", version.name, version.version)
    refitted = refit_version(version, "its importance")
    task = refitted.dataset.task
    importance = permutation_importance(
        refitted.pipeline, refitted.frame, refitted.dataset.y[refitted.test], task, refitted.plan.seed
    )
    log_importance(client, version.run_id, importance, task)
    return importance


def explain_version(registry: Any, scoring_uri: str, name: str, number: str, rows: int) -> Explanation:
    import mlflow

    from perftune.monitor import window as windows
    from perftune.serve.scoring import scoring_engine
    from perftune.track.uri import mlflow_store

    version = registry.version(name, number)
    client = registry.client
    importance = load_importance(client, version) or _importance_from_recipe(client, version)
    with mlflow_store(registry.tracking_uri):
        served = mlflow.sklearn.load_model(f"models:/{name}/{version.version}")
    names = [str(c) for c in getattr(served, "feature_names_in_", [f.feature for f in importance])]
    engine = scoring_engine(scoring_uri)
    try:
        bounds = windows.bounds(engine, name, str(version.version), "rows", rows)
        chunks = list(windows.chunks(engine, name, str(version.version), bounds))
    finally:
        engine.dispose()
    if not chunks:
        return Explanation(name, str(version.version), importance, None, "no scored rows of this version yet")
    X = np.concatenate([c.X for c in chunks])[-rows:]
    attributions = explainer_for(served, names).explain(X)
    return Explanation(name, str(version.version), importance, attributions, f"the latest {len(X)} scored rows")
