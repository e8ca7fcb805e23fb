"""The Ray Tune run of a study (every dataset × model group in one Tuner), and the driver-side callback that
collects its trials.

The callback (:class:`TrialCollector`) sees every reported window and every finished trial on the driver.
It keeps each trial's metric history, turns finished trials into :class:`TrialRecord` objects of their group,
queues them for MLflow and updates the live display. Ray pickles callbacks into the experiment state and
unpickles them on ``Tuner.restore``; the collector therefore pickles as a key that resolves to the live
collector of the resumed run (registered before the restore).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback

from perftune.errors import StudyInterrupted
from perftune.measure.metrics import get_metric
from perftune.results import GroupResult, Objective, Progress, TrialRecord, TrialState, best_trial
from perftune.track.mlflow_tracker import StudyTracker
from perftune.tuning.budgets import Constraint, Enforcement, estimate_saved, judge
from perftune.tuning.search import SearchSetup
from perftune.tuning.study_search import SearchGroup, StudyScheduler, StudySearch
from perftune.tuning.trial import GROUP_KEY, GroupPayload, TrialSettings, study_trainable

# Result keys perftune adds besides registered metrics.
_EXTRA_KEYS = (
    "total_steps", "probe_overhead_s", "watchdog_overhead_s", "saved_cpu_s", "saved_train_time_s", "trial_wall_s",
)  # fmt: skip

log = logging.getLogger(__name__)


@dataclass
class GroupRun:
    """A dataset × model family of a study's run, with its search, settings and data."""

    key: str
    dataset: str
    model: str
    task: str
    search: SearchSetup
    settings: TrialSettings
    data_ref: Any
    constraints: tuple[Constraint, ...]
    objectives: list[Objective]
    extra_tags: dict[str, str] = field(default_factory=dict)
    dataset_card: dict[str, Any] = field(default_factory=dict)
    predictors: dict[str, dict[str, float]] = field(default_factory=dict)  # metric → cross-validated error

    def result(self, records: list[TrialRecord], wall_s: float) -> GroupResult:
        return GroupResult(
            self.dataset,
            self.model,
            self.task,
            self.objectives,
            records,
            self.dataset_card,
            wall_s=wall_s,
            predictors=self.predictors,
        )


@dataclass
class StudyRun:
    """The one Ray Tune run of a study: its groups in the order they are searched, where Ray keeps the
    experiment's state (``path``) and the resources of a trial."""

    path: Path
    groups: list[GroupRun]
    cpus_per_trial: float
    max_concurrent: int | None


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Registered metrics and perftune's extras from a Ray result (Ray's bookkeeping left out)."""
    return {
        k: float(v)
        for k, v in result.items()
        if (get_metric(k) is not None or k in _EXTRA_KEYS) and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def error_message(error: BaseException | str) -> str:
    """One line: the original exception's type and message (Ray wraps it in RayTaskError)."""
    if isinstance(error, str):
        lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
        return lines[-1] if lines else "unknown error"
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".strip()


def trial_error(trial: Any) -> str:
    """The error of a failed Ray trial. Ray writes it next to the trial first and syncs it to storage
    later, so the local files are read before storage."""

    def local_pickle() -> Any:
        import ray.cloudpickle

        with open(trial.pickled_error_file, "rb") as handle:
            return ray.cloudpickle.load(handle)

    for read in (local_pickle, lambda: Path(trial.error_file).read_text(), trial.get_pickled_error, trial.get_error):
        with contextlib.suppress(Exception):
            error = read()
            if error:
                return error_message(error)
    return "the trial failed and Ray recorded no error (see the Ray logs under /tmp/ray)"


def worker_of(result: dict[str, Any]) -> str | None:
    """The worker process that produced a result, ``<node ip>:<pid>`` (Ray fills both in every result). A study
    keeps as many workers as trials run at once, each taking trial after trial (``reuse_actors``); more mean
    that workers were replaced and each new one paid its start and imports."""
    pid = result.get("pid")
    return f"{result.get('node_ip', '')}:{pid}" if pid is not None else None


