"""The retraining loop: trigger → data → warm-started search → challenger → comparison → promote or keep.

``Retrainer.run`` is what ``perftune retrain NAME`` and ``perftune monitor NAME@champion --retrain`` call:

1. **Trigger** — the spec's ``retrain.triggers`` on a monitor check of the champion (:mod:`.triggers`);
   ``force`` is the on-demand trigger. A retraining within ``cooldown`` waits.
2. **Data** — the champion's training split plus its labelled scoring rows, recency-weighted, stored as a new
   data-store version with lineage to the scoring window (:mod:`.data`).
3. **Search** — a smaller study warm-started from the champion's study, under the original constraints and
   early stopping (:mod:`.warmstart`), logged to the same MLflow store.
4. **Challenger** — its best feasible trial is registered (refit, held-out test, gate) as the ``challenger``.
5. **Comparison** — both versions predict the same rows: the held-out slice of recent labelled data and the
   champion's original test split, without any row either version trained on; system metrics side by side
   (:mod:`.evaluate`); the decision (:mod:`.compare`) uses the recent slice when it has one, the test split
   otherwise.
6. **Promote or keep** — through the registry's locked, audited moves. Every step is an audit row with its
   numbers, and the challenger's lineage tags tell the story (``perftune models show``).

The spec is the champion's original study spec (kept with the study's MLflow run), unless one is given.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from perftune._faults import checkpoint
from perftune.errors import PerftuneError, UsageError
from perftune.registry.catalog import CHAMPION, ModelRegistry
from perftune.spec import Spec, parse_spec

log = logging.getLogger("perftune.retrain")

# the study (and its dataset) whose spec and budget a chain of retrainings keeps
ORIGIN_TAG = "perftune.retrain.origin_study_run_id"
ORIGIN_DATASET_TAG = "perftune.retrain.origin_dataset"


@dataclass
class Step:
    """One decision of the loop, as printed and as stored in the audit log."""

    what: str  # trigger | skip | data | search | study | register | compare | promote | keep | rollback | …
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    steps: list[Step] = field(default_factory=list)
    challenger: str | None = None
    promoted: bool = False
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.__dict__ for s in self.steps], "challenger": self.challenger,
                "promoted": self.promoted, "dry_run": self.dry_run}  # fmt: skip


def study_of(client: Any, run_id: str) -> tuple[Spec | None, Any]:
    """The spec and the result of the study whose MLflow parent run is ``run_id`` (from its artifacts)."""
    from perftune.errors import StudyStateError
    from perftune.results import load_study
    from perftune.track.artifacts import read_text_artifact

    spec_text = read_text_artifact(client, run_id, "spec.yaml") if run_id else None
    summary = read_text_artifact(client, run_id, "summary.json") if run_id else None
    spec = parse_spec(spec_text, origin=f"spec.yaml of run {run_id}") if spec_text else None
    if summary is None:
        return spec, None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "summary.json").write_text(summary)
        try:
            return spec, load_study(tmp)
        except StudyStateError:
            return spec, None


class Retrainer:
    """The retraining policy of one registered model, against one tracking store and scoring log."""

    def __init__(self, name: str, tracking_uri: str, scoring_uri: str, workspace: str | Path | None = None,
                 spec: Spec | None = None, say: Callable[[Step], None] = lambda step: None) -> None:  # fmt: skip
        """``workspace``: where the retraining data and studies go (default: the champion's own workspace)."""
        from perftune.serve.scoring import scoring_engine

        self.name, self.spec_override = name, spec
        self.registry = ModelRegistry(tracking_uri)
        self.scoring_uri = scoring_uri
        self.engine = scoring_engine(scoring_uri)
        self.given_workspace = str(Path(workspace).resolve()) if workspace is not None else None
        self.say = say
        self._studies: dict[str, tuple[Spec | None, Any]] = {}

    def close(self) -> None:
        self.engine.dispose()
        self.registry.close()

    # ------------------------------------------------------------------------------------------ helpers

    def champion(self) -> Any:
        aliases = self.registry.aliases(self.name)
        if CHAMPION not in aliases:
            raise UsageError(f"{self.name} has no champion to retrain; `perftune promote {self.name} VERSION` first")
        return self.registry.client.get_model_version(self.name, aliases[CHAMPION])

    def spec_for(self, champion: Any) -> Spec:
        """The spec whose retrain policy, constraints and search apply: ``--spec``, else the original study's."""
        if self.spec_override is not None:
            return self.spec_override
        origin, _ = _origin(champion)
        spec, _ = self._study(origin)
        if spec is None:
            raise UsageError(
                f"{self.name} v{champion.version}'s study run {origin or '(none)'} keeps no spec.yaml; "
                "give the spec with --spec"
            )
        return spec

    def _study(self, run_id: str) -> tuple[Spec | None, Any]:
        """:func:`study_of`, downloaded once per run id (the spec and the search read the same study)."""
        if run_id not in self._studies:
            self._studies[run_id] = study_of(self.registry.client, run_id)
        return self._studies[run_id]

    def _step(self, outcome: Outcome, what: str, message: str, **details: Any) -> Step:
        step = Step(what, message, details)
        outcome.steps.append(step)
        self.say(step)
        return step

    def last_retrain(self) -> datetime | None:
        for entry in reversed(self.registry.history(self.name)):
            if entry.action == "retrain":
                return entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=timezone.utc)
        return None

    def champion_since(self) -> datetime | None:
        entry = self.registry.champion_since(self.name)
        if entry is None:
            return None
        return entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=timezone.utc)

    # ------------------------------------------------------------------------------------------ the loop

    def run(self, check: Any = None, force: bool = False, dry_run: bool = False,
            now: datetime | None = None) -> Outcome:  # fmt: skip
        """Run the policy once; ``check`` is a monitor check of the champion (one is run when None)."""
        from perftune.retrain import triggers

        now = now or datetime.now(timezone.utc)
        outcome = Outcome(dry_run=dry_run)
        champion = self.champion()
        number = str(champion.version)
        self.workspace = self.given_workspace or _recorded_workspace(champion)
        spec = self.spec_for(champion).model_copy(update={"workspace": self.workspace})
        policy = spec.retrain
        since = self.champion_since()
        if force:
            reasons = ["on demand (perftune retrain --force)"]
        else:
            if check is not None and (check.model, str(check.version)) != (self.name, number):
                self._step(outcome, "skip", f"the check is of {check.model} v{check.version}, but the champion is "
                           f"v{number} now; the next check judges it")  # fmt: skip
                return outcome
            if check is None:
                check = self._check(spec, save=not dry_run)
            reasons = triggers.fired(policy.triggers, check, now, since)
        trigger = {"check_id": getattr(check, "check_id", None), "reasons": reasons,
                   "findings": list(getattr(check, "findings", []))}  # fmt: skip
        if not reasons:
            self._step(outcome, "skip", f"no trigger fired for {self.name} v{number}; nothing to do", **trigger)
            return outcome
        self._step(outcome, "trigger", "; ".join(reasons), **trigger)
        waiting = None if force else triggers.cooling_down(policy.triggers, self.last_retrain(), now)
        if waiting:
            self._step(outcome, "skip", waiting)
            return outcome

        if dry_run:
            self._retrain(champion, spec, trigger, since, now, outcome, op=None)
            return outcome
        # journaled (perftune.registry.journal): a kill leaves what the next registry command settles
        with self.registry.journal.operation("retrain", self.name, {"champion": number, "reasons": reasons}) as op:
            self._retrain(champion, spec, trigger, since, now, outcome, op)
        return outcome

    def _retrain(self, champion: Any, spec: Spec, trigger: dict[str, Any], since: datetime | None, now: datetime,
                 outcome: Outcome, op: int | None) -> None:  # fmt: skip
        """Data → search → study → challenger → comparison → decision; ``op``: the journal entry (None: a dry run,
        which stops after the search plan and changes nothing)."""
        from perftune.retrain import data as retrain_data

        number, journal = str(champion.version), self.registry.journal
        assembled = retrain_data.assemble(champion, self.engine, spec.retrain.data, since, now, spec.seed)
        if op is not None:
            retrain_data.store(assembled, self.workspace, self.name)
            journal.step(op, "its data was stored", store=assembled.reference)
            checkpoint("retrain.after_data")
        where = f" as store:{assembled.reference}" if assembled.stored is not None else ""
        self._step(outcome, "data", assembled.describe() + where, **assembled.lineage,
                   version=assembled.reference if assembled.stored else None)  # fmt: skip

        search = self._search(champion, spec, assembled, now, dry_run=op is None)
        self._step(outcome, "search", search.describe(), trials=search.trials, points=search.points,
                   warm_start=search.source)  # fmt: skip
        if op is None:
            self._step(outcome, "skip", "dry run: nothing trained, registered or moved")
            return

        self.registry.record(self.name, "retrain", number, "; ".join(trigger["reasons"]),
                             {"trigger": trigger, "data": assembled.lineage, "store": assembled.reference,
                              "search": {"trials": search.trials, "warm_start": search.source},
                              "operation": op})  # fmt: skip
        journal.step(op, "its retrain audit row was written")
        checkpoint("retrain.after_record")
        challenger = self._train_and_register(search, champion, trigger, assembled, outcome, op)
        if challenger is None:
            return
        outcome.challenger = challenger
        checkpoint("retrain.after_register")
        self._compare_and_decide(spec, champion, challenger, assembled, outcome, op)

    def _check(self, spec: Spec, save: bool = True) -> Any:
        from perftune.monitor.check import Monitor

        monitor = Monitor(f"{self.name}@{CHAMPION}", self.registry.tracking_uri, self.scoring_uri)
        try:
            return monitor.check(save=save)  # a dry run leaves the monitor's history (its baselines) as it was
        finally:
            monitor.close()

    def _search(self, champion: Any, spec: Spec, assembled: Any, now: datetime, dry_run: bool) -> Any:
        from perftune.retrain.warmstart import plan_search

        origin_run, origin_dataset = _origin(champion)
        previous_run = champion.tags.get("perftune.study_run_id", "")
        _, original = self._study(origin_run)
        _, previous = self._study(previous_run)
        dataset = champion.tags.get("perftune.dataset", "")
        source = {"study": previous.name if previous else None, "parent_run_id": previous_run}
        reference = assembled.reference if assembled.stored is not None else f"{self.name}-retrain"
        return plan_search(
            spec, _trials(original, origin_dataset), _trials(previous, dataset), source, reference,
            assembled.target, assembled.task, f"{spec.name}-retrain-{now:%Y%m%dT%H%M%S}", self.registry.tracking_uri,
            spec.retrain.search.budget, spec.retrain.search.warm_start, check=not dry_run,
            transform=assembled.transform,
        )  # fmt: skip

    def _train_and_register(self, search: Any, champion: Any, trigger: dict[str, Any], assembled: Any,
                            outcome: Outcome, op: int) -> str | None:  # fmt: skip
        from perftune.registry.register import register
        from perftune.tuning.engine import run_study

        out = Path(self.workspace) / "runs" / (search.spec.name or "retrain")
        study_run = {"experiment": search.spec.tracking.experiment, "tag": ["mlflow.runName", search.spec.name]}
        self.registry.journal.step(op, "its study began", study_out=str(out), runs=[study_run])
        study = run_study(search.spec, out=out)
        self.registry.journal.step(op, "its study finished")
        checkpoint("retrain.after_study")
        counts: dict[str, int] = {}
        for t in study.trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        compute = study.compute()
        self._step(outcome, "study", f"{len(study.trials)} trials in {study.wall_time_s:.1f} s wall, "
                   f"{compute['cpu_s']:.1f} CPU-s ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})",
                   out=str(out), compute=compute)  # fmt: skip
        try:
            registered = register(out, self.name, tracking_uri=self.registry.tracking_uri)
        except PerftuneError as exc:  # GateFailed among them: nothing was registered
            self._step(outcome, "keep", f"no challenger: {exc}")
            self.registry.record(self.name, "keep", str(champion.version), f"retraining produced no challenger: {exc}",
                                 op=op)  # fmt: skip
            return None
        version = str(registered.version)
        self.registry.journal.step(op, f"its challenger v{version} was registered", challenger=version)
        origin, origin_dataset = _origin(champion)
        tags = {
            ORIGIN_TAG: origin,
            ORIGIN_DATASET_TAG: origin_dataset,
            "perftune.retrain.from_version": str(champion.version),
            "perftune.retrain.trigger": json.dumps(trigger, default=str),
            "perftune.retrain.data": json.dumps({"store": assembled.reference, **assembled.lineage}, default=str),
            "perftune.retrain.warm_start": json.dumps(search.source or {"none": "cold start"}, default=str),
        }
        for key, value in tags.items():
            self.registry.client.set_model_version_tag(self.name, version, key, value)
        message = f"{self.name} v{version} registered as challenger (gate passed), trial {registered.trial.trial_id}"
        self._step(outcome, "register", message, version=version, test_metrics=registered.test_metrics)
        return version

    def _compare_and_decide(self, spec: Spec, champion: Any, challenger: str, assembled: Any,
                            outcome: Outcome, op: int) -> None:  # fmt: skip
        from perftune.explain.importance import load_importance
        from perftune.retrain import data as retrain_data
        from perftune.retrain import evaluate
        from perftune.retrain.compare import compare, decide

        uri = self.registry.tracking_uri
        number = str(champion.version)
        a, b = evaluate.load(uri, self.name, number), evaluate.load(uri, self.name, challenger)
        columns = assembled.feature_names
        promote = spec.retrain.promote
        comparisons = {}
        for where, X, y, left_out in assembled.comparison_sets():  # only rows neither version trained on
            if len(y) >= retrain_data.MIN_HOLDOUT_ROWS:  # fewer rows cannot tell two versions apart
                comparisons[where] = compare(y, evaluate.predict(a, X, columns), evaluate.predict(b, X, columns),
                                             assembled.task, promote.margin, promote.alpha, seed=spec.seed,
                                             left_out=left_out)  # fmt: skip
        if not comparisons:
            reason = (f"fewer than {retrain_data.MIN_HOLDOUT_ROWS} labelled rows to compare v{number} and "
                      f"v{challenger} on")  # fmt: skip
            self._keep(outcome, challenger, reason, {"reasons": [reason]}, op)
            return
        deciding = "recent" if "recent" in comparisons else "test split"
        measured = evaluate.measure(a, b, assembled.test_X, columns, spec.evaluation.latency_rows,
                                    spec.evaluation.throughput_batch)  # fmt: skip
        challenger_version = self.registry.version(self.name, challenger)
        metrics = {**self.registry.registered_metrics(challenger_version), **measured.challenger}
        constraints = [c for c in spec.constraints if c.task in (None, assembled.task)]
        decision = decide([comparisons[deciding]], metrics, constraints)
        client = self.registry.client
        change = evaluate.importance_change(load_importance(client, champion),
                                            load_importance(client, challenger_version))  # fmt: skip
        details = {
            "champion": number, "challenger": challenger, "decided_on": deciding,
            "comparisons": {k: c.__dict__ for k, c in comparisons.items()},
            "system": {"champion": measured.champion, "challenger": measured.challenger, "latency": measured.latency},
            "broken": decision.broken, "reasons": decision.reasons, "importance": change,
        }  # fmt: skip
        lines = [f"{k}: {_describe(c)}" for k, c in comparisons.items()]
        a_sys, b_sys = measured.champion, measured.challenger
        lines.append(f"latency: {measured.latency}; size {a_sys['model_size_bytes']:.0f} → "
                     f"{b_sys['model_size_bytes']:.0f} B")  # fmt: skip
        lines.append(evaluate.describe_importance(change))
        self._step(outcome, "compare", f"v{number} vs v{challenger} on the same rows — " + "; ".join(lines), **details)
        client.set_model_version_tag(self.name, challenger, "perftune.retrain.comparison",
                                     json.dumps(details, default=str))  # fmt: skip
        reason = "; ".join(decision.reasons)
        if decision.promote:
            try:
                self.registry.promote(self.name, challenger, reason=f"retrained challenger beats v{number}: {reason}",
                                      details=details, expect=number, op=op)  # fmt: skip
            except UsageError as exc:  # the champion moved while the challenger trained: it was not compared
                self._keep(outcome, challenger, str(exc), details, op)
                return
            client.set_model_version_tag(self.name, challenger, "perftune.retrain.decision", "promoted")
            outcome.promoted = True
            self._step(outcome, "promote", f"v{challenger} promoted to champion: {reason}")
        else:
            client.set_model_version_tag(self.name, challenger, "perftune.retrain.decision", "kept: " + reason[:4000])
            self._keep(outcome, challenger, reason, details, op)

    def _keep(self, outcome: Outcome, challenger: str, reason: str, details: dict[str, Any], op: int) -> None:
        """The challenger stays challenger: an audit row (settling the retraining's journal entry) and a step."""
        self.registry.record(self.name, "keep", challenger, f"kept as challenger: {reason}", details, op=op)
        self._step(outcome, "keep", f"v{challenger} kept as challenger: {reason}")


