"""The retraining loop on a real study, registry and scoring log (rows logged as the server logs them):
triggers, the dry run, the recency-weighted data, a challenger that is not better, the cooldown, probation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from perftune.data import load_dataset
from perftune.spec import DatasetSpec, ProbationSpec, RetrainDataSpec

STUDY = """
name: loop
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: [16, 32, 64]
    learning_rate: [0.001, 0.01]
    epochs: 5
objectives: [accuracy]
gate:
  - accuracy >= 0.6
retrain:
  search: {budget: 0.5}
"""


@dataclass
class Base:
    root: Path
    uri: str
    data: object
    model: object = None
    scoring: list[str] = field(default_factory=list)

    def engine(self, name: str):
        from perftune.serve.scoring import scoring_engine

        return scoring_engine(f"sqlite:///{self.root / name}")

    def log(self, engine, X: np.ndarray, labels: np.ndarray | None, at: datetime, version: str = "1",
            json_only: bool = False) -> None:  # fmt: skip
        """Requests of 8 rows as the server logs them (and their labels, as feedback does); ``json_only``: without
        the float64 copy, as a dead-letter replay writes them."""
        from perftune.serve.feedback import attach_labels
        from perftune.serve.scoring import inputs_f64, insert_rows

        rows, items = [], []
        for i in range(0, len(X), 8):
            batch = np.ascontiguousarray(X[i : i + 8])
            predictions = self.model.predict(pd.DataFrame(batch, columns=self.data.feature_names))
            key = uuid.uuid4().hex
            rows.append({"request_id": key, "client_id": None, "at": at + timedelta(milliseconds=i), "model": "clf",
                         "version": version, "endpoint": "invocations", "rows": len(batch),
                         "inputs": orjson.dumps(batch.tolist()).decode(),
                         "inputs_f64": None if json_only else inputs_f64(batch),
                         "outputs": orjson.dumps(predictions.tolist()).decode(), "latency_ms": 1.0})  # fmt: skip
            if labels is not None:
                items.append((key, labels[i : i + 8].tolist()))
        insert_rows(engine, rows)
        if items:
            attach_labels(engine, "clf", items)


@pytest.fixture(scope="module")
def base(champion_from_study, tmp_path_factory) -> Base:
    from perftune.retrain.evaluate import load

    root = tmp_path_factory.mktemp("loop")
    uri = champion_from_study(root, STUDY, "clf")
    b = Base(root, uri, load_dataset(DatasetSpec(name="diabetes")))
    b.model = load(uri, "clf", "1")
    return b


def retrainer(base: Base, scoring: str, **kwargs):
    from perftune.retrain.loop import Retrainer

    return Retrainer("clf", base.uri, f"sqlite:///{base.root / scoring}", **kwargs)


def flipped(data) -> np.ndarray:
    return np.where(data.y == data.classes[0], data.classes[1], data.classes[0])


def test_a_healthy_champion_fires_no_trigger(base):
    engine = base.engine("healthy.db")
    base.log(engine, base.data.X, base.data.y, datetime.now(timezone.utc))
    loop = retrainer(base, "healthy.db")
    try:
        outcome = loop.run()
    finally:
        loop.close()
    assert [s.what for s in outcome.steps] == ["skip"] and "no trigger fired" in outcome.steps[0].message


def test_a_dry_run_says_each_decision_and_changes_nothing(base):
    from perftune.registry.catalog import ModelRegistry

    engine = base.engine("dry.db")
    base.log(engine, base.data.X, flipped(base.data), datetime.now(timezone.utc))
    loop = retrainer(base, "dry.db")
    try:
        outcome = loop.run(dry_run=True)
    finally:
        loop.close()
    assert [s.what for s in outcome.steps] == ["trigger", "data", "search", "skip"]
    assert "realized accuracy" in outcome.steps[0].message
    search = outcome.steps[2]
    assert search.details["trials"] == 3 and len(search.details["points"]) == 3  # half of the 6, warm-started
    assert not (base.root / "ws" / "data" / "clf-retrain").exists()
    registry = ModelRegistry(base.uri)
    assert [e.action for e in registry.history("clf")] == ["register", "promote"]
    registry.close()


def test_retraining_data_is_recency_weighted_and_keeps_the_held_out_rows_out(base):
    from perftune.registry.catalog import ModelRegistry
    from perftune.retrain.data import WEIGHT_COLUMN, assemble, store

    engine = base.engine("weights.db")
    registry = ModelRegistry(base.uri)
    champion = registry.resolve("clf@champion")
    registered = datetime.fromtimestamp(champion.creation_timestamp / 1000, timezone.utc)
    later = registered + timedelta(days=14)  # recent rows two half-lives newer than the training data
    base.log(engine, base.data.X[:400], base.data.y[:400], later)
    settings = RetrainDataSpec(recency_half_life="7d", holdout_fraction=0.25)
    got = assemble(champion, engine, settings, since=None, now=later + timedelta(seconds=1))
    registry.close()
    tested = int(np.sum(split_of(base, "1")[2] < 400))  # served rows of the champion's test split: never trained on
    held = tested // 4  # a quarter of them held out (a row the champion trained on cannot judge it)
    assert got.recent_rows == 400 and len(got.holdout_y) == held and got.training_rows == 537
    assert got.lineage["excluded_served_rows"] == {"test_split": tested - held, "holdout": 0}
    w = got.frame[WEIGHT_COLUMN].to_numpy()
    assert np.allclose(w[:537], 0.25, rtol=1e-3) and np.all(w[537:] > 0.99)  # 14 days = two half-lives
    assert len(got.frame) == 537 + 400 - tested
    trained = {tuple(row) for row in got.frame[base.data.feature_names].to_numpy()[537:]}
    assert not trained & {tuple(row) for row in got.holdout_X}  # held-out rows are never trained on
    assert len(got.test_y) == 231  # the champion's original test split, for the comparison
    stored = store(got, base.root / "ws", "clf").stored
    assert stored.weight == WEIGHT_COLUMN and stored.lineage["scoring_window"]["labelled_rows"] == 400


def test_a_challenger_no_better_than_the_champion_is_kept_with_the_reason(base):
    from perftune.registry.catalog import ModelRegistry

    engine = base.engine("same.db")
    base.log(engine, base.data.X, base.data.y, datetime.now(timezone.utc))  # the concept has not changed
    loop = retrainer(base, "same.db")
    try:
        outcome = loop.run(force=True)
    finally:
        loop.close()
    assert [s.what for s in outcome.steps] == ["trigger", "data", "search", "study", "register", "compare", "keep"]
    assert not outcome.promoted and outcome.challenger == "2"
    keep = outcome.steps[-1].message
    assert "below the margin" in keep or "not beyond noise" in keep
    registry = ModelRegistry(base.uri)
    assert registry.aliases("clf") == {"champion": "1", "challenger": "2"}
    entries = registry.history("clf")
    assert [e.action for e in entries][-3:] == ["retrain", "register", "keep"]
    assert entries[-1].details["comparisons"]["recent"]["rows"] == 69  # 30 % of the 231 served rows of the test split
    detail = registry.show("clf", "2")
    assert detail.retraining["from_version"] == 1 and detail.retraining["decision"].startswith("kept: ")
    registry.close()


def test_a_second_retraining_waits_for_the_cooldown(base):
    engine = base.engine("cool.db")
    base.log(engine, base.data.X, flipped(base.data), datetime.now(timezone.utc))
    loop = retrainer(base, "cool.db")  # the retraining of the test above was just now; cooldown 1h
    try:
        outcome = loop.run()
    finally:
        loop.close()
    assert [s.what for s in outcome.steps] == ["trigger", "skip"] and "cooldown 1h" in outcome.steps[1].message


def test_probation_limits():
    from perftune.monitor.check import SystemMetrics
    from perftune.monitor.performance import Performance
    from perftune.retrain.probation import degradations

    def System(error_rate: float, latency_ms_p95: float) -> SystemMetrics:
        return SystemMetrics(300, 300, 60.0, latency_ms_p95 / 2, latency_ms_p95, 5.0, 5.0, error_rate, 2.0)

    @dataclass
    class Check:
        performance: list
        system: SystemMetrics

    policy = ProbationSpec(max_drop=0.05, max_error_rate=0.01, max_latency_increase=0.5)
    fine = Check([Performance("accuracy", "realized", 0.74, 0.70, 0.78, 300, 0.76)], System(0.0, 10.0))
    assert degradations(fine, policy, previous_latency_p95=8.0) == []
    bad = Check([Performance("accuracy", "realized", 0.5, 0.45, 0.55, 300, 0.76)], System(0.02, 13.0))
    found = degradations(bad, policy, previous_latency_p95=8.0)
    assert len(found) == 3 and "max_drop" in found[0] and "error rate" in found[1] and "latency" in found[2]


def test_the_comparison_holds_out_rows_of_the_current_world_only():
    from perftune.retrain.data import _holdout

    day = 86_400.0
    at = np.r_[np.zeros(300), np.full(300, 3 * day)]  # 300 rows three days before the newest 300
    held = _holdout(at, 0.3, half_life_s=day, seed=0)
    assert held.sum() == 90 and not held[:300].any()  # older rows all go to training
    assert _holdout(at, 0.3, half_life_s=None, seed=0).sum() == 180  # without a half-life: any recent row
    assert not _holdout(at[:50], 0.3, half_life_s=None, seed=0).any()  # 15 rows: too few, none held out


def test_feedback_labels_become_the_training_targets_classes():
    """Labels read back from the scoring log as numbers are the model's classes, whatever their names' type."""
    from perftune.errors import PerftuneError
    from perftune.retrain.data import _as_target

    named = np.array(["1", "2", "10"], dtype=object)  # text classes that look like numbers (folders "1", "2", …)
    assert _as_target(np.array([1.0, 10.0, "2"], dtype=object), named).tolist() == ["1", "10", "2"]
    assert _as_target(np.array([2.0, 1.0]), np.array([1, 2])).tolist() == [2, 1]
    topics = np.array(["sport", "tech"], dtype=object)
    assert _as_target(np.array(["sport"], dtype=object), topics).tolist() == ["sport"]
    with pytest.raises(PerftuneError, match="hold fractions"):
        _as_target(np.array([1.5]), np.array([1, 2]))


def split_of(base: Base, version: str):
    """A version's data and its training and test positions, read again through its refit recipe (what it was
    fitted and tested on)."""
    from perftune.data import Locations
    from perftune.data.split import holdout_split
    from perftune.registry.catalog import ModelRegistry
    from perftune.registry.register import RefitPlan

    registry = ModelRegistry(base.uri)
    plan = RefitPlan.from_json(registry.version("clf", version).tags["perftune.refit"])
    registry.close()
    where = Locations.default(Path(plan.workspace), recorded_data_dir=plan.data_dir)
    data = load_dataset(plan.dataset, seed=plan.seed, where=where)
    return (data, *holdout_split(data, plan.evaluation.test_fraction, plan.seed))


def as_set(X: np.ndarray) -> set[tuple]:
    """Rows as tuples of float32 values: this test's own "same row" (a client's float32 copy included)."""
    return {tuple(row) for row in np.asarray(X, dtype=np.float64).astype(np.float32)}


def test_test_split_rows_sent_back_as_feedback_are_neither_trained_on_nor_graded_on(base):
    """A user sends the champion's test rows back with their labels — through the server's float64 copy, as JSON
    only and as a client's float32 array — among rows the champion trained on and new rows served twice: no test
    row enters the retraining table, the lineage and the printed step count them, and champion and challenger
    are compared only on rows neither of them trained on."""
    from collections import Counter

    from perftune.data.store import DataStore
    from perftune.registry.catalog import ModelRegistry
    from perftune.retrain.data import assemble

    data, train, test = split_of(base, "1")
    X, y = data.X, data.y
    engine, now = base.engine("leak.db"), datetime.now(timezone.utc)
    base.log(engine, X[test[:80]], y[test[:80]], now)
    base.log(engine, X[test[80:160]], y[test[80:160]], now, json_only=True)
    base.log(engine, X[test[160:]].astype(np.float32).astype(np.float64), y[test[160:]], now)
    base.log(engine, X[train[:200]], y[train[:200]], now)
    fresh = X[train[200:260]] + np.r_[0.5, np.zeros(X.shape[1] - 1)]  # rows of no split, each served twice
    base.log(engine, fresh, y[train[200:260]], now)
    base.log(engine, fresh, y[train[200:260]], now)
    loop = retrainer(base, "leak.db")
    try:
        outcome = loop.run(force=True)
    finally:
        loop.close()
    steps = {s.what: s for s in outcome.steps}
    assert outcome.challenger is not None and "compare" in steps, outcome.steps
    _, path = DataStore(base.root / "ws").resolve(steps["data"].details["version"])
    table = pd.read_parquet(path)[data.feature_names].to_numpy()
    assert not as_set(table) & as_set(X[test])  # no test row, however it came back, was trained on

    registry = ModelRegistry(base.uri)
    got = assemble(registry.resolve("clf@champion"), engine, RetrainDataSpec(), since=None)  # what the loop built
    registry.close()
    excluded = steps["data"].details["excluded_served_rows"]
    assert got.lineage["excluded_served_rows"] == excluded and got.recent_rows == 551
    held_test = len(as_set(got.holdout_X) & as_set(X[test]))
    copies_held = Counter(tuple(r) for r in np.asarray(got.holdout_X).astype(np.float32) if tuple(r) in as_set(fresh))
    assert excluded == {"test_split": 231 - held_test, "holdout": sum(n == 1 for n in copies_held.values())}
    assert excluded["test_split"] > 100 and excluded["holdout"] > 0
    assert f"dropped {excluded['test_split']} served rows that are in the test split" in steps["data"].message
    assert len(table) == len(train) + 551 - len(got.holdout_y) - excluded["test_split"] - excluded["holdout"]

    challenger_data, challenger_train, _ = split_of(base, outcome.challenger)
    trained = as_set(X[train]) | as_set(challenger_data.X[challenger_train]) | as_set(table)
    compared = steps["compare"].details["comparisons"]
    for where, rows, labels, left_out in got.comparison_sets():
        assert not as_set(rows) & trained, where  # neither version trained on a row they are compared on
        assert compared[where]["rows"] == len(labels) and compared[where]["left_out"] == left_out
    assert compared["recent"]["rows"] == len(got.holdout_y) == 105  # 30 % of the 351 rows no version trained on
    assert compared["test split"]["rows"] + compared["test split"]["left_out"] == 231