def make_record(
    run: GroupRun,
    trial_id: str,
    config: dict[str, Any],
    result: dict[str, Any] | None,
    error: str | None,
    history: list[dict[str, float]],
) -> TrialRecord:
    """Classify a finished Ray trial: completed, stopped_budget, stopped_early (scheduler) or failed."""
    result = result or {}
    metrics = final_metrics(result)
    stop_reason = json.loads(result["stop_reason"]) if result.get("stop_reason") else None
    if error is not None and (stop_reason or {}).get("enforced") == Enforcement.WATCHDOG:
        # the watchdog reported the final result of a trial stuck in native code, then ended its worker
        status, message = str(result["trial_status"]), None
    elif error is not None:
        status, message = TrialState.FAILED, error
    elif "trial_status" in result:
        status, message = str(result["trial_status"]), result.get("error")
    else:  # the trial ended without its final report: a scheduler (ASHA) stopped it
        status, message = TrialState.STOPPED_EARLY, None
        total = history[-1].get("total_steps") if history else None
        if total:
            metrics.update(estimate_saved(history, int(total)))
    record = TrialRecord(
        trial_id=trial_id,
        dataset=run.dataset,
        model=run.model,
        params={k: v for k, v in config.items()},
        status=status,
        metrics=metrics,
        stop_reason=stop_reason,
        error=message,
        worker=worker_of(result),
    )
    record.params.pop(GROUP_KEY, None)
    judge(record, run.constraints)
    return record


# Live collectors by key (their run's path); see the module docstring.
_SINKS: dict[str, TrialCollector] = {}


def _live_collector(key: str) -> Callback:
    """Unpickling target: the collector registered for this run, or a no-op outside a perftune run."""
    return _SINKS.get(key) or Callback()


class TrialCollector(Callback):
    """Driver-side Tune callback: histories, records, MLflow logging and live progress of a study's groups."""

    def __init__(self, study: StudyRun, tracker: StudyTracker, progress: Progress) -> None:
        self.key = str(study.path.resolve())
        self.groups = {g.key: g for g in study.groups}
        self.tracker, self.progress = tracker, progress
        self.history: dict[str, list[dict[str, float]]] = {}
        self.started_at: dict[str, float] = {}
        self.ended_at: dict[str, float] = {}
        self.records: dict[str, TrialRecord] = {}
        self.histories: dict[str, list[dict[str, float]]] = {}
        self.running: dict[str, set[str]] = {g: set() for g in self.groups}
        self.started: dict[str, float] = {}  # group → when its first trial of this process started
        # Runs an interrupted process logged, by trial id: a trial Ray runs again replaces its run.
        self.previous: dict[str, list[str]] = {}
        self.best: dict[str, TrialRecord] = {}
        self.announced: set[str] = set()  # groups whose end the live display has shown
        _SINKS[self.key] = self

    def __reduce__(self) -> Any:
        return (_live_collector, (self.key,))

    def close(self) -> None:
        _SINKS.pop(self.key, None)

    def group_of(self, trial: Any) -> GroupRun:
        return self.groups[trial.config[GROUP_KEY]]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run = self.group_of(trial)
        if run.key not in self.started:
            self.started[run.key] = time.time()
            self.progress.group_started(run.dataset, run.model, run.search.expected_trials)
        self.running[run.key].add(trial.trial_id)
        self.started_at.setdefault(trial.trial_id, time.time())
        self.history[trial.trial_id] = []
        self._notify(run)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        # Every result (the final one too) carries the windows measured since the previous result.
        self.history.setdefault(trial.trial_id, []).extend(final_metrics(w) for w in result.get("windows", ()))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, trial_error(trial))

    def _finish(self, trial: Any, error: str | None) -> None:
        trial_id, run = trial.trial_id, self.group_of(trial)
        history = self.history.pop(trial_id, [])
        self.histories[trial_id] = history
        self.ended_at[trial_id] = time.time()
        record = make_record(run, trial_id, trial.config, trial.last_result, error, history)
        self.records[trial_id] = record
        self.running[run.key].discard(trial_id)
        self.tracker.log_trial(
            record,
            history,
            self.started_at.get(trial_id, time.time()),
            run.extra_tags,
            replaces=self.previous.pop(trial_id, ()),
        )
        if record.feasible:
            known = [t for t in (self.best.get(run.key), record) if t is not None]
            self.best[run.key] = best_trial(known, run.objectives)
        self._notify(run)
        mine = [r for r in self.records.values() if (r.dataset, r.model) == (run.dataset, run.model)]
        if len(mine) == run.search.expected_trials:  # the group is done (a resumed run announces at its end)
            self.announced.add(run.key)
            self.progress.group_finished(run.result(mine, _group_wall(self, mine, time.time())))

    def _notify(self, run: GroupRun) -> None:
        counts = {state.value: 0 for state in TrialState}
        for record in self.records.values():
            if (record.dataset, record.model) == (run.dataset, run.model):
                counts[record.status] = counts.get(record.status, 0) + 1
        best, top = None, self.best.get(run.key)
        if top is not None:
            metric = run.objectives[0].metric
            best = {"trial_id": top.trial_id, "metric": metric, "value": top.metrics[metric], "params": top.params}
        self.progress.trial_update(
            {
                "dataset": run.dataset,
                "model": run.model,
                "running": len(self.running[run.key]),
                "planned": run.search.expected_trials,
                "counts": counts,
                "best": best,
                "elapsed_s": time.time() - self.started.get(run.key, time.time()),
            }
        )


