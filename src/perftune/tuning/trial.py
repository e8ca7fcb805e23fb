"""One trial: the training loop with measurement, windows, budget checks and the final inference metrics.

:func:`run_trial` is plain Python (it takes a ``report`` callable), so the same code runs under Ray Tune
(:func:`ray_trainable`), in benchmarks and in tests.

Budgets are checked after every window, inside the trial, and between windows by the watchdog
(:mod:`perftune.tuning.watchdog`), which may interrupt the loop anywhere but inside ``report``. Reports to
Ray Tune are batched: each report carries the latest window's metrics (for schedulers and the live display)
plus ``windows``, every window since the previous report, so the driver still gets the full history while
the number of round trips to the driver stays bounded (at most one per ``report_interval_s``) however small
``eval_every`` is.

With k folds, each step advances the k fold models by one mini-batch each; validation metrics are the
mean over folds, and ``step_time_ms`` is per mini-batch.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from perftune.data.split import Fold, PreparedData
from perftune.measure.inference import Candidate, InferenceMeter, measure_inference
from perftune.measure.probe import Probe, StepTimer
from perftune.measure.threads import limit_threads
from perftune.models.base import TaskInfo, Trainer, TrialDiverged, validate_params
from perftune.results import TrialState
from perftune.tuning.budgets import NoPolicy, StopReason, estimate_saved
from perftune.tuning.watchdog import Watchdog, WatchdogDied, WatchdogSettings, WatchdogStop, watched_constraints

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any]], None]


@dataclass
class TrialSettings:
    """Everything a trial needs besides its hyperparameters and data (picklable; one per dataset × model)."""

    family: type[Trainer]
    seed: int = 0
    eval_every: int = 100
    policy: Any = field(default_factory=NoPolicy)
    latency_rows: int = 200
    throughput_batch: int = 1024
    report_interval_s: float = 1.0
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    threads: int = 1  # CPU threads a trainer may use (the study's cpus_per_trial)


def total_steps(n_rows: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    steps = epochs * math.ceil(n_rows / batch_size)
    return min(steps, max_steps) if max_steps else steps


def run_trial(
    config: dict[str, Any],
    data: PreparedData,
    settings: TrialSettings,
    report: Report,
    on_finish: Callable[[list[Trainer]], None] | None = None,
    on_stuck: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train one configuration; ``report`` batches of windows as it goes and return the final result.

    Every report and the final result hold ``windows``: the windows since the previous report. The final
    result also holds the last window's metrics, the end-of-trial inference metrics, ``trial_status``,
    ``stop_reason`` (JSON, when stopped), ``saved_cpu_s`` / ``saved_train_time_s`` estimates,
    ``probe_overhead_s``, ``watchdog_overhead_s`` and ``trial_wall_s``: the wall time of the whole trial (its
    setup, training and final measurements; what the trial kept its core busy for, waits for a CPU included).

    Args:
        config: the trial's hyperparameters.
        data: the prepared folds.
        settings: family, policy, windows, watchdog.
        report: called with batches of windows while training.
        on_finish: receives the fitted trainers of a trial that ran to its end.
        on_stuck: receives the final result when the watchdog stopped the trial and the training thread did
            not unwind (stuck in native code); it must end the trial's process. None: wait for the thread.
    """
    started = time.perf_counter()
    with limit_threads(settings.threads):  # BLAS/OpenMP/torch pools: the trial's threads, for training and measuring
        final = _run_trial(config, data, settings, report, on_finish, on_stuck)
    final["trial_wall_s"] = time.perf_counter() - started
    return final


