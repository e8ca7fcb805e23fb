"""Champion and challenger on the same rows, side by side in one process: predictions for the paired
comparison, and the system metrics of each (latency, throughput, size, predict memory) measured alternately
on the same inputs, so machine noise falls on both alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from perftune.explain.importance import FeatureImportance


@dataclass
class SideBySide:
    champion: dict[str, float]
    challenger: dict[str, float]
    latency: str = ""  # the latency comparison: which is faster, or no measurable difference


def load(tracking_uri: str, name: str, version: str) -> Any:
    """A version's pipeline as it is served (a PyTorch network tagged for onnxruntime runs its ONNX file)."""
    import mlflow

    from perftune.track.uri import mlflow_store

    with mlflow_store(tracking_uri):
        pipeline = mlflow.sklearn.load_model(f"models:/{name}/{version}")
        found = mlflow.MlflowClient().get_model_version(name, version)
    if found.tags.get("perftune.runtime") == "onnxruntime":
        from perftune.serve.model import use_onnx

        use_onnx(pipeline, found, tracking_uri)
    return pipeline


def predict(model: Any, X: np.ndarray, columns: list[str]) -> np.ndarray:
    return np.asarray(model.predict(pd.DataFrame(X, columns=columns)))


def measure(champion: Any, challenger: Any, X: np.ndarray, columns: list[str], latency_rows: int = 200,
            throughput_batch: int = 1024) -> SideBySide:  # fmt: skip
    """System metrics of both on the same rows, in interleaved rounds (:class:`~perftune.measure.inference.
    InferenceMeter`: CPU waits left out, a 95 % interval of each p95), plus each one's predict memory; ``latency``
    says which is faster, or that there is no measurable difference."""
    import cloudpickle

    from perftune.measure.inference import Candidate, InferenceMeter, compare
    from perftune.measure.probe import Probe

    models = {"champion": champion, "challenger": challenger}
    memory = {}
    for who, model in models.items():
        probe = Probe()
        model.predict(pd.DataFrame(X[:throughput_batch], columns=columns))
        memory[who] = probe.sample().memory_mb_peak
        probe.close()
    candidates = {
        who: Candidate(lambda rows, m=model: m.predict(pd.DataFrame(rows, columns=columns)),
                       lambda m=model: cloudpickle.dumps(m))
        for who, model in models.items()
    }  # fmt: skip
    meter = InferenceMeter(candidates, X, latency_rows=latency_rows, throughput_batch=throughput_batch).run()
    metrics = {who: {**meter.metrics(who), "predict_memory_mb": memory[who]} for who in models}
    meter.close()
    latency = compare("challenger", metrics["challenger"], "champion", metrics["champion"]).message()
    return SideBySide(metrics["champion"], metrics["challenger"], latency)


def importance_change(before: list[FeatureImportance] | None, after: list[FeatureImportance] | None,
                      top: int = 5) -> dict[str, Any] | None:  # fmt: skip
    """How the global importance moved between champion and challenger (ranks and values per feature)."""
    if not before or not after:
        return None
    rank_a = {f.feature: i + 1 for i, f in enumerate(before)}
    rank_b = {f.feature: i + 1 for i, f in enumerate(after)}
    value_a = {f.feature: f.mean for f in before}
    value_b = {f.feature: f.mean for f in after}
    features = [f.feature for f in after[:top]] + [f.feature for f in before[:top] if f.feature not in rank_b or
                                                   rank_b[f.feature] > top]  # fmt: skip
    rows = [
        {"feature": name, "champion_rank": rank_a.get(name), "challenger_rank": rank_b.get(name),
         "champion": value_a.get(name), "challenger": value_b.get(name)}
        for name in features
    ]  # fmt: skip
    return {
        "champion_top": [f.feature for f in before[:top]],
        "challenger_top": [f.feature for f in after[:top]],
        "features": rows,
    }


def describe_importance(change: dict[str, Any] | None) -> str:
    if change is None:
        return "importance: not stored for one of the versions"
    moved = [r for r in change["features"] if r["champion_rank"] != r["challenger_rank"]]
    shifts = ", ".join(f"{r['feature']} {_rank(r['champion_rank'])}→{_rank(r['challenger_rank'])}" for r in moved[:5])
    return (
        f"importance: top features {', '.join(change['champion_top'][:3])} → "
        f"{', '.join(change['challenger_top'][:3])}" + (f" ({shifts})" if shifts else " (same order)")
    )


def _rank(rank: int | None) -> str:
    return f"#{rank}" if rank is not None else "unranked"  # a feature the other version's importance lacks