@contextlib.contextmanager
def _quiet_tune(env: dict[str, str] | None = None) -> Iterator[None]:
    """No per-trial CSV/JSON/TensorBoard files and no Ray console tables: perftune logs and displays.
    ``env`` sets more of Tune's environment settings for the run (restored afterwards)."""
    settings = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0", **(env or {})}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    loggers = [logging.getLogger(n) for n in ("ray.tune", "ray.train", "ray.air")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class GroupOutcome:
    """What a group's trials left: a record per trial, the windows of the trials that ran in this process
    (trials finished before an interruption have none here; their history is in MLflow), and the group's
    wall time in this process (its first trial's start to its last trial's end; groups overlap a little)."""

    records: list[TrialRecord]
    histories: dict[str, list[dict[str, float]]]
    wall_s: float
    announced: bool = False


def run_study_trials(
    study: StudyRun, tracker: StudyTracker, progress: Progress, resume: bool = False
) -> dict[str, GroupOutcome]:
    """Run (or continue) the study's Ray Tune experiment; return each group's outcome by group key.

    Resuming restores Ray's experiment state when the interrupted run saved one, and starts afresh when it did
    not (killed before Ray's first snapshot). Ray snapshots every few seconds, so the trials that finished
    after its last snapshot run again; their earlier MLflow runs are replaced, and MLflow runs of trials the
    resumed Ray run does not have are deleted: each group's runs end up one per trial of its result.
    """
    collector = TrialCollector(study, tracker, progress)
    if resume:
        for run in study.groups:
            collector.previous.update(tracker.trial_runs(run.dataset, run.model, complete_only=True))
    try:
        with _quiet_tune({"TUNE_MAX_PENDING_TRIALS_PG": str(_max_pending(study))}):
            grid = _make_tuner(study, collector, restore=resume and _has_experiment_state(study.path)).fit()
        trials = _trials_of(grid)
        unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
        if unfinished or any(collector.running.values()):
            done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
            planned = sum(run.search.expected_trials for run in study.groups)
            raise StudyInterrupted(f"{done} of {planned} trials finished")
        ended = time.time()
        by_group: dict[str, list[TrialRecord]] = {run.key: [] for run in study.groups}
        for trial in trials:
            run = collector.group_of(trial)
            record = collector.records.get(trial.trial_id)
            if record is None:  # finished before an interruption: rebuild from Ray's saved state
                error = trial_error(trial) if trial.status == "ERROR" else None
                record = make_record(run, trial.trial_id, trial.config, trial.last_result, error, [])
                logged = collector.previous.get(trial.trial_id)
                record.mlflow_run_id = logged[-1] if logged else None
                if record.mlflow_run_id is None:
                    tracker.log_trial(record, [], time.time(), run.extra_tags)
            by_group[run.key].append(record)
        tracker.flush()  # run ids are set on the records once their writes are done
        if resume:
            keep = {r.trial_id: r.mlflow_run_id for records in by_group.values() for r in records}
            for run in study.groups:
                logged_runs = tracker.trial_runs(run.dataset, run.model)
                tracker.delete_runs(rid for tid, rids in logged_runs.items() for rid in rids if rid != keep.get(tid))
            tracker.flush()
        histories = collector.histories
        return {
            run.key: GroupOutcome(
                by_group[run.key],
                {r.trial_id: collector.histories[r.trial_id] for r in by_group[run.key] if r.trial_id in histories},
                _group_wall(collector, by_group[run.key], ended),
                run.key in collector.announced,
            )
            for run in study.groups
        }
    finally:
        collector.close()


