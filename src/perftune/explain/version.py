"""``perftune explain NAME VERSION``: a version's global importance and the attributions of its latest rows
(tables: permutation importance and exact linear attributions; texts and images: integrated gradients)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from perftune.explain.attributions import Attributions, NotExplainable, explainer_for
from perftune.explain.importance import PERMUTATION, FeatureImportance, Method, log_importance, read_importance

log = logging.getLogger("perftune.explain")


@dataclass
class Explanation:
    name: str
    version: str
    importance: list[FeatureImportance]
    attributions: Attributions | None  # None: no scored rows yet
    rows_note: str
    method: Method = PERMUTATION  # how the importance was measured
    inputs: str = "table"  # what the version is served: table, text or image rows

    SHOWN: ClassVar[int] = 20  # features listed for texts and images (hundreds of terms or pixels)

    @property
    def shown_importance(self) -> list[FeatureImportance]:
        """What a table or chart lists: every column of a table; a text's or an image's strongest features."""
        return self.importance if self.inputs == "table" else self.importance[: self.SHOWN]

    def strongest(self, row: int, top: int = 5) -> list[tuple[str, float]]:
        """The ``top`` features that moved row ``row`` most (either sign), strongest first."""
        assert self.attributions is not None
        values = self.attributions.values[row]
        return [(self.attributions.feature_names[j], float(values[j])) for j in np.argsort(-np.abs(values))[:top]]


def _importance_from_recipe(client: Any, version: Any) -> tuple[list[FeatureImportance], Method]:
    """For a version registered before explanations existed: refit from its recipe, compute, store."""
    from perftune.registry.register import refit_version

    log.warning("%s v%s has no stored importance; computing it from its refit recipe", version.name, version.version)
    refitted = refit_version(version, "its importance")
    found = refitted.importance()
    log_importance(client, version.run_id, found[0], refitted.dataset.task, found[1])
    return found


def explain_version(registry: Any, scoring_uri: str, name: str, number: str, rows: int) -> Explanation:
    import mlflow

    from perftune.monitor import window as windows
    from perftune.serve.scoring import scoring_engine
    from perftune.track.uri import mlflow_store

    version = registry.version(name, number)
    client = registry.client
    inputs = version.tags.get("perftune.inputs", "table").replace("images", "image")
    with mlflow_store(registry.tracking_uri):
        served = mlflow.sklearn.load_model(f"models:/{name}/{version.version}")
    stored = read_importance(client, version)
    names = [str(c) for c in getattr(served, "feature_names_in_", [f.feature for f in stored[0]] if stored else [])]
    try:
        explainer, unexplained = explainer_for(served, names, inputs), ""
    except NotExplainable as exc:  # the global importance still applies
        explainer, unexplained = None, str(exc)
    importance, method = stored or _importance_from_recipe(client, version)
    number = str(version.version)
    if explainer is None:
        return Explanation(name, number, importance, None, f"no per-row attributions: {unexplained}", method, inputs)
    engine = scoring_engine(scoring_uri)
    try:
        bounds = windows.bounds(engine, name, number, "rows", rows)
        chunks = list(windows.chunks(engine, name, number, bounds))
    finally:
        engine.dispose()
    if not chunks:
        return Explanation(name, number, importance, None, "no scored rows of this version yet", method, inputs)
    X = np.concatenate([c.X for c in chunks])[-rows:]
    return Explanation(
        name, number, importance, explainer.explain(X), f"the latest {len(X)} scored rows", method, inputs
    )
