"""Register the best feasible trial of a study as an MLflow model version.

The chosen configuration is refitted on the whole training part (the 70 % the study tuned on) with the same
seed, evaluated on the held-out test part the study never saw, and measured again as it will be served: a
scikit-learn pipeline (the training part's standardization + the model) predicting raw rows. The gate decides;
a passing model becomes a version of the registered model with lineage tags and the ``challenger`` alias.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import cloudpickle
import numpy as np
import pandas as pd

from perftune._faults import checkpoint
from perftune.data import Locations, load_dataset
from perftune.data.dataset import Dataset
from perftune.data.split import Fold, PreparedData, holdout_split, standardize, weighted_draw
from perftune.errors import PerftuneError, UsageError
from perftune.measure.inference import Candidate, InferenceMeter, compare
from perftune.measure.probe import Probe
from perftune.measure.threads import THREADS_TAG
from perftune.models.base import get_family
from perftune.registry.catalog import PENDING_TAG, ModelRegistry
from perftune.registry.gate import GateCheck, run_gate
from perftune.registry.journal import OPERATION_TAG
from perftune.results import StudyResult, TrialRecord, TrialState, best_trial, load_study
from perftune.spec import DatasetSpec, EvaluationSpec, MonitorSpec, Spec, parse_spec
from perftune.track.lineage import environment_tags, git_state
from perftune.track.uri import mlflow_store, normalize_tracking_uri
from perftune.tuning.trial import TrialSettings, run_trial

if TYPE_CHECKING:
    from perftune.explain.importance import FeatureImportance, Method
    from perftune.monitor.profile import ReferenceProfile

log = logging.getLogger("perftune.register")


# what a compressed model's refit reports beside its metrics (the gate can bound e.g. accuracy_drop)
COMPRESSION = (
    "accuracy_uncompressed",
    "accuracy_drop",
    "model_size_bytes_uncompressed",
    "latency_compressed_ratio",  # p95 after ÷ before, both measured in the trial on the network alone
    "sparsity",
)


class GateFailed(PerftuneError):
    """The model did not pass the gate; nothing was registered."""


@dataclass
class Registered:
    """What ``register`` did."""

    name: str
    version: str | None
    trial: TrialRecord
    test_metrics: dict[str, float]
    gate: list[GateCheck]
    run_id: str
    lineage: dict[str, str]

    @property
    def gate_passed(self) -> bool:
        return all(check.passed for check in self.gate)


def choose_trial(study: StudyResult, dataset: str | None, model: str | None, trial_id: str | None) -> TrialRecord:
    """The trial to register: ``trial_id``, or the best feasible one of the chosen dataset (and model)."""
    if trial_id:
        match = [t for t in study.trials if t.trial_id == trial_id]
        if not match:
            raise UsageError(f"{study.out_dir} has no trial {trial_id!r}")
        return match[0]
    groups = [g for g in study.groups if (dataset in (None, g.dataset)) and (model in (None, g.model))]
    datasets = sorted({g.dataset for g in groups})
    if not groups:
        raise UsageError(
            f"{study.out_dir} has no trials for dataset={dataset} model={model}; groups: "
            + ", ".join(f"{g.dataset} × {g.model}" for g in study.groups)
        )
    if len(datasets) > 1:
        raise UsageError(
            f"{study.out_dir} tuned {len(datasets)} datasets ({', '.join(datasets)}); choose one with "
            "--dataset (and optionally --model), or a trial with --trial"
        )
    best = best_trial([t for g in groups for t in g.feasible], groups[0].objectives)
    if best is None:
        raise UsageError(
            f"no feasible trial for {datasets[0]}"
            f"{' × ' + model if model else ''} in {study.out_dir}; relax the budgets or pick --trial"
        )
    return best


def study_spec(out: Path) -> Spec:
    path = out / "spec.yaml"
    if not path.is_file():
        raise UsageError(f"{out} does not keep the spec it ran (spec.yaml); re-run the study with this perftune")
    return parse_spec(path.read_text(), origin=str(path))


@dataclass(frozen=True)
class RefitPlan:
    """All a refit needs, and so all lineage must keep for ``reproduce`` to repeat it without the study."""

    dataset: DatasetSpec
    family: str
    params: dict[str, Any]
    seed: int
    evaluation: EvaluationSpec
    workspace: str
    data_dir: str | None = None  # where the study read its data; $PERFTUNE_DATA_DIR overrides
    threads: int = 1  # the study's threads per trial: the refit trains and is measured with them (perftune.threads)

    @classmethod
    def from_study(cls, spec: Spec, study: StudyResult, trial: TrialRecord) -> RefitPlan:
        entry = next(d for d in spec.datasets if d.name == trial.dataset)
        workspace = str(spec.workspace_path().resolve())
        threads = max(1, math.floor(spec.execution.cpus_per_trial))
        return cls(entry, trial.model, dict(trial.params), spec.seed, spec.evaluation, workspace, study.data_dir,
                   threads)  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(
            {
                "dataset": self.dataset.model_dump(mode="json", exclude_none=True),
                "family": self.family,
                "params": self.params,
                "seed": self.seed,
                "evaluation": self.evaluation.model_dump(mode="json"),
                "workspace": self.workspace,
                "data_dir": self.data_dir,
                "threads": self.threads,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> RefitPlan:
        raw = json.loads(text)
        return cls(
            DatasetSpec.model_validate(raw["dataset"]),
            raw["family"],
            raw["params"],
            int(raw["seed"]),
            EvaluationSpec.model_validate(raw["evaluation"]),
            raw["workspace"],
            raw.get("data_dir"),
            int(raw.get("threads", 1)),  # recipes written before threads were recorded: 1, as trials had
        )


@dataclass
class Refitted:
    """A refitted model as it will be served, and how it did on the held-out test part."""

    pipeline: Any
    metrics: dict[str, float]
    frame: Any  # the test inputs as served: a table with feature names (tables, texts) or an N×H×W array (images)
    predictions: np.ndarray
    dataset: Dataset
    plan: RefitPlan  # a store: dataset pinned to the version that was read
    train: np.ndarray  # row indices of the training split
    test: np.ndarray  # row indices of the test split
    onnx: bytes | None = None  # a PyTorch network's ONNX export (stored with the version)
    runtime: str | None = None  # what runs a PyTorch network's forward pass when served: torch or onnxruntime
    remeasure: Any = None  # measures more interleaved rounds; returns the served model's inference metrics

    def profile(self, settings: MonitorSpec, budgets: dict[str, float] | None = None) -> ReferenceProfile:
        """The reference profile monitoring compares served data with (see :mod:`perftune.monitor.reference`)."""
        from perftune.monitor.reference import build_profile

        d = self.dataset
        if self.inputs != "table":
            from perftune.monitor.reference import build_derived_profile

            # the held-out split: like served inputs, the vocabulary never saw it (training texts have no OOV terms)
            return build_derived_profile(
                self.pipeline,
                d.raw_inputs[self.test],
                d.y[self.test],
                self.inputs,
                d.task,
                self.metrics,
                settings,
                budgets,
            )
        return build_profile(
            self.pipeline, d.X[self.train], d.feature_names, self.frame, d.y[self.test], d.task, self.metrics,
            settings, budgets,
        )  # fmt: skip

    @property
    def inputs(self) -> str:
        """What the model is served: ``table``, ``text`` or ``image`` rows."""
        d = self.dataset
        if d.transform is None or d.raw_inputs is None:
            return "table"
        return "text" if d.transform["data"] == "text" else "image"

    def importance(self) -> tuple[list[FeatureImportance], Method]:
        """Global importance on the test split (see :mod:`perftune.explain.importance`); raises
        :class:`~perftune.explain.attributions.NotExplainable` for a network no explainer reads."""
        from perftune.explain.importance import PERMUTATION, attribution_importance, permutation_importance

        d, seed = self.dataset, self.plan.seed
        if self.inputs == "table":
            return permutation_importance(self.pipeline, self.frame, d.y[self.test], d.task, seed), PERMUTATION
        return attribution_importance(self.pipeline, d.raw_inputs[self.test], self.inputs, seed)

    def lineage(self) -> dict[str, str]:
        d = self.dataset
        tags = {
            "perftune.dataset": d.name,
            "perftune.dataset.source": d.source,
            "perftune.dataset.location": d.location,
            "perftune.dataset.fingerprint": d.fingerprint,
            "perftune.dataset.rows": str(d.n_rows),
            "perftune.split_seed": str(self.plan.seed),
            "perftune.split.test_fraction": str(self.plan.evaluation.test_fraction),
            "perftune.split.validation_fraction": str(self.plan.evaluation.validation_fraction),
            "perftune.split.cv_folds": str(self.plan.evaluation.cv_folds),
            "perftune.params": json.dumps(self.plan.params, sort_keys=True),
            "perftune.model_family": self.plan.family,
            "perftune.serialization": "cloudpickle",
            "perftune.inputs": str(d.transform["data"]) if d.transform else "table",  # what the model is served
            THREADS_TAG: str(self.plan.threads),  # what its latency was measured with; perftune serve's default
            "perftune.refit": self.plan.to_json(),
        }
        if d.version:
            tags["perftune.dataset.version"] = d.version
        return tags


def refit(plan: RefitPlan, runtimes: bool = True) -> Refitted:
    """Refit ``plan``'s configuration on the whole training part; measure it on the test part (``runtimes``: a
    PyTorch network under torch and onnxruntime too, see :func:`_faster_runtime`), all with the study's threads
    per trial (``plan.threads``; recorded on the version, and what ``perftune serve`` uses by default)."""
    from perftune.measure.threads import limit_threads

    with limit_threads(plan.threads):
        return _refit(plan, runtimes)


def _refit(plan: RefitPlan, runtimes: bool) -> Refitted:
    where = Locations.default(Path(plan.workspace), recorded_data_dir=plan.data_dir)
    dataset = load_dataset(plan.dataset, seed=plan.seed, where=where)
    if dataset.version and "@" not in plan.dataset.name:
        pinned = plan.dataset.model_copy(update={"name": f"{plan.dataset.name}@{dataset.version}"})
        plan = replace(plan, dataset=pinned)
    evaluation = plan.evaluation
    train, test = holdout_split(dataset, evaluation.test_fraction, plan.seed)
    weights = dataset.weights
    test = weighted_draw(test, weights, plan.seed)  # with sample weights, the test metrics are weighted ones
    X_train, X_test = (
        (dataset.X[train], dataset.X[test]) if dataset.scaled else standardize(dataset.X[train], dataset.X[test])
    )
    prepared = PreparedData(
        dataset.name,
        dataset.task,
        dataset.classes,
        dataset.n_features,
        [Fold(X_train, dataset.y[train], X_test, dataset.y[test], weights[train] if weights is not None else None)],
        train,
        test,
    )
    fitted: list[Any] = []
    settings = TrialSettings(
        family=get_family(plan.family),
        seed=plan.seed,
        eval_every=evaluation.eval_every,
        latency_rows=evaluation.latency_rows,
        throughput_batch=evaluation.throughput_batch,
        threads=plan.threads,
    )
    result = run_trial(plan.params, prepared, settings, report=lambda window: None, on_finish=fitted.extend)
    if result["trial_status"] != TrialState.COMPLETED:
        raise PerftuneError(f"refitting {plan.family} {plan.params} did not complete: {result.get('error', result)}")
    estimator = fitted[0].estimator
    if hasattr(estimator, "to_cpu"):  # served on the CPU, so measured there (a network may have trained on a GPU)
        estimator.to_cpu()
    pipeline, frame, predict, raw_test = _served_pipeline(dataset, train, test, estimator)
    probe = Probe()  # the peak of RSS − shared across one batch predict; the contention the measurements met
    predictions = pipeline.predict(frame)
    peak = probe.sample().memory_mb_peak
    metrics = {
        k: float(v)
        for k, v in result.items()
        if k in ("val_loss", "accuracy", "rmse", "train_time_s", "cpu_s", "memory_mb_peak", "steps", *COMPRESSION)
    }
    metrics = {("test_loss" if k == "val_loss" else k): v for k, v in metrics.items()}
    if "accuracy" in metrics and "accuracy_drop" not in metrics:
        metrics["accuracy_drop"] = 0.0  # nothing compressed, nothing lost: a gate on it holds
    metrics["predict_memory_mb"] = peak
    from perftune.models.torch_estimator import TorchClassifier

    serialize = lambda: cloudpickle.dumps(pipeline)  # noqa: E731  the bytes MLflow's sklearn flavor writes
    sizes = {"latency_rows": evaluation.latency_rows, "throughput_batch": evaluation.throughput_batch}
    onnx, runtime = None, "torch" if isinstance(pipeline.steps[-1][1], TorchClassifier) else None
    if runtime and runtimes:
        meter, onnx, runtime = _faster_runtime(pipeline, predict, frame, raw_test, metrics, sizes)
    else:
        meter = InferenceMeter({"served": Candidate(predict, serialize)}, raw_test, **sizes).run()
    served = next(iter(meter.candidates))  # the one candidate left: what perftune serve runs
    metrics.update(meter.metrics(served))
    metrics.update({f"measure.{k}": v for k, v in probe.contention().items()})
    metrics["threads"] = float(plan.threads)
    probe.close()

    def remeasure() -> dict[str, float]:
        return meter.run().metrics(served)

    return Refitted(pipeline, metrics, frame, predictions, dataset, plan, train, test, onnx, runtime, remeasure)


ONNX_MARGIN = 0.9  # onnxruntime serves when its latency p95 interval lies below this share of torch's
ONNX_ARTIFACT = "onnx/model.onnx"  # in the registration run, beside the model


def _faster_runtime(
    pipeline: Any, predict: Any, frame: Any, raw_test: np.ndarray, metrics: dict[str, float], sizes: dict[str, int]
) -> tuple[InferenceMeter, bytes | None, str]:
    """Export the network to ONNX and measure torch and onnxruntime in interleaved rounds on the same rows, with
    the same threads; onnxruntime serves only where its latency p95 interval lies wholly below ``ONNX_MARGIN`` ×
    torch's (a measurable difference), else torch. ``metrics`` gets both runtimes' numbers and the comparison."""
    from perftune.models.onnx_runtime import NotExportable, export

    model, rows = pipeline.steps[-1][1], frame[:256]
    for _, step in pipeline.steps[:-1]:  # the network's input rows
        rows = step.transform(rows)
    serialize = lambda: cloudpickle.dumps(pipeline)  # noqa: E731
    try:
        onnx = export(model.net, np.asarray(rows))
    except NotExportable as exc:
        log.info("served with torch: %s", exc)
        return InferenceMeter({"torch": Candidate(predict, serialize)}, raw_test, **sizes).run(), None, "torch"
    candidates = {
        "onnx": Candidate(predict, lambda: onnx, prepare=lambda: model.use_onnx(onnx)),
        "torch": Candidate(predict, serialize, prepare=lambda: model.use_onnx(None)),
    }
    meter = InferenceMeter(candidates, raw_test, **sizes).run()
    measured = {runtime: meter.metrics(runtime) for runtime in candidates}
    for runtime, values in measured.items():  # each runtime's p95 with its interval: what the choice rests on
        for key in ("latency_ms_p95", "latency_ms_p95_low", "latency_ms_p95_high", "throughput_rps"):
            metrics[f"{key}_{runtime}"] = values[key]
    metrics["model_size_bytes_onnx"] = float(len(onnx))
    verdict = compare("onnx", measured["onnx"], "torch", measured["torch"], margin=ONNX_MARGIN)
    chosen = "onnx" if verdict.faster == "onnx" else "torch"
    log.info("runtime: %s; served with %s", verdict.message(), "onnxruntime" if chosen == "onnx" else "torch")
    model.use_onnx(onnx if chosen == "onnx" else None)
    meter.keep(chosen, Candidate(predict, candidates[chosen].serialize))  # later rounds: the served runtime only
    return meter, onnx, "onnxruntime" if chosen == "onnx" else "torch"


def _served_pipeline(
    dataset: Dataset, train: np.ndarray, test: np.ndarray, model: Any
) -> tuple[Any, Any, Any, np.ndarray]:
    """The pipeline as served (features step + model), the test inputs it takes, a predict over raw rows (for
    the inference measurements) and those raw test rows.

    Tables: the training part's standardization fitted on named columns (the served pipeline knows and checks
    its feature names). Text and images: the cached transform fitted on the training split (a bag of words,
    pixel scaling), taking texts (a ``text`` column) or images (N×H×W) as they arrive.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if dataset.transform is not None and dataset.raw_inputs is not None:
        from perftune.data.transforms import load_fitted

        features = load_fitted(str(dataset.transform["fitted"]))
        pipeline = Pipeline([("features", features), ("model", model)])
        raw_test = dataset.raw_inputs[test]
        # the features step reads raw rows (N×1 texts, N×H×W images); the signature names the text column
        frame = pd.DataFrame({"text": raw_test[:, 0]}) if raw_test.ndim == 2 else raw_test
        return pipeline, frame, pipeline.predict, raw_test
    scaler = StandardScaler().fit(pd.DataFrame(dataset.X[train], columns=dataset.feature_names))
    pipeline = Pipeline([("standardize", scaler), ("model", model)])
    frame = pd.DataFrame(dataset.X[test], columns=dataset.feature_names)
    return pipeline, frame, lambda X: pipeline.predict(pd.DataFrame(X, columns=dataset.feature_names)), dataset.X[test]