def _run_trial(
    config: dict[str, Any],
    data: PreparedData,
    settings: TrialSettings,
    report: Report,
    on_finish: Callable[[list[Trainer]], None] | None,
    on_stuck: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    params = validate_params(settings.family, config)
    info = TaskInfo(task=data.task, n_features=data.n_features, classes=data.classes, threads=settings.threads)
    folds = data.folds
    trainers = [settings.family(params, info, settings.seed) for _ in folds]
    batch = int(params.batch_size)
    steps_per_epoch = math.ceil(len(folds[0].y_train) / batch)
    planned = total_steps(len(folds[0].y_train), batch, params.epochs, params.max_steps)
    rng = np.random.default_rng(settings.seed)
    orders = [_epoch_order(f, rng) for f in folds]

    probe = Probe()  # in the training thread: train_time_s excuses this thread's wait for a CPU
    timer = StepTimer(settings.eval_every * len(folds))
    history: list[dict[str, float]] = []
    loss_sum, loss_n = 0.0, 0
    status, stop, error = TrialState.COMPLETED, None, None
    unreported: list[dict[str, float]] = []
    last_report = probe.started_at
    step = 0

    def stopped_result(reason: StopReason) -> dict[str, Any]:
        """The final result of a trial the watchdog ends while its training thread is stuck."""
        windows, fresh = list(history), list(unreported)
        _close_history(windows, fresh, _partial_window(watchdog.at_step, probe, watchdog))
        return _result(windows, fresh, TrialState.STOPPED_BUDGET, planned, probe, watchdog, reason)

    watchdog = Watchdog(
        watched_constraints(settings.policy),
        settings.policy.name,
        planned,
        probe,
        settings.watchdog,
        final_result=stopped_result,
        on_stuck=on_stuck,
    ).start()
    try:
        with watchdog.armed():
            while step < planned:
                offset = (step % steps_per_epoch) * batch
                if offset == 0 and step > 0:
                    orders = [_epoch_order(f, rng) for f in folds]
                for trainer, fold, order in zip(trainers, folds, orders, strict=True):
                    rows = order[offset : offset + batch]
                    t0 = time.perf_counter()
                    loss = trainer.step(fold.X_train[rows], fold.y_train[rows])
                    timer.add(time.perf_counter() - t0)
                    if loss == loss:  # not NaN (the first step has no loss yet)
                        loss_sum += loss
                        loss_n += 1
                step += 1
                watchdog.at_step = step
                if step % settings.eval_every and step != planned:
                    continue
                window = _window(trainers, data, step, steps_per_epoch, planned, probe, timer, loss_sum, loss_n)
                loss_sum, loss_n = 0.0, 0
                history.append(window)
                unreported.append(window)
                watchdog.check_alive()
                stop = settings.policy.check(history, planned, config)
                if stop is not None:
                    status = TrialState.STOPPED_BUDGET
                    break
                if step < planned and time.perf_counter() - last_report >= settings.report_interval_s:
                    with watchdog.paused(), probe.outside():  # never interrupted inside Ray's session code
                        report({**window, "windows": unreported})  # waits for the driver: not training time
                    unreported, last_report = [], time.perf_counter()
            watchdog.check_alive()
    except WatchdogStop:
        status, stop = TrialState.STOPPED_BUDGET, watchdog.reason
        _close_history(history, unreported, _partial_window(step, probe, watchdog))
    except (TrialDiverged, WatchdogDied) as exc:
        status = TrialState.FAILED
        error = f"diverged at step {step}: {exc}" if isinstance(exc, TrialDiverged) else str(exc)
        _close_history(history, unreported, _partial_window(step, probe))
    finally:
        watchdog.close()

    final = _result(history, unreported, status, planned, probe, watchdog, stop, error)
    probe.close()
    if status == TrialState.COMPLETED and getattr(trainers[0], "compresses", False):
        final.update(_compress(trainers, folds, settings, final))
    elif status == TrialState.COMPLETED:
        final.update(
            measure_inference(
                trainers[0].predict,
                trainers[0].serialize,
                folds[0].X_val,
                latency_rows=settings.latency_rows,
                throughput_batch=settings.throughput_batch,
            )
        )
    if on_finish is not None:
        on_finish(trainers)  # e.g. the registry keeps the fitted model
    return final


def _compress(
    trainers: list[Trainer], folds: list[Fold], settings: TrialSettings, final: dict[str, Any]
) -> dict[str, Any]:
    """A family's post-training compression (quantization, pruning: the trainer's ``compress``), measured: the
    validation metrics after it replace the last window's, and the values before it are kept beside them. The
    latency before and after is measured like for like: a copy of the uncompressed network and the compressed
    one, interleaved on the same rows with the same threads."""
    first = trainers[0]
    uncompressed = copy.deepcopy(first)
    extra: dict[str, Any] = {}
    for trainer in trainers:
        extra = trainer.compress()  # type: ignore[attr-defined]
    scores = [t.evaluate(f.X_val, f.y_val) for t, f in zip(trainers, folds, strict=True)]
    after = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
    candidates = {
        "before": Candidate(uncompressed.predict, uncompressed.serialize),
        "after": Candidate(first.predict, first.serialize),
    }
    sizes = {"latency_rows": settings.latency_rows, "throughput_batch": settings.throughput_batch}
    meter = InferenceMeter(candidates, folds[0].X_val, **sizes).run()
    before, compressed = meter.metrics("before"), meter.metrics("after")
    meter.close()
    out = {
        **after,
        **extra,
        **compressed,  # the trial's inference metrics: not measured again
        "model_size_bytes_uncompressed": before["model_size_bytes"],
        "latency_ms_p95_uncompressed": before["latency_ms_p95"],
        "latency_compressed_ratio": compressed["latency_ms_p95"] / before["latency_ms_p95"],
    }
    if "accuracy" in after and "accuracy" in final:
        out["accuracy_uncompressed"] = float(final["accuracy"])
        out["accuracy_drop"] = float(final["accuracy"]) - after["accuracy"]
    return out


def _epoch_order(fold: Fold, rng: np.random.Generator) -> np.ndarray:
    """The rows of one epoch: a permutation; with sample weights, as many rows drawn with replacement in
    proportion to their weights — importance sampling, so each step's expected gradient is that of the
    weighted loss, for every family without it having to know about weights."""
    n = len(fold.y_train)
    if fold.w_train is None:
        return rng.permutation(n)
    return rng.choice(n, size=n, replace=True, p=fold.w_train / fold.w_train.sum())


def _result(
    history: list[dict[str, float]],
    unreported: list[dict[str, float]],
    status: str,
    planned: int,
    probe: Probe,
    watchdog: Watchdog,
    stop: StopReason | None,
    error: str | None = None,
) -> dict[str, Any]:
    """A trial's final result without the inference metrics: the last window, status, reason, costs."""
    final: dict[str, Any] = dict(history[-1]) if history else {}
    contention = probe.contention()
    final.update(contention)  # the whole trial's, where the last window holds its own
    final.update(
        trial_status=status,
        total_steps=planned,
        probe_overhead_s=probe.overhead_s,
        watchdog_overhead_s=watchdog.overhead_s,
        windows=unreported,
    )
    if stop is not None:
        final["stop_reason"] = json.dumps(replace(stop, contention=contention).to_dict())
        final.update(estimate_saved(history, planned))
    if error is not None:
        final["error"] = error
    return final


def _partial_window(step: int, probe: Probe, watchdog: Watchdog | None = None) -> dict[str, float]:
    """System metrics of a trial that ended between windows; with the watchdog's readings when it stopped it
    (the metric that broke its bound keeps the value the watchdog saw, e.g. a peak freed while unwinding)."""
    window = {"steps": float(step), **probe.sample().as_metrics()}
    reason = watchdog.reason if watchdog is not None else None
    if reason is not None:
        window["memory_mb_peak"] = max(window["memory_mb_peak"], watchdog.memory_peak_mb)  # type: ignore[union-attr]
        window[reason.metric] = max(window.get(reason.metric, 0.0), reason.observed)
    return window


def _close_history(history: list[dict[str, float]], unreported: list[dict[str, float]], last: dict[str, float]) -> None:
    """Append the partial window, or merge it into the last window when no step was taken since."""
    if history and history[-1]["steps"] == last["steps"]:
        history[-1].update({k: max(v, history[-1].get(k, v)) for k, v in last.items()})
        if not unreported or unreported[-1] is not history[-1]:
            unreported.append(history[-1])
        return
    history.append(last)
    unreported.append(last)


def _window(
    trainers: list[Trainer],
    data: PreparedData,
    step: int,
    steps_per_epoch: int,
    planned: int,
    probe: Probe,
    timer: StepTimer,
    loss_sum: float,
    loss_n: int,
) -> dict[str, float]:
    """Metrics of one report window: ML metrics averaged over folds plus the system metrics."""
    scores: dict[str, list[float]] = {}
    for trainer, fold in zip(trainers, data.folds, strict=True):
        for name, value in trainer.evaluate(fold.X_val, fold.y_val).items():
            scores.setdefault(name, []).append(value)
    window = {name: float(np.mean(values)) for name, values in scores.items()}
    window.update(timer.summary())
    window.update(probe.sample().as_metrics())
    window["steps"] = float(step)
    window["epoch"] = step / steps_per_epoch
    window["total_steps"] = float(planned)
    if loss_n:
        window["train_loss"] = loss_sum / loss_n
    return window


# The key of a trial's configuration that names its dataset × model group (one Ray Tune run holds a study's
# groups; see perftune.tuning.study_search). It is not a hyperparameter: records and MLflow leave it out.
GROUP_KEY = "_group"


@dataclass(frozen=True)
class GroupPayload:
    """What a trial of one group needs besides its configuration: its settings and a reference to the group's
    prepared data in Ray's object store (fetched zero-copy inside the trial)."""

    settings: TrialSettings
    data_ref: Any


def study_trainable(config: dict[str, Any], groups: dict[str, GroupPayload]) -> None:
    """The Ray Tune function trainable of a study: the trial's group picks its data and settings.

    It lives here, beside :func:`run_trial`, so that a worker imports only what a trial needs (not MLflow).
    """
    import ray

    config = dict(config)
    payload = groups[config.pop(GROUP_KEY)]
    ray_trainable(config, ray.get(payload.data_ref), payload.settings)


def ray_trainable(config: dict[str, Any], data: PreparedData, settings: TrialSettings) -> None:
    """The Ray Tune function trainable: windows go to ``tune.report``, then the final result."""
    from ray import tune

    def on_stuck(final: dict[str, Any]) -> None:
        _report_and_end_process(final, settings.watchdog.report_timeout_s)

    final = run_trial(config, data, settings, report=tune.report, on_stuck=on_stuck)
    tune.report(final)


def _report_and_end_process(final: dict[str, Any], timeout_s: float) -> None:
    """Hand a stuck trial's final result to the driver, then end this worker (its training thread cannot be
    stopped). ``tune.report`` returns once the driver has taken the result and asked for the next one; the
    driver then sees the worker die and records the trial from that result (``tune_run.make_record``)."""
    from ray import tune

    sender = threading.Thread(target=tune.report, args=(final,), name="perftune-watchdog-report", daemon=True)
    sender.start()
    sender.join(timeout_s)
    if sender.is_alive():
        log.error("the driver did not take the stopped trial's result within %g s; ending the worker", timeout_s)
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)
