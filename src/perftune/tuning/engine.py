"""The study run: data → one Ray Tune run for every dataset × model group → results, MLflow, summary.json.

Layout of an output folder (``--out``, default ``<workspace>/runs/<study>``)::

    state.json            study identity (spec fingerprint, MLflow parent run) for --resume
    ray/study/            the Ray Tune experiment of all groups (Tuner.restore reads it on --resume)
    groups/<group>.json   a group's trial records, written atomically once every trial finished (a resumed
                          study whose groups all have one only writes its summary)
    summary.json          the result (schema in the README)

``--out`` is resolved to an absolute path once, before anything else (Ray Tune takes a relative path for a
URI). A folder that already holds a study is refused unless ``--resume`` continues it or ``--overwrite``
replaces it; an overwrite also removes what was derived from the old study (:data:`STUDY_FILES`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from perftune.data import Dataset, Locations, PreparedData, data_dir, load_dataset, prepare
from perftune.errors import ClusterUnavailableError, SpecError, StudyInterrupted, StudyStateError
from perftune.models.base import unsupported_features
from perftune.results import GroupResult, NoProgress, Progress, StudyResult, TrialRecord
from perftune.spec import Spec, load_spec, parse_spec
from perftune.track.lineage import lineage_tags
from perftune.track.mlflow_tracker import StudyTracker
from perftune.tuning.budgets import judge, make_policy
from perftune.tuning.plan import StudyPlan, check_task, make_plan
from perftune.tuning.ray_sessions import reap_orphaned_sessions, record_session
from perftune.tuning.search import build_search
from perftune.tuning.space import resolve_space
from perftune.tuning.trial import TrialSettings
from perftune.tuning.tune_run import GroupRun, StudyRun, run_study_trials

log = logging.getLogger(__name__)


@dataclass
class StudyState:
    """``state.json`` of an output folder: what a resumed study must match and continue."""

    spec_fingerprint: str
    parent_run_id: str
    tracking_uri: str
    experiment: str
    started_at: str
    skipped: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def read(cls, out: Path) -> StudyState | None:
        path = out / "state.json"
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise StudyStateError(f"{path} is corrupt ({exc}); remove {out} to start over") from None

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / "state.json", json.dumps(asdict(self), indent=2))


def group_slug(dataset: str, model: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{dataset}__{model}")


@contextlib.contextmanager
def ray_session(address: str | None, include_package: bool = True) -> Iterator[None]:
    """Start (or join, with ``address``) Ray for the study; leave an already running Ray alone.

    A Ray started here is recorded (see :mod:`perftune.tuning.ray_sessions`) so that, should this process be
    killed, the next study ends the processes it leaves behind.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        runtime_env = {"py_modules": [str(Path(__file__).resolve().parents[1])]} if include_package else None
        try:
            _probe_address(address)
            ray.init(address=address, runtime_env=runtime_env, **options)
        except (ConnectionError, TimeoutError, ValueError) as exc:
            raise ClusterUnavailableError(
                f"could not join the Ray cluster at {address!r} ({str(exc).splitlines()[0]}); check that it runs, "
                "the address form (ray://<head>:10001 for Ray Client, <head>:6379 from a cluster node) and, "
                "for a cluster with token authentication, RAY_AUTH_MODE=token and RAY_AUTH_TOKEN"
            ) from None
        record = None
    else:
        reap_orphaned_sessions()  # what a killed study's private Ray left behind must not disturb this one
        context = ray.init(num_cpus=os.cpu_count(), **options)
        record = record_session(context.address_info["session_dir"])
    try:
        yield
    finally:
        ray.shutdown()
        if record is not None:
            record.unlink(missing_ok=True)