def _group_wall(collector: TrialCollector, records: list[TrialRecord], ended: float) -> float:
    """From the group's first trial start to its last trial end, as seen in this process."""
    starts = [collector.started_at[r.trial_id] for r in records if r.trial_id in collector.started_at]
    ends = [collector.ended_at[r.trial_id] for r in records if r.trial_id in collector.ended_at]
    return (max(ends, default=ended) - min(starts)) if starts else 0.0


def _max_pending(study: StudyRun) -> int:
    """How many trials Tune may create ahead of free workers. Ray Tune allows one for any searcher but its own
    grid/random generator, so a worker that finishes waits for the next trial to be made; worse, the worker that
    finishes first takes the one trial made ahead — the trial a second worker was being started for — and Ray
    drops the starting worker, so trials shorter than a worker's start run one at a time (budgets and ASHA on a
    part of thesis-small: one worker ran all 128 trials, 2 cores 48 % busy). Trials known in advance (grid,
    random) keep a few ready per core; an adaptive searcher (TPE, NSGA-II, …) keeps Ray's one, so that each
    suggestion sees as many finished trials as it can."""
    import ray

    from perftune.tuning.study_search import ListSearch, SampleSearch

    if all(isinstance(run.search.searcher, (ListSearch, SampleSearch)) for run in study.groups):
        return max(4, 2 * int(ray.cluster_resources().get("CPU", 1)) + 2)
    return 1


def _has_experiment_state(path: Path) -> bool:
    """Whether Ray saved the experiment's state (trials and searcher) in ``path``.

    ``tuner.pkl`` alone is not enough: Ray writes it when the Tuner is built, without the search space, and
    restoring from it alone yields one trial with an empty config.
    """
    return any(path.glob("experiment_state-*.json"))


def _make_tuner(study: StudyRun, collector: TrialCollector, restore: bool) -> tune.Tuner:
    """A Tuner that continues the study's saved experiment (``restore``) or starts it afresh."""
    payloads = {run.key: GroupPayload(run.settings, run.data_ref) for run in study.groups}
    fn = tune.with_resources(tune.with_parameters(study_trainable, groups=payloads), {"cpu": study.cpus_per_trial})
    if restore:
        return tune.Tuner.restore(
            str(study.path), trainable=fn, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
    if study.path.exists():
        shutil.rmtree(study.path)
    search = StudySearch(
        [SearchGroup(r.key, r.search.searcher, r.search.num_samples, r.search.constants) for r in study.groups]
    )
    schedulers = {run.key: run.search.scheduler for run in study.groups if run.search.scheduler is not None}
    return tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=StudyScheduler(schedulers) if schedulers else None,
            num_samples=search.total_samples,
            max_concurrent_trials=study.max_concurrent,
            reuse_actors=True,  # one worker per core runs trial after trial, group after group
        ),
        run_config=tune.RunConfig(
            name=study.path.name,
            storage_path=str(study.path.parent.resolve()),
            verbose=0,
            callbacks=[collector],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
        ),
    )


def _trials_of(grid: Any) -> list[Any]:
    analysis = getattr(grid, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None)
    if trials is None:
        raise RuntimeError("this Ray version's ResultGrid does not expose its trials; perftune needs Ray >= 2.50")
    return list(trials)