def refit_version(version: Any, purpose: str) -> Refitted:
    """Refit a registered version from its recipe (tag ``perftune.refit``), e.g. to derive what an older
    perftune did not store with it; ``purpose`` names that in the error when the version has no recipe."""
    recipe = version.tags.get("perftune.refit")
    if not recipe:
        raise PerftuneError(
            f"{version.name} v{version.version} has no refit recipe (tag perftune.refit) to build {purpose} from; "
            "register it with perftune register"
        )
    return refit(RefitPlan.from_json(recipe), runtimes=False)  # what it derives needs no runtime comparison


def store_of(out: Path | str, tracking_uri: str | None = None, study: StudyResult | None = None) -> str:
    """The MLflow store ``register`` writes to: ``tracking_uri``, else the study's own."""
    if tracking_uri:
        return normalize_tracking_uri(tracking_uri)
    return (study or load_study(out)).tracking["uri"]


def register(
    out: Path | str,
    name: str,
    *,
    dataset: str | None = None,
    model: str | None = None,
    trial_id: str | None = None,
    force: bool = False,
    tracking_uri: str | None = None,
) -> Registered:
    """Refit, test, gate and register the best feasible trial of the study in ``out``.

    Raises GateFailed (nothing registered) when a gate threshold fails, unless ``force`` (then the version is
    tagged ``gate=failed``). ``tracking_uri`` registers in another store than the study's.
    """
    import mlflow

    out = Path(out)
    study = load_study(out)
    spec = study_spec(out)
    trial = choose_trial(study, dataset, model, trial_id)
    refitted = refit(RefitPlan.from_study(spec, study, trial))
    metrics = refitted.metrics
    checks = run_gate(spec.gate, metrics, refitted.dataset.task, remeasure=refitted.remeasure)
    passed = all(c.passed for c in checks)
    lineage = {
        **refitted.lineage(),
        "perftune.spec_hash": spec.fingerprint(),
        "perftune.spec_file_sha256": hashlib.sha256((out / "spec.yaml").read_bytes()).hexdigest(),
        "perftune.study": study.name,
        "perftune.study_run_id": str(study.tracking.get("parent_run_id", "")),
        "perftune.trial_id": trial.trial_id,
        "perftune.trial_run_id": trial.mlflow_run_id or "",
        "perftune.gate": "passed" if passed else "failed",
        "perftune.gate.checks": json.dumps([c.__dict__ for c in checks]),
        **environment_tags(),
        **git_state(out.resolve()),
    }
    if refitted.runtime:
        lineage["perftune.runtime"] = refitted.runtime  # torch or onnxruntime: what perftune serve runs
    if not passed and not force:
        raise GateFailed(
            "gate failed, nothing registered: "
            + "; ".join(c.message() for c in checks if not c.passed)
            + " (use --force to register anyway, tagged gate=failed)"
        )
    from perftune.monitor.reference import budgets_of

    profile = refitted.profile(spec.monitor, budgets_of(spec.constraints))  # a bad monitor: section fails here
    from perftune.explain.attributions import NotExplainable

    try:
        importance: tuple[list[FeatureImportance], Method] | None = refitted.importance()
    except NotExplainable as exc:  # registered without a global importance; perftune explain says why
        log.info("no global importance: %s", exc)
        importance = None
    uri = store_of(out, tracking_uri, study)
    registry = ModelRegistry(uri)  # fails early (before any write) on a store without an audit log
    client = registry.client
    if uri == study.tracking["uri"]:
        experiment_id = study.tracking["experiment_id"]
    else:
        found = client.get_experiment_by_name(spec.tracking.experiment)
        experiment_id = (
            found.experiment_id
            if found
            else client.create_experiment(spec.tracking.experiment, artifact_location=spec.artifact_location())
        )
    reason = f"registered from {study.name} trial {trial.trial_id}"
    # journaled (perftune.registry.journal): a kill at any point leaves what recovery settles, never a version
    # that can be promoted without its gate, alias and audit row
    with registry.journal.operation("register", name, {"experiments": [experiment_id], "trial": trial.trial_id}) as op:
        tags = {**lineage, "perftune.kind": "register", OPERATION_TAG: str(op)}
        run_id = client.create_run(experiment_id, run_name=f"register-{name}", tags=tags).info.run_id
        registry.journal.step(op, "its run was created", run_id=run_id)
        checkpoint("register.after_create_run")
        info = _log_register_run(client, uri, run_id, refitted, checks, profile, importance)
        checkpoint("register.after_log_model")
        client.set_terminated(run_id)
        with mlflow_store(uri):  # the fluent call reads MLflow's process-wide URIs
            version = mlflow.register_model(info.model_uri, name, tags={
                **lineage, **{f"test.{k}": f"{v:.6g}" for k, v in metrics.items()}, PENDING_TAG: str(op)})  # fmt: skip
        registry.journal.step(op, "its version was registered", version=str(version.version))
        checkpoint("register.after_register_model")
        registry.set_challenger(name, str(version.version), reason=reason, op=op)
    registry.close()
    return Registered(name, str(version.version), trial, metrics, checks, run_id, lineage)


