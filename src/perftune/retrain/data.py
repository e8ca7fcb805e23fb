"""The retraining data: the champion's training split plus the labelled scoring data since it took over.

* **Recent rows** are the champion's requests that got labels through feedback, logged since it became champion
  (all of its requests when the audit log does not say), the newest ``max_recent_rows`` of them. A seeded
  random ``holdout_fraction`` of the rows within one ``recency_half_life`` of the newest (the world as it is
  now) is held out: champion and challenger are compared on it, and it is never trained on.
* **Training rows** are the champion's own training split (``include_training``), read again through its refit
  recipe — for a version that was itself retrained that is its retraining data, so the chain goes on. Its
  test split stays out too: the comparison uses it.
* **Rows compared on are never trained on**, judged by content (the input as the model takes it: features, text
  or pixels, normalised as :mod:`.content` says; not the label, not the request): a served row that repeats a row
  of the champion's test split or of the recent holdout is left out of the training part, counted in the lineage
  (``excluded_served_rows``) and in :meth:`RetrainData.describe` ("dropped 113 served rows that are in the test
  split"); a served row the champion trained on is never held out. Otherwise a user who sends test articles back
  with their labels (the obvious way to check a model) trains the challenger on the rows it is then graded on.
  :meth:`RetrainData.comparison_sets` checks the compared rows once more against both versions' training parts
  and leaves out, and counts, what either trained on (e.g. a test row the champion's own data repeats).
* **Recency weights**: a row's weight halves every ``recency_half_life`` of age, counted back from the newest
  row (a scoring row's age from its request time; a training row's from when its table was built, on top of
  the weight it already had). Training
  draws rows in proportion to their weights (:func:`perftune.tuning.trial.run_trial`).

The table is stored as a new version of ``<model>-retrain`` in the data store, its lineage naming the champion,
its data and the scoring window; the retraining study reads it as ``store:<model>-retrain@<version>``.

A model whose features step derives its features from raw rows (texts, images) is retrained on raw rows too:
its training articles or images and the texts or pixel rows it was served. They are stored as a text or images
version, with a seeded stratified split holding out the champion's share of test rows, and the retraining study
fits the champion's transform (its ``transform:`` entry) again on the new training split. Served pixels are
stored as bytes (rounded to whole values in 0…255, as the idx images are).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perftune.data.unstructured import IMAGE_COLUMN, LABEL_COLUMN, SPLIT_COLUMN, TEXT_COLUMN, assign_split
from perftune.errors import PerftuneError
from perftune.measure.ml import class_key
from perftune.retrain.content import Keys, row_keys
from perftune.spec import RetrainDataSpec, parse_window

WEIGHT_COLUMN = "perftune_weight"
MIN_WEIGHT = 1e-9  # a row a hundred half-lives old still weighs this, so no fold's weights sum to 0
MIN_HOLDOUT_ROWS = 20  # fewer held-out rows cannot tell two versions apart; the test split decides then


@dataclass
class RetrainData:
    """What ``assemble`` found and built (``stored`` is None until it is stored)."""

    frame: pd.DataFrame  # features, target and the weight column
    target: str
    task: str
    feature_names: list[str]
    training_rows: int
    recent_rows: int
    window: dict[str, Any]  # the scoring window the recent rows came from
    holdout_X: np.ndarray
    holdout_y: np.ndarray
    test_X: np.ndarray  # the champion's original test split
    test_y: np.ndarray
    lineage: dict[str, Any] = field(default_factory=dict)
    stored: Any = None  # the data store's StoredVersion
    kind: str = "table"  # or "text" / "images": raw rows a features step turns into features
    meta: dict[str, Any] = field(default_factory=dict)  # the text/images version's facts (classes, image size)
    transform: Any = None  # the champion's TransformSpec (None: the kind's default), kept by the retraining study
    # served rows left out of training because they repeat a row compared on: {"test_split": n, "holdout": n}
    excluded: dict[str, int] = field(default_factory=dict)
    trained: Keys = field(default_factory=Keys, repr=False)  # rows either version trained on (content keys)

    @property
    def reference(self) -> str:
        assert self.stored is not None
        return f"{self.stored.name}@{self.stored.version}"

    def describe(self) -> str:
        w = self.frame[WEIGHT_COLUMN].to_numpy()
        held = (
            f"{len(self.holdout_y)} of the newest held out for the comparison" if len(self.holdout_y)
            else "none held out: too few recent rows to compare on"
        )  # fmt: skip
        dropped = [
            f"dropped {n} served rows that are in {what}"
            for n, what in ((self.excluded.get("test_split", 0), "the test split"),
                            (self.excluded.get("holdout", 0), "the held-out rows"))
            if n
        ]  # fmt: skip
        return (
            f"{self.training_rows} training rows of the champion + {self.recent_rows} labelled scoring rows "
            f"({held}); " + "".join(f"{d}; " for d in dropped) + f"weights {w.min():.3g}–{w.max():.3g}"
        )

    def comparison_sets(self) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
        """The rows to compare champion and challenger on: ``(where, X, y, left_out)`` for the recent holdout and
        the champion's test split, each without the rows either version trained on (by content: the champion's
        training split, the retraining table's rows), ``left_out`` of them. Served rows that repeat these rows
        never enter the table, so what is left out here is data the champion itself trained on (a test row
        repeated in its training split)."""
        sets = []
        for where, X, y in (("recent", self.holdout_X, self.holdout_y), ("test split", self.test_X, self.test_y)):
            unseen = ~self.trained.contains(row_keys(X, self.kind))
            sets.append((where, X[unseen], y[unseen], int((~unseen).sum())))
        return sets


def _decay(age_s: np.ndarray | float, half_life_s: float | None) -> np.ndarray | float:
    if half_life_s is None:
        return np.ones_like(age_s) if isinstance(age_s, np.ndarray) else 1.0
    return np.power(0.5, np.maximum(age_s, 0.0) / half_life_s)


def assemble(
    champion: Any,
    engine: Any,
    settings: RetrainDataSpec,
    since: datetime | None,
    now: datetime | None = None,
    seed: int = 0,
) -> RetrainData:
    """Build the retraining table of ``champion`` (an MLflow model version) from its lineage and the scoring log."""
    from perftune.data import Locations, load_dataset
    from perftune.data.split import holdout_split
    from perftune.monitor import window as windows
    from perftune.registry.register import RefitPlan

    now = now or datetime.now(timezone.utc)
    recipe = champion.tags.get("perftune.refit")
    if not recipe:
        raise PerftuneError(
            f"{champion.name} v{champion.version} has no refit recipe (tag perftune.refit) to find its training "
            "data; register it with perftune register"
        )
    plan = RefitPlan.from_json(recipe)
    # the champion's data is where it was recorded (a retrained champion's table is in that data store)
    where = Locations.default(Path(plan.workspace), recorded_data_dir=plan.data_dir)
    dataset = load_dataset(plan.dataset, seed=plan.seed, where=where)
    train, test = holdout_split(dataset, plan.evaluation.test_fraction, plan.seed)
    half_life = parse_window(settings.recency_half_life)[1] if settings.recency_half_life else None
    raw = dataset.raw_inputs  # texts N×1 or images N×H×W as served, when a features step derives the features
    rows = dataset.X if raw is None else raw.reshape(len(raw), -1)
    kind = "table" if raw is None else str((dataset.transform or {}).get("data", "text"))
    columns = [TEXT_COLUMN] if kind == "text" else list(dataset.feature_names)

    number = str(champion.version)
    bounds = windows.since(engine, champion.name, number, since)
    got = windows.labelled(engine, champion.name, number, bounds)
    recent_X, recent_y, recent_at = got.X, got.labels, got.at
    if len(got) > settings.max_recent_rows:
        recent_X, recent_y, recent_at = (a[-settings.max_recent_rows :] for a in (recent_X, recent_y, recent_at))
    if len(recent_y) and recent_X.shape[1] != rows.shape[1]:
        raise PerftuneError(
            f"the scoring log holds rows of {recent_X.shape[1]} columns for {champion.name} v{number}, whose "
            f"training data has {rows.shape[1]}"
        )
    # by content (the input, not the label or the request): what each served row repeats
    recent_keys = row_keys(recent_X, kind)
    champion_trained = Keys.of(rows[train], kind)
    held_out = _holdout(recent_at, settings.holdout_fraction, half_life, seed, ~champion_trained.contains(recent_keys))
    in_test = Keys.of(rows[test], kind).contains(recent_keys) & ~held_out
    repeats_holdout = Keys(k for k, held in zip(recent_keys, held_out, strict=True) if held).contains(recent_keys)
    repeats_holdout &= ~held_out & ~in_test
    fit = ~held_out & ~in_test & ~repeats_holdout
    fit_X, fit_y, fit_at = recent_X[fit], recent_y[fit], recent_at[fit]
    # ages from the newest row (weights are relative: the newest row weighs 1), floored so none is exactly 0
    newest = float(recent_at.max()) if len(recent_at) else now.timestamp()
    recent_weights = _decay(newest - fit_at, half_life)

    parts_X, parts_y, parts_w = [], [], []
    if settings.include_training:
        base = dataset.weights[train] if dataset.weights is not None else np.ones(len(train))
        # the table's rows are as old as the table (a store version) or the champion's registration
        built = _built_at(plan, dataset, where) or datetime.fromtimestamp(
            champion.creation_timestamp / 1000, timezone.utc
        )
        parts_X.append(rows[train])
        parts_y.append(dataset.y[train])
        parts_w.append(base * _decay(newest - built.timestamp(), half_life))
    if len(fit_y):
        parts_X.append(fit_X)
        parts_y.append(_as_target(fit_y, dataset.y))
        parts_w.append(recent_weights)
    if not parts_X or sum(len(y) for y in parts_y) == 0:
        raise PerftuneError(
            f"no data to retrain {champion.name} on: no labelled scoring rows since v{number} took over"
            + ("" if settings.include_training else " and retrain.data.include_training is false")
            + "; send labels with POST /v2/models/{name}/feedback or `perftune feedback`"
        )
    weights = np.maximum(np.concatenate(parts_w), MIN_WEIGHT)
    if raw is None:
        frame = pd.DataFrame(np.concatenate(parts_X), columns=dataset.feature_names)
        if dataset.target in frame.columns or WEIGHT_COLUMN in frame.columns:
            raise PerftuneError(f"a feature of {champion.name} is named {dataset.target!r} or {WEIGHT_COLUMN!r}")
        frame[dataset.target] = np.concatenate(parts_y)
        meta: dict[str, Any] = {}
    else:
        frame, meta = _raw_rows(kind, np.concatenate(parts_X), np.concatenate(parts_y), raw.shape[1:])
        # the retraining study holds out the champion's share of test rows, as a table's study draws its own
        frame[SPLIT_COLUMN] = assign_split(frame[LABEL_COLUMN].astype(str), len(test) / dataset.n_rows, seed)
    frame[WEIGHT_COLUMN] = weights
    training_rows = len(train) if settings.include_training else 0
    excluded = {"test_split": int(in_test.sum()), "holdout": int(repeats_holdout.sum())}
    window = {
        "model": champion.name, "version": number,
        "start": bounds.start.isoformat() if bounds.start else None,
        "end": bounds.end.isoformat() if bounds.end else None,
        "requests": bounds.requests, "labelled_rows": len(got), "used_rows": len(recent_y),
    }  # fmt: skip
    lineage = {
        "champion": f"{champion.name} v{number}",
        "training_data": {"dataset": plan.dataset.name, "fingerprint": dataset.fingerprint, "rows": training_rows},
        "scoring_window": window,
        "holdout_rows": int(held_out.sum()),
        "excluded_served_rows": excluded,
        "recency_half_life": settings.recency_half_life,
    }
    return RetrainData(
        frame=frame, target=dataset.target, task=dataset.task, feature_names=columns,
        training_rows=training_rows, recent_rows=len(recent_y), window=window,
        holdout_X=recent_X[held_out], holdout_y=_as_target(recent_y[held_out], dataset.y),
        test_X=rows[test], test_y=dataset.y[test], lineage=lineage, kind=kind, meta=meta,
        transform=plan.dataset.transform, excluded=excluded,
        trained=champion_trained | Keys(k for k, used in zip(recent_keys, fit, strict=True) if used),
    )  # fmt: skip


def _holdout(at: np.ndarray, fraction: float, half_life_s: float | None, seed: int,
             eligible: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Mask of the recent rows held out for the comparison (never trained on): a seeded random ``fraction`` of
    the rows within one half-life of the newest — the world as it is now, so a concept change is judged on rows
    after it while training still sees most of them; older rows all go to training. Only ``eligible`` rows (the
    caller's: those the champion did not train on) are held out. Fewer than :data:`MIN_HOLDOUT_ROWS` held-out
    rows hold nothing out (the original test split decides then)."""
    n = len(at)
    held = np.zeros(n, dtype=bool)
    if not n:
        return held
    recent = at >= at.max() - half_life_s if half_life_s is not None else np.ones(n, dtype=bool)
    candidates = np.flatnonzero(recent & (eligible if eligible is not None else True))
    chosen = np.random.default_rng(seed).permutation(candidates)[: math.floor(fraction * len(candidates))]
    if len(chosen) < MIN_HOLDOUT_ROWS:
        return held
    held[chosen] = True
    return held