def _probe_address(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds when nothing listens at the cluster address (Ray itself retries for minutes)."""
    if address in ("auto", "local"):
        return
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        host, port = host_port, "10001" if address.startswith("ray://") else "6379"
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port}: {exc.strerror or exc}") from None


# Everything a study writes into its output folder, or that is later derived from it there (`perftune report`
# writes report/ and effects.json, `perftune savings` savings.json). --overwrite removes exactly these.
STUDY_FILES = (
    "state.json",
    "state.json.tmp",
    "spec.yaml",
    "ray",
    "groups",
    "summary.json",
    "summary.json.tmp",
    "report",
    "effects.json",
    "savings.json",
)


def resolve_out(spec: Spec, out: str | Path | None) -> Path:
    """The study's output folder as an absolute path, decided once: Ray Tune reads relative paths as URIs."""
    folder = Path(out).expanduser() if out else spec.workspace_path() / "runs" / (spec.name or "study")
    return folder.resolve()


def _open_state(spec: Spec, out: Path, resume: bool, overwrite: bool = False) -> StudyState | None:
    """The state of the study to resume, or None after checking that a new study may use ``out``."""
    if out.exists() and not out.is_dir():
        raise StudyStateError(f"--out {out} is a file, not a folder; choose a folder for the study's output")
    if resume and overwrite:
        raise StudyStateError("--resume continues the study in --out and --overwrite replaces it; choose one")
    state = StudyState.read(out)
    if resume:
        if state is None:
            raise StudyStateError(f"--resume: {out} holds no study to resume; run without --resume to start one")
        if state.spec_fingerprint != spec.fingerprint():
            raise StudyStateError(
                f"--resume: the spec changed since the study in {out} started "
                "(search space, data, budgets or objectives); run without --resume to start over"
            )
        return state
    found = [out / name for name in STUDY_FILES if (out / name).exists()]
    if found and not overwrite:
        kind = "a finished study" if (out / "summary.json").is_file() else "an unfinished study"
        raise StudyStateError(
            f"{out} already holds {kind}; continue it with --resume, choose a new --out, "
            "or replace it (and what was derived from it) with --overwrite"
        )
    for target in found:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    return None


def run_study(
    spec: Spec | str | Path,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    address: str | None = None,
    progress: Progress | None = None,
    spec_path: str | None = None,
) -> StudyResult:
    """Run (or resume) a study and return its :class:`StudyResult`.

    Args:
        spec: a Spec or the path of a YAML spec.
        out: output folder (default ``<workspace>/runs/<name>``).
        resume: continue the study in ``out`` without repeating finished trials.
        overwrite: replace the study in ``out`` and remove what was derived from it (its report, effects,
            savings). Without ``resume`` or ``overwrite``, a folder that holds a study is refused.
        address: an existing Ray cluster (overrides ``execution.address``).
        progress: observer for live display.
        spec_path: the spec's file, when ``spec`` was loaded from one (logged as an artifact).

    Raises:
        StudyStateError: ``out`` is a file, holds a study and neither ``resume`` nor ``overwrite`` was given, or
            ``resume`` finds no study (or a different spec's) to continue.
    """
    if not isinstance(spec, Spec):
        spec_path = str(spec)
        spec = load_spec(spec)
    plan = make_plan(spec)
    out = resolve_out(spec, out)
    replaced = StudyState.read(out) if overwrite and out.is_dir() else None
    state = _open_state(spec, out, resume, overwrite)
    started = time.time()
    # Opening the MLflow store (schema migrations on a new SQLite file), loading the data and starting Ray take
    # seconds each and do not depend on each other: do them at the same time.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="perftune-start") as pool:
        opening = pool.submit(_start_tracking, spec, state, out, spec_path, replaced)
        done_before = resume and state is not None and _finished_groups(out, spec, state) is not None
        loading = None if done_before else pool.submit(_load_datasets, plan)
        status = "FAILED"
        tracker: StudyTracker | None = None
        try:
            with ray_session(address or spec.execution.address):
                tracker, state = opening.result()
                groups = _run_datasets(plan, state, out, resume, tracker, progress or NoProgress(), loading)
            status = "FINISHED"
        except (KeyboardInterrupt, StudyInterrupted) as exc:
            status = "KILLED"
            where = f" ({exc})" if str(exc) else ""
            raise StudyInterrupted(
                f"interrupted{where}; continue with: perftune tune {spec_path or '<spec>'} --resume --out {out}"
            ) from None
        finally:
            if status != "FINISHED":
                tracker = tracker or _result_or_none(opening)
                if tracker is not None:
                    with contextlib.suppress(Exception):
                        tracker.close(status=status)
    assert state is not None
    state.write(out)
    result = StudyResult(
        name=spec.name or "study",
        spec_fingerprint=spec.fingerprint(),
        groups=groups,
        constraints=[str(c) for c in spec.constraints],
        policy=spec.early_stopping.policy,
        out_dir=out,
        tracking={
            "uri": state.tracking_uri,
            "experiment_id": tracker.experiment_id,
            "parent_run_id": tracker.parent_run_id,
        },
        skipped=state.skipped,
        wall_time_s=time.time() - started,
        started_at=state.started_at,
        data_dir=str(data_dir().resolve()),
    )
    summary = result.write_summary()
    tracker.finish(result, summary)
    tracker.close()
    return result


def _result_or_none(future: Future[Any]) -> Any:
    try:
        return future.result()[0]
    except Exception:
        return None


def _start_tracking(
    spec: Spec, state: StudyState | None, out: Path, spec_path: str | None, replaced: StudyState | None = None
) -> tuple[StudyTracker, StudyState]:
    """Open the MLflow store and the study's parent run (a new one, or the resumed study's).

    The parent run of a study ``--overwrite`` replaced keeps its runs (registered versions may name them) and
    gets a ``perftune.overwritten_by`` tag naming the new parent run.
    """
    tracking_uri = state.tracking_uri if state else spec.tracking_uri()
    tags = lineage_tags(spec.fingerprint(), spec_path, spec.seed)
    experiment = state.experiment if state else spec.tracking.experiment
    tracker = StudyTracker(
        tracking_uri,
        experiment,
        spec.name or "study",
        tags,
        parent_run_id=state.parent_run_id if state else None,
        artifact_location=spec.artifact_location(),
    )
    if state is not None:
        return tracker, state
    state = StudyState(
        spec.fingerprint(),
        tracker.parent_run_id,
        tracking_uri,
        experiment,
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    state.write(out)
    if replaced is not None and replaced.tracking_uri == tracking_uri:
        with contextlib.suppress(Exception):  # the old run may have been deleted by hand
            tracker.client.set_tag(replaced.parent_run_id, "perftune.overwritten_by", tracker.parent_run_id)
    spec_text = _spec_text(spec, spec_path)
    (out / "spec.yaml").write_text(spec_text)  # the report shows the spec the study ran
    tracker.log_spec(
        spec_text,
        {
            "study": spec.name,
            "spec_hash": spec.fingerprint(),
            "models": spec.models,
            "datasets": [d.name for d in spec.datasets],
            "policy": spec.early_stopping.policy,
            "search": spec.search.algorithm,
            "constraints": [str(c) for c in spec.constraints],
            "objectives": [o.model_dump(mode="json") for o in spec.objectives],
        },
    )
    return tracker, state


def _spec_text(spec: Spec, spec_path: str | None) -> str:
    """The spec as it ran: the file's text, or a dump when the spec was derived from the file (e.g. the full
    search of `perftune savings`), was built in Python, or names data files relative to its own folder — the
    copy lives elsewhere, so its paths must be absolute for `perftune register` and `reproduce` to find them."""
    if spec_path and Path(spec_path).is_file():
        text = Path(spec_path).read_text()
        if parse_spec(text, origin=spec_path).fingerprint() == spec.fingerprint():
            return text
    header = f"# derived from {spec_path}\n" if spec_path else ""
    return header + yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def _run_datasets(
    plan: StudyPlan,
    state: StudyState,
    out: Path,
    resume: bool,
    tracker: StudyTracker,
    progress: Progress,
    loading: Future[list[tuple[Dataset, PreparedData | None]]] | None = None,
) -> list[GroupResult]:
    """Every dataset × model group in one Ray Tune run (see :mod:`perftune.tuning.study_search`)."""
    import ray

    spec = plan.spec
    finished = _finished_groups(out, spec, state) if resume else None
    if finished is not None:  # a resumed study whose trials all finished does not load data
        for group in finished:
            progress.group_finished(group)
        return finished
    runs: list[GroupRun] = []
    try:
        for dataset, prepared in loading.result() if loading is not None else _load_datasets(plan):
            tracker.log_dataset(dataset)
            models = _models_for(plan, dataset, state.skipped)
            if prepared is None:
                continue
            data_ref = ray.put(prepared)  # once per dataset, shared by every trial of its groups
            runs.extend(_group_run(plan, dataset, prepared, data_ref, model) for model in models)
            del prepared  # the object store holds the data now
        study = StudyRun(out / "ray" / "study", runs, spec.execution.cpus_per_trial, spec.execution.max_concurrent)
        outcomes = run_study_trials(study, tracker, progress, resume=resume)
        groups = []
        for run in runs:
            outcome = outcomes[run.key]
            for record in outcome.records:
                judge(record, run.constraints)
            group = run.result(outcome.records, outcome.wall_s)
            _write_group(out, group, outcome.histories, resume)
            if not outcome.announced:
                progress.group_finished(group)
            groups.append(group)
        return groups
    finally:
        state.write(out)


def _load_datasets(plan: StudyPlan) -> list[tuple[Dataset, PreparedData | None]]:
    """Load and prepare every dataset of the study (prepared is None when no model of the spec supports its
    task)."""
    spec = plan.spec
    loaded = []
    for dataset_spec in spec.datasets:
        dataset = load_dataset(dataset_spec, seed=spec.seed, where=Locations.default(spec.workspace_path()))
        check_task(spec, dataset.task, dataset.name)
        models = _models_for(plan, dataset)
        loaded.append((dataset, prepare(dataset, spec.evaluation, spec.seed) if models else None))
    return loaded


def _models_for(plan: StudyPlan, dataset: Dataset, skipped: list[dict[str, str]] | None = None) -> list[str]:
    """The spec's models that support the dataset's task and its features; the others are noted in ``skipped``."""
    models = []
    for model in plan.spec.models:
        family = plan.families[model]
        if dataset.task not in family.tasks:
            reason = f"{model} does not support {dataset.task} ({', '.join(sorted(family.tasks))} only)"
        else:
            reason = unsupported_features(family, dataset.n_features)
        if reason is None:
            models.append(model)
            continue
        note = {"dataset": dataset.name, "model": model, "reason": reason}
        if skipped is not None and note not in skipped:
            skipped.append(note)
    return models


def _write_atomic(path: Path, text: str) -> None:
    """Write ``path`` so that it holds either its old content or ``text``, whatever moment a kill comes."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _marker(out: Path, dataset: str, model: str) -> Path:
    return out / "groups" / f"{group_slug(dataset, model)}.json"


def _read_marker(path: Path) -> GroupResult:
    try:
        raw = json.loads(path.read_text())
        return GroupResult.from_dict(raw["group"], [TrialRecord(**t) for t in raw["trials"]])
    except (ValueError, KeyError, TypeError) as exc:
        raise StudyStateError(f"{path} is corrupt ({exc}); delete it to re-run that group with --resume") from None


def _finished_groups(out: Path, spec: Spec, state: StudyState) -> list[GroupResult] | None:
    """Every group of the study when all of them finished before (None when any trial is left to run)."""
    skipped = {(note["dataset"], note["model"]) for note in state.skipped}
    markers = [
        _marker(out, d.name, model) for d in spec.datasets for model in spec.models if (d.name, model) not in skipped
    ]
    if not markers or not all(m.is_file() for m in markers):
        return None
    return [_read_marker(m) for m in markers]


def _write_group(out: Path, group: GroupResult, histories: dict[str, Any], resume: bool) -> None:
    """The group's histories, then its marker (its presence means "group done"), each written atomically."""
    marker = _marker(out, group.dataset, group.model)
    marker.parent.mkdir(parents=True, exist_ok=True)
    history_path = marker.with_suffix(".history.json")
    previous = json.loads(history_path.read_text()) if resume and history_path.is_file() else {}
    _write_atomic(history_path, json.dumps({**previous, **histories}))
    body = {"group": group.to_dict(), "trials": [asdict(r) for r in group.trials]}
    _write_atomic(marker, json.dumps(body, default=str))


def _fit_predictors(spec: Spec, dataset: str, model: str, constraints: tuple[Any, ...]) -> dict[str, Any]:
    """Learned predictors of the constrained metrics, fitted on the same group of a finished study."""
    from perftune.measure.metrics import get_metric
    from perftune.results import load_histories, load_study
    from perftune.tuning.predictor import fit_predictor

    config = spec.early_stopping.predictor
    assert config is not None
    source = Path(config.train_on)
    reference = load_study(source)
    group = next((g for g in reference.groups if (g.dataset, g.model) == (dataset, model)), None)
    if group is None:
        raise SpecError(f"early_stopping.predictor.train_on: {source} has no {dataset} × {model} trials to learn from")
    histories = load_histories(source)
    predictors: dict[str, Any] = {}
    for constraint in constraints:
        metric = get_metric(constraint.metric)
        if constraint.metric in predictors or metric is None or metric.phase != "window":
            continue  # end-of-trial metrics have no early windows to predict from
        try:
            predictors[constraint.metric] = fit_predictor(
                group.trials, histories, constraint.metric, config.observations, spec.seed
            )
        except ValueError as exc:
            raise SpecError(f"early_stopping.predictor: {dataset} × {model}: {exc}") from None
    return predictors


def _group_run(plan: StudyPlan, dataset: Dataset, prepared: PreparedData, data_ref: Any, model: str) -> GroupRun:
    """One dataset × model of the study's run: its resolved space, search, budgets and trial settings."""
    spec = plan.spec
    objectives = plan.objectives_for(dataset.task)
    constraints = plan.constraints_for(dataset.task)
    try:
        space = resolve_space(spec.search.space, prepared.n_train_fold)
    except ValueError as exc:
        raise SpecError(f"search.space for dataset {dataset.name!r}: {exc}") from None
    predictors = _fit_predictors(spec, dataset.name, model, constraints) if spec.early_stopping.predictor else {}
    settings = TrialSettings(
        family=plan.families[model],
        seed=spec.seed,
        eval_every=spec.evaluation.eval_every,
        policy=make_policy(
            spec.early_stopping.policy,
            constraints,
            spec.early_stopping.min_observations,
            spec.early_stopping.slack,
            predictors,
        ),
        latency_rows=spec.evaluation.latency_rows,
        report_interval_s=spec.execution.report_interval_s,
        throughput_batch=spec.evaluation.throughput_batch,
        threads=max(1, math.floor(spec.execution.cpus_per_trial)),
    )
    return GroupRun(
        key=group_slug(dataset.name, model),
        dataset=dataset.name,
        model=model,
        task=dataset.task,
        search=build_search(spec.search, space, objectives, dataset.task, seed=spec.seed),
        settings=settings,
        data_ref=data_ref,
        constraints=constraints,
        objectives=objectives,
        extra_tags={"perftune.dataset.fingerprint": dataset.fingerprint, "perftune.dataset.source": dataset.source},
        dataset_card=dataset.card(),
        predictors={metric: predictor.error() for metric, predictor in predictors.items()},
    )
