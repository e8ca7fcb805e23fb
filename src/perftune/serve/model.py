"""A registered version loaded for serving: the model, its input schema (from the signature), a fast predict.

A version is loaded under the server's thread setting (:class:`~perftune.measure.threads.ThreadLimit`): it is
applied again once the model is unpickled — which imports torch for a PyTorch model — so torch's pool and an
onnxruntime session run on the same number of threads as BLAS and OpenMP. The setting the version was measured
with (its ``perftune.threads`` tag) is kept beside it.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from perftune.errors import PerftuneError
from perftune.measure.ml import class_key
from perftune.measure.threads import THREADS_TAG, ThreadLimit, threads_text
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
    unexplained: str = "no explainer for its model family yet"  # why ``explainer`` is None
    classes: list[str] | None = None  # a classifier's classes by name (feedback labels must be one of them)
    threads: int | None = None  # threads its runtimes run on here (None: not pinned)
    measured_threads: int | None = None  # threads its registration measured it with (None: not recorded)

    def threads_note(self) -> str | None:
        """One line when it is served on another thread setting than it was measured with, else None."""
        if self.threads is None or self.measured_threads is None or self.threads == self.measured_threads:
            return None
        served, measured = threads_text(self.threads), threads_text(self.measured_threads)
        return (
            f"serving with {served}; v{self.version} was measured with {measured}"
            " (its registered latency does not describe this server; --threads sets it)"
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(X))


def measured_threads(tags: dict[str, str]) -> int | None:
    """The ``perftune.threads`` tag of a version as a number (None: absent or not a positive whole number)."""
    raw = tags.get(THREADS_TAG, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


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


def load_version(registry: ModelRegistry, reference: str, threads: ThreadLimit | None = None) -> LoadedModel:
    """Load ``NAME@ALIAS`` or ``NAME/VERSION`` from the registry (archived versions are refused), its runtimes on
    ``threads`` (None: as the process has them)."""
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
    if threads is not None:
        threads.apply()  # again: unpickling may have loaded torch or another BLAS since the server pinned them
    signature = pyfunc.metadata.signature
    schema = _schema(signature.inputs) if signature is not None and signature.inputs is not None else None
    if schema is None:
        raise PerftuneError(
            f"{name} v{number} has no input signature perftune serves (named columns, a text column, or N×H×W "
            "images); register it with perftune register"
        )
    flavors = pyfunc.metadata.flavors
    explainer, unexplained, classes = None, "no explainer for its model family yet", None
    if "sklearn" in flavors:
        from perftune.explain.attributions import NotExplainable, explainer_for

        platform = "sklearn"
        # texts and images: the pipeline's features step reads the parsed rows (N×1 texts, N×H·W pixels)
        fitted = pyfunc.get_raw_model() if schema.kind != "table" else _strip_feature_names(pyfunc.get_raw_model())
        if version.tags.get("perftune.runtime") == "onnxruntime":
            use_onnx(fitted, version, registry.tracking_uri, threads.threads if threads else None)
        from perftune.models.torch_estimator import TorchClassifier

        network = fitted.steps[-1][1] if hasattr(fitted, "steps") else fitted
        if isinstance(network, TorchClassifier):  # v2 metadata names what runs the forward pass
            platform = "onnxruntime_onnx" if network.onnx is not None else "pytorch_torch"
        predict = fitted.predict
        found = getattr(fitted, "classes_", None)
        classes = None if found is None else [class_key(c) for c in np.asarray(found).reshape(-1)]
        try:
            explainer = explainer_for(fitted, schema.names, schema.kind)
        except NotExplainable as exc:
            unexplained = str(exc)
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
        unexplained,
        classes,
        threads.threads if threads else None,
        measured_threads(version.tags),
    )


def use_onnx(pipeline: Any, version: Any, tracking_uri: str, threads: int | None = None) -> None:
    """Run the network's forward pass with onnxruntime on ``threads`` intra-op threads (None: torch's setting), as
    registration measured faster; torch when the ONNX file cannot be read (the registered pipeline is the model
    either way)."""
    from perftune.registry.register import ONNX_ARTIFACT

    try:
        with mlflow_store(tracking_uri):
            import mlflow

            path = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=ONNX_ARTIFACT)
        with open(path, "rb") as handle:
            pipeline.steps[-1][1].use_onnx(handle.read(), threads)
    except Exception as exc:  # a missing or damaged ONNX file: torch serves, and the log says why
        log.warning("%s v%s: serving with torch, not onnxruntime: %s", version.name, version.version,
                    str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)  # fmt: skip