def _describe(c: Any) -> str:
    left_out = f"; {c.left_out} rows a version trained on left out" if c.left_out else ""
    return (f"{c.metric} {c.champion:.4g} → {c.challenger:.4g} on {c.rows} rows "
            f"({c.test} p = {c.p_value:.3g}{left_out})")  # fmt: skip


def _recorded_workspace(champion: Any) -> str:
    recipe = champion.tags.get("perftune.refit")
    if not recipe:
        raise UsageError(f"{champion.name} v{champion.version} has no refit recipe; give --workspace")
    from perftune.registry.register import RefitPlan

    return RefitPlan.from_json(recipe).workspace


def _origin(champion: Any) -> tuple[str, str]:
    """The original study's MLflow run and dataset of a chain of retrainings (the champion's own, first)."""
    return (
        champion.tags.get(ORIGIN_TAG) or champion.tags.get("perftune.study_run_id", ""),
        champion.tags.get(ORIGIN_DATASET_TAG) or champion.tags.get("perftune.dataset", ""),
    )


def _trials(study: Any, dataset: str) -> list[Any]:
    """The study's trials of ``dataset`` (a retraining study has one dataset, under its store name)."""
    if study is None:
        return []
    exact = [g for g in study.groups if g.dataset == dataset]
    chosen = exact or (study.groups if len({g.dataset for g in study.groups}) == 1 else [])
    return [t for g in chosen for t in g.trials]
