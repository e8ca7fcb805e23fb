"""A registered version loaded for serving: the model, its input schema (from the signature), a fast predict."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from perftune.errors import PerftuneError
from perftune.registry.catalog import ModelRegistry
from perftune.track.uri import mlflow_store

log = logging.getLogger("perftune.serve")


def v2_datatype(dtype: np.dtype) -> str:
    """The OIP datatype of a numpy array's dtype."""
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind in "iu":
        return f"{'U' if dtype.kind == 'u' else ''}INT{dtype.itemsize * 8}"
    if dtype.kind == "f":
        return f"FP{dtype.itemsize * 8}"
    return "BYTES"


@dataclass(frozen=True)
class InputSchema:
    """What a model takes, from its MLflow signature: named columns in order (``kind`` table); one ``text``
    column of strings (``kind`` text: raw articles, one per row); or images of ``shape`` H×W (``kind`` image),
    parsed to rows of H·W pixels."""

    names: list[str]
    types: list[str]  # MLflow column types
    kind: str = "table"
    shape: tuple[int, ...] = ()  # an image's height and width

    @property
    def n_features(self) -> int:
        return math.prod(self.shape) if self.kind == "image" else len(self.names)


def _schema(inputs: Any) -> InputSchema | None:
    """The input schema of a signature, or None when it is none perftune serves."""
    if inputs.has_input_names():
        columns = inputs.inputs
        schema = InputSchema([c.name for c in columns], [str(c.type.name) for c in columns])
        if schema.names == ["text"] and schema.types == ["string"]:
            return InputSchema(["text"], ["string"], kind="text")
        return schema
    tensors = inputs.inputs
    if len(tensors) == 1 and len(tensors[0].shape) == 3 and tensors[0].shape[0] == -1:
        height, width = tensors[0].shape[1:]
        return InputSchema(["image"], [str(tensors[0].type)], kind="image", shape=(int(height), int(width)))
    return None


@dataclass
class LoadedModel:
    """One version in memory. ``predict`` takes a validated float64 matrix in schema order."""

    name: str
    version: str
    model_uri: str
    schema: InputSchema
    output_datatype: str
    platform: str
    load_seconds: float
    _predict: Any
    explainer: Any = None  # per-row attributions (perftune.explain); None when the family has no explainer

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(X))


def _strip_feature_names(estimator: Any) -> Any:
    """A copy of a fitted scikit-learn estimator that takes plain arrays without a feature-name warning.

    The server checks names, order and types against the signature before predict, so the estimator's own
    check (and the pandas DataFrame it would need to pass it) is redundant on the hot path.
    """
    stripped = copy.deepcopy(estimator)
    steps = [step for _, step in getattr(stripped, "steps", [])] or [stripped]
    for step in steps:
        if "feature_names_in_" in vars(step):
            del step.feature_names_in_
    return stripped


def load_version(registry: ModelRegistry, reference: str) -> LoadedModel:
    """Load ``NAME@ALIAS`` or ``NAME/VERSION`` from the registry (archived versions are refused)."""
    import mlflow
    import pandas as pd

    version = registry.servable(reference)
    name, number = version.name, str(version.version)
    model_uri = f"models:/{name}/{number}"
    started = time.perf_counter()
    try:
        with mlflow_store(registry.tracking_uri):
            pyfunc = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # a missing or corrupt artifact: say which version and where
        raise PerftuneError(f"cannot load {name} v{number} from {version.source}: {exc}") from exc
    signature = pyfunc.metadata.signature
    schema = _schema(signature.inputs) if signature is not None and signature.inputs is not None else None
    if schema is None:
        raise PerftuneError(
            f"{name} v{number} has no input signature perftune serves (named columns, a text column, or N×H×W "
            "images); register it with perftune register"
        )
    flavors = pyfunc.metadata.flavors
    explainer = None
    if schema.kind != "table" and "sklearn" in flavors:  # texts and images: the pipeline's features step reads them
        pipeline = pyfunc.get_raw_model()
        platform = "sklearn"
        from perftune.explain.attributions import NotExplainable, explainer_for

        try:
            explainer = explainer_for(pipeline, schema.names, schema.kind)
        except NotExplainable as exc:
            log.info("%s v%s: %s", name, number, exc)
        predict = pipeline.predict  # its features step reads the parsed rows: N×1 texts, N×H·W pixels
    elif "sklearn" in flavors:
        raw = _strip_feature_names(pyfunc.get_raw_model())
        predict = raw.predict
        platform = "sklearn"
        from perftune.explain.attributions import NotExplainable, explainer_for

        try:
            explainer = explainer_for(raw, schema.names)
        except NotExplainable as exc:
            log.info("%s v%s: %s", name, number, exc)
    else:  # any other flavor goes through pyfunc with a named frame

        def predict(X: np.ndarray) -> Any:
            return pyfunc.predict(pd.DataFrame(X, columns=schema.names))

        platform = next(iter(k for k in flavors if k != "python_function"), "python_function")
    probe = predict(np.array([["a"]], dtype=object) if schema.kind == "text" else np.zeros((1, schema.n_features)))
    load_seconds = time.perf_counter() - started
    return LoadedModel(
        name,
        number,
        model_uri,
        schema,
        v2_datatype(np.asarray(probe).dtype),
        platform,
        load_seconds,
        predict,
        explainer,
    )
