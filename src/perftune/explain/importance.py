"""Global importance of each feature, computed at ``perftune register`` on the held-out test split and stored with
the version (artifact ``explain/importance.json``), so every version carries it and two versions can be compared.

* Tables: permutation importance (``sklearn.inspection.permutation_importance``): the drop of the version's test
  metric — accuracy, or RMSE — when one feature's column is shuffled, ``n_repeats`` times.
* Texts and images (a features step, then a PyTorch network): shuffling one of hundreds of terms or pixels
  moves nothing measurable, and costs a prediction pass per feature and repeat. Their importance is the mean
  absolute integrated-gradients attribution (Captum, :mod:`perftune.explain.attributions`) of each input
  feature — a term, a pixel — over a seeded sample of test rows: a global summary of the per-row explanations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from perftune.track.artifacts import read_json_artifact

IMPORTANCE_ARTIFACT = "explain/importance.json"


@dataclass(frozen=True)
class FeatureImportance:
    feature: str
    mean: float  # mean drop of the score when the feature is shuffled
    std: float


def permutation_importance(
    served: Any, frame: pd.DataFrame, y: np.ndarray, task: str, seed: int = 0, n_repeats: int = 10
) -> list[FeatureImportance]:
    """Importance of each column of ``frame`` for the fitted serving pipeline, most important first."""
    from sklearn import inspection

    scoring = "accuracy" if task == "classification" else "neg_root_mean_squared_error"
    result = inspection.permutation_importance(
        served, frame, y, scoring=scoring, n_repeats=n_repeats, random_state=seed, n_jobs=1
    )
    ranked = sorted(
        (FeatureImportance(str(name), float(m), float(s)) for name, m, s in
         zip(frame.columns, result.importances_mean, result.importances_std, strict=True)),
        key=lambda f: -f.mean,
    )  # fmt: skip
    return ranked


@dataclass(frozen=True)
class Method:
    """How an importance was measured: what a reader is told, and the heading of its numbers."""

    description: str
    measure: str


PERMUTATION = Method("permutation importance on the test split", "score drop")
ATTRIBUTION_ROWS = 200  # test rows whose attributions are averaged (integrated gradients cost ~32 passes a row)


def attribution_method(rows: int) -> Method:
    return Method(
        f"mean |integrated gradients| (Captum) over {rows} test rows, per input feature", "mean |attribution|"
    )


def attribution_importance(
    served: Any, X: Any, kind: str, seed: int = 0, rows: int = ATTRIBUTION_ROWS, batch: int = 50
) -> tuple[list[FeatureImportance], Method]:
    """Mean and spread of each input feature's absolute attribution over a seeded sample of ``rows`` rows of
    ``X`` (raw texts N×1 or images), most important first."""
    from perftune.explain.attributions import IntegratedGradientsExplainer

    explainer = IntegratedGradientsExplainer(served, kind)  # raises NotExplainable for a quantized network
    X = np.asarray(X, dtype=object) if kind == "text" else np.asarray(X)
    chosen = np.sort(np.random.default_rng(seed).permutation(len(X))[:rows])
    values = np.concatenate([np.abs(explainer.explain(X[chosen[i : i + batch]]).values)
                             for i in range(0, len(chosen), batch)])  # fmt: skip
    ranked = sorted(
        (FeatureImportance(name, float(m), float(s)) for name, m, s in
         zip(explainer.feature_names, values.mean(axis=0), values.std(axis=0), strict=True)),
        key=lambda f: -f.mean,
    )  # fmt: skip
    return ranked, attribution_method(len(chosen))


def to_json(importances: list[FeatureImportance], task: str, method: Method = PERMUTATION) -> dict[str, Any]:
    metric = "accuracy" if task == "classification" else "rmse"
    return {"method": method.description, "measure": method.measure, "metric": metric,
            "features": [asdict(f) for f in importances]}  # fmt: skip


def from_json(raw: dict[str, Any]) -> list[FeatureImportance]:
    return [FeatureImportance(**f) for f in raw["features"]]


def log_importance(
    client: Any, run_id: str, importances: list[FeatureImportance], task: str, method: Method = PERMUTATION
) -> None:
    client.log_dict(run_id, to_json(importances, task, method), IMPORTANCE_ARTIFACT)


def read_importance(client: Any, version: Any) -> tuple[list[FeatureImportance], Method] | None:
    """The stored importance of ``version`` and how it was measured (None for versions registered before
    explanations existed)."""
    raw = read_json_artifact(client, version.run_id, IMPORTANCE_ARTIFACT)
    if raw is None:
        return None
    return from_json(raw), Method(raw.get("method", PERMUTATION.description), raw.get("measure", PERMUTATION.measure))


def load_importance(client: Any, version: Any) -> list[FeatureImportance] | None:
    """The stored importance of ``version`` (None for versions registered before explanations existed)."""
    found = read_importance(client, version)
    return found[0] if found is not None else None
