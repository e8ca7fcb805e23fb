"""MLflow tracking of a study: one parent run, one child run per trial, lineage tags, dataset inputs.

All writes happen in the driver on a single background thread, so the Ray Tune loop never waits for the
store and a SQLite store is only ever written by one writer. A trial's run is created when the trial ends
(with its start time), so an interrupted trial never leaves a half-written run behind.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset as MlflowDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from perftune.data.dataset import Dataset
from perftune.results import StudyResult, TrialRecord, TrialState

_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call
_RUN_STATUS = {
    TrialState.COMPLETED: "FINISHED",
    TrialState.STOPPED_BUDGET: "KILLED",
    TrialState.STOPPED_EARLY: "KILLED",
    TrialState.FAILED: "FAILED",
}
log = logging.getLogger(__name__)


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


def mlflow_key(name: str) -> str:
    """``name`` as an MLflow metric or param key, which takes ASCII letters, digits and ``_-. /`` only.

    Keys built from dataset names (``<dataset>.<model>.best_accuracy``) pass through here; a name such as
    ``dätä file ✓`` becomes ``d_t_ file _``, and the real name stays in the runs' tags and in summary.json.
    """
    return _KEY_UNSAFE.sub("_", name)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _finite(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    )


class StudyTracker:
    """Logs a study to MLflow. Use as a context manager; :meth:`close` waits for pending writes."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        study: str,
        tags: dict[str, str],
        parent_run_id: str | None = None,
        artifact_location: str | None = None,
    ) -> None:
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id if found else self.client.create_experiment(experiment, artifact_location)
        )
        self.tags = tags
        if parent_run_id is not None:
            self.parent_run_id = parent_run_id
            self.client.update_run(parent_run_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=study, tags={**tags, "perftune.kind": "study"})
            self.parent_run_id = run.info.run_id
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perftune-mlflow")
        self._pending: list[Future[Any]] = []
        self._datasets: dict[str, DatasetInput] = {}

    # -- study level ------------------------------------------------------------------------------
    def log_spec(self, spec_text: str, params: dict[str, Any]) -> None:
        self._submit(self._log_spec, spec_text, params)

    def _log_spec(self, spec_text: str, params: dict[str, Any]) -> None:
        self.client.log_text(self.parent_run_id, spec_text, "spec.yaml")
        self.client.log_batch(self.parent_run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

    def log_dataset(self, dataset: Dataset, context: str = "training") -> None:
        """Record a dataset as an MLflow input of the study (and later of each trial)."""
        entity = MlflowDataset(
            name=dataset.name,
            digest=dataset.fingerprint[:36],
            source_type=dataset.source,
            source=json.dumps({"location": dataset.location}),
            schema=json.dumps({"features": dataset.feature_names, "target": dataset.target}),
            profile=json.dumps(
                {
                    "rows": dataset.n_rows,
                    "features": dataset.n_features,
                    "task": dataset.task,
                    "sha256": dataset.fingerprint,
                }
            ),
        )
        self._datasets[dataset.name] = DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])
        self._submit(self.client.log_inputs, self.parent_run_id, [self._datasets[dataset.name]])

    # -- trials -----------------------------------------------------------------------------------
    def log_trial(
        self,
        record: TrialRecord,
        history: list[dict[str, Any]],
        started_at: float,
        extra_tags: dict[str, str],
        replaces: Sequence[str] = (),
    ) -> Future[Any]:
        """Queue a finished trial; the future resolves to its run id (also set on ``record``).

        ``replaces`` names runs of the same trial logged by an interrupted process: they are deleted once the new
        run is complete.
        """
        future = self._submit(self._log_trial, record, history, started_at, extra_tags, tuple(replaces))
        return future

    def _log_trial(
        self,
        record: TrialRecord,
        history: list[dict[str, Any]],
        started_at: float,
        extra_tags: dict[str, str],
        replaces: tuple[str, ...] = (),
    ) -> str:
        tags = {
            **self.tags,
            **extra_tags,
            MLFLOW_PARENT_RUN_ID: self.parent_run_id,
            "perftune.kind": "trial",
            "perftune.trial_id": record.trial_id,
            "perftune.dataset": record.dataset,
            "perftune.model": record.model,
            "perftune.status": record.status,
            "perftune.feasible": str(record.feasible).lower(),
        }
        if record.stop_reason:
            tags["perftune.stop_reason"] = record.stop_reason.get("message", "")[:5000]
        if record.error:
            tags["perftune.error"] = record.error[:5000]
        if record.violations:
            tags["perftune.violations"] = "; ".join(record.violations)[:5000]
        run = self.client.create_run(
            self.experiment_id,
            start_time=_ms(started_at),
            tags={**tags, MLFLOW_RUN_NAME: f"{record.model}-{record.trial_id}"},
        )
        run_id = run.info.run_id
        now = _ms(time.time())
        metrics = [
            Metric(k, float(v), now, int(w.get("steps", 0))) for w in history for k, v in w.items() if _finite(v)
        ]
        final_step = int(record.metrics.get("steps", 0))
        seen = {(m.key, m.step) for m in metrics}
        metrics += [
            Metric(k, float(v), now, final_step)
            for k, v in record.metrics.items()
            if _finite(v) and (k, final_step) not in seen
        ]
        params = [Param(k, str(v)) for k, v in record.params.items()]
        for start in range(0, max(len(metrics), 1), _BATCH):
            self.client.log_batch(run_id, metrics=metrics[start : start + _BATCH], params=params if start == 0 else [])
        dataset_input = self._datasets.get(record.dataset)
        if dataset_input is not None:
            self.client.log_inputs(run_id, [dataset_input])
        if record.stop_reason:
            self.client.log_dict(run_id, record.stop_reason, "stop_reason.json")
        self.client.set_terminated(run_id, status=_RUN_STATUS.get(record.status, "FINISHED"))
        for old in replaces:
            self.client.delete_run(old)
        record.mlflow_run_id = run_id
        return run_id

    def trial_runs(self, dataset: str, model: str, complete_only: bool = False) -> dict[str, list[str]]:
        """trial id → run ids (oldest first) of one dataset × model group's trials under this study's parent run.

        A study killed and resumed may have logged a trial twice, logged trials its resumed Ray run does not
        have, or been killed while writing a run (left RUNNING; ``complete_only`` leaves those out);
        :meth:`delete_runs` removes what a resumed study superseded.
        """
        self.flush()
        found: dict[str, list[str]] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.parent_run_id}'",
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            for run in page:
                tags = run.data.tags
                if (tags.get("perftune.dataset"), tags.get("perftune.model")) != (dataset, model):
                    continue
                if "perftune.trial_id" in tags and not (complete_only and run.info.status == "RUNNING"):
                    found.setdefault(tags["perftune.trial_id"], []).append(run.info.run_id)
            token = page.token
            if not token:
                return found

    def delete_runs(self, run_ids: Iterable[str]) -> None:
        """Queue the deletion (MLflow's soft delete: restorable) of trial runs a resumed study superseded."""
        for run_id in run_ids:
            self._submit(self.client.delete_run, run_id)

    # -- end ----------------------------------------------------------------------------------------
    def finish(self, result: StudyResult, summary_path: Path, status: str = "FINISHED") -> None:
        self.flush()
        compute = result.compute()
        metrics = [Metric(f"study_{k}", float(v), _ms(time.time()), 0) for k, v in compute.items() if _finite(v)]
        for group in result.groups:
            best = group.best
            prefix = mlflow_key(f"{group.dataset}.{group.model}")
            for key, value in group.counts().items():
                metrics.append(Metric(f"{prefix}.n_{key}", float(value), _ms(time.time()), 0))
            if best is not None:
                for objective in group.objectives:
                    value = best.metrics.get(objective.metric)
                    if _finite(value):
                        metrics.append(Metric(f"{prefix}.best_{objective.metric}", float(value), _ms(time.time()), 0))
        for start in range(0, len(metrics), _BATCH):
            self.client.log_batch(
                self.parent_run_id,
                metrics=metrics[start : start + _BATCH],
                tags=[RunTag("perftune.n_trials", str(len(result.trials)))] if start == 0 else [],
            )
        self.client.log_artifact(self.parent_run_id, str(summary_path))
        self.client.set_terminated(self.parent_run_id, status=status)

    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        future = self._pool.submit(fn, *args)
        self._pending.append(future)
        return future

    def flush(self) -> None:
        """Wait for every queued write; re-raise the first failure."""
        pending, self._pending = self._pending, []
        errors = []
        for future in pending:
            try:
                future.result()
            except Exception as exc:  # report all, raise the first
                log.error("MLflow write failed: %s", exc)
                errors.append(exc)
        if errors:
            raise errors[0]

    def close(self, status: str | None = None) -> None:
        try:
            self.flush()
            if status is not None:
                self.client.set_terminated(self.parent_run_id, status=status)
        finally:
            self._pool.shutdown(wait=True)


def log_study_analysis(tracking: dict[str, Any], metrics: dict[str, float], artifacts: dict[str, Any]) -> None:
    """Add analysis results (RQ1/RQ2) to a finished study's parent run: metrics and JSON artifacts."""
    if not tracking.get("uri") or not tracking.get("parent_run_id"):
        return
    client = MlflowClient(tracking_uri=tracking["uri"])
    run_id = tracking["parent_run_id"]
    now = _ms(time.time())
    batch = [Metric(mlflow_key(k), float(v), now, 0) for k, v in metrics.items() if _finite(v)]
    for start in range(0, len(batch), _BATCH):
        client.log_batch(run_id, metrics=batch[start : start + _BATCH])
    for name, payload in artifacts.items():
        client.log_dict(run_id, payload, f"analysis/{name}")