def _raw_rows(kind: str, X: np.ndarray, y: np.ndarray, shape: tuple[int, ...]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Raw training rows as a text or images version's columns (its ``split`` is drawn by the caller)."""
    classes = sorted({str(c) for c in y}) if y.dtype.kind not in "iu" else sorted(int(c) for c in set(y))
    if kind == "text":
        return pd.DataFrame({TEXT_COLUMN: [str(t) for t in X[:, 0]], LABEL_COLUMN: y}), {"classes": classes}
    height, width = shape
    pixels = np.clip(np.rint(np.asarray(X, dtype=np.float64)), 0, 255).astype(np.uint8)
    frame = pd.DataFrame({IMAGE_COLUMN: [row.tobytes() for row in pixels], LABEL_COLUMN: y})
    return frame, {"height": int(height), "width": int(width), "features": int(height * width), "classes": classes}


def _as_target(labels: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Feedback labels in the training target's dtype, so classes compare equal; one-line errors otherwise."""
    if np.issubdtype(like.dtype, np.number):
        try:
            values = labels.astype(np.float64)
        except (TypeError, ValueError):
            raise PerftuneError(
                "feedback labels are not numbers, but the model was trained on numeric targets"
            ) from None
        if np.issubdtype(like.dtype, np.integer):
            if not np.all(np.mod(values, 1) == 0):
                raise PerftuneError("feedback labels hold fractions, but the model's classes are whole numbers")
            return values.astype(like.dtype)
        return values.astype(like.dtype)
    if like.dtype.kind in "US":
        return labels.astype(str).astype(like.dtype)
    # class names (e.g. folders "1"…"5"): a label read back as 1.0 is the class "1", as serving's feedback check says
    names = {class_key(c): c for c in np.unique(like)}
    return np.array([names.get(class_key(label), label) for label in labels], dtype=object)


def _built_at(plan: Any, dataset: Any, where: Any) -> datetime | None:
    """When the champion's training table was built, for a data-store table that carries weights."""
    if dataset.weights is None or (plan.dataset.source or "") != "store":
        return None
    from perftune.data.store import DataStore

    stored, _ = DataStore(where.workspace).resolve(plan.dataset.name)
    return datetime.fromisoformat(stored.created_at)


def store(data: RetrainData, workspace: str | Path, model: str) -> RetrainData:
    """Write the table (or the text/images rows) as a new version of ``<model>-retrain`` in the data store."""
    from perftune.data.store import DataStore

    name, source = f"{model}-retrain", f"perftune retrain {model}"
    if data.kind == "table":
        data.stored = DataStore(workspace).put(data.frame, name, data.target, source, data.lineage, WEIGHT_COLUMN)
    else:
        data.stored = DataStore(workspace).put_unstructured(
            data.frame, name, data.kind, source, {}, {}, data.lineage, data.meta, weight=WEIGHT_COLUMN
        )
    return data