def _log_register_run(
    client: Any, uri: str, run_id: str, refitted: Refitted, checks: list[GateCheck], profile: ReferenceProfile,
    importance: tuple[list[FeatureImportance], Method] | None,
) -> Any:  # fmt: skip
    """Log the register run: test metrics, gate, reference profile, importance, ONNX export and the model."""
    import mlflow
    from mlflow.models import infer_signature

    from perftune.explain.importance import log_importance
    from perftune.monitor.reference import log_profile

    now = int(time.time() * 1000)
    client.log_batch(
        run_id, metrics=[mlflow.entities.Metric(f"test.{k}", v, now, 0) for k, v in refitted.metrics.items()
                         if np.isfinite(v)],
    )  # fmt: skip
    client.log_dict(run_id, [c.__dict__ for c in checks], "gate.json")
    log_profile(client, run_id, profile)
    if importance is not None:
        log_importance(client, run_id, importance[0], refitted.dataset.task, importance[1])
    if refitted.onnx is not None:  # the network's ONNX export, which perftune serve runs where it is faster
        import tempfile

        artifact = PurePosixPath(ONNX_ARTIFACT)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / artifact.name
            path.write_bytes(refitted.onnx)
            client.log_artifact(run_id, str(path), str(artifact.parent))
    with mlflow_store(uri), mlflow.start_run(run_id=run_id):  # the fluent calls read MLflow's process-wide URIs
        return mlflow.sklearn.log_model(
            refitted.pipeline,
            name="model",
            serialization_format="cloudpickle",
            signature=infer_signature(refitted.frame, refitted.predictions),
            input_example=refitted.frame[:2],
        )
