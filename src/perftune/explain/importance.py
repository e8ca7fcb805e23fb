"""Global importance of each feature: permutation importance on the held-out test split.

Computed at ``perftune register`` with ``sklearn.inspection.permutation_importance`` (the drop of the version's
test metric — accuracy, or RMSE — when one feature's column is shuffled, ``n_repeats`` times) and stored with
the version (artifact ``explain/importance.json``), so every version carries it and two versions can be compared.
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


def to_json(importances: list[FeatureImportance], task: str) -> dict[str, Any]:
    metric = "accuracy" if task == "classification" else "rmse"
    return {"method": "permutation importance on the test split", "metric": metric,
            "features": [asdict(f) for f in importances]}  # fmt: skip


def from_json(raw: dict[str, Any]) -> list[FeatureImportance]:
    return [FeatureImportance(**f) for f in raw["features"]]


def log_importance(client: Any, run_id: str, importances: list[FeatureImportance], task: str) -> None:
    client.log_dict(run_id, to_json(importances, task), IMPORTANCE_ARTIFACT)


def load_importance(client: Any, version: Any) -> list[FeatureImportance] | None:
    """The stored importance of ``version`` (None for versions registered before explanations existed)."""
    raw = read_json_artifact(client, version.run_id, IMPORTANCE_ARTIFACT)
    return from_json(raw) if raw is not None else None
