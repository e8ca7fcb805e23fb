"""Retraining under concept drift: never retrained vs perftune's automatic loop vs a full re-search. (Prints.)

Scenario, built from a real dataset — PMLB ``529_pollen`` (regression, 3848 rows, 4 features), shuffled
(seed 0). The first 1500 rows are the initial data: stored in the data store, tuned by the original study
(``ORIGINAL``: a grid of 112 trials over two SGD families, with a train-time constraint and projected early
stopping), registered and promoted as v1. The other 2348 rows arrive as six production windows, one simulated
day apart. From window 2 on, the concept changes: the effect of ``RIDGE`` on the target flips sign
(``y += −2·b·RIDGE``, with ``b`` its least-squares coefficient on the initial data) — the inputs look the same,
only their relation to the label moves, so only labelled performance can see it.

After each window its rows are logged to the scoring log as the server logs them, under the version that served
them, with their labels as feedback, and then:

  (a) **never retrained**: v1 serves every window;
  (b) **perftune's loop**: ``Retrainer.run`` — a monitor check of the champion, the spec's triggers (realized
      RMSE worse than the test split by 5 %), recency-weighted data (half-life 1 day: the initial data weigh
      less as the days pass), a warm-started search of ``budget`` × the original trials, the challenger
      registered and compared with the champion on the newest held-out labelled rows (paired bootstrap), and
      promoted only when better by the margin, beyond noise and within every budget;
  (c) **full re-search**: whenever (b) retrains, the full original search from scratch on the same data table
      (b) assembled, its best feasible trial registered (refit, test, gate) and served from the next window.

Quality: RMSE on each window of the model serving it, and the mean over the windows after the first
retraining. Compute: the retraining studies' CPU-seconds (trials) and each retraining's wall time (study,
registration and, for (b), the comparison). Target: (b) recovers ≥ 90 % of (c)'s quality (RMSE_c / RMSE_b ≥
0.9) at ≤ 1/3 of its compute (CPU-s of trials). Also printed: the share of (c)'s improvement over (a) that (b)
achieves, (RMSE_a − RMSE_b) / (RMSE_a − RMSE_c).

Usage: ``PERFTUNE_DATA_DIR=../shared/datasets python benchmarks/retrain.py [--budget 0.3] [--keep DIR]``
(about 5–10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

ORIGINAL = """
name: pollen
datasets: [{{name: "pollen-initial", source: store}}]
models: [sgd_linear, sgd_svm]
search:
  space:
    batch_size: {{powers_of_two: {{from: 3, until: 512}}}}
    learning_rate: {{powers_of_ten: {{from: -4, to: -1}}}}
    alpha: [0.0001, 0.001]
    epochs: 10
objectives: [rmse]
constraints:
  - train_time_s <= 5
  - latency_ms_p95 <= 50
early_stopping: {{policy: projected, min_observations: 2}}
gate:
  - rmse <= 10
retrain:
  triggers: {{performance_drop: 0.05, dataset_drift: false, cooldown: null}}
  data: {{recency_half_life: 1d, holdout_fraction: 0.3}}
  search: {{budget: {budget}}}
  promote: {{margin: 0.01}}
workspace: {workspace}
"""
INITIAL_ROWS, WINDOWS, DRIFT_FROM = 1500, 6, 2
MODEL, FULL = "pollen", "pollen-full"


def scenario() -> tuple[list[str], str, pd.DataFrame, list[tuple[np.ndarray, np.ndarray]]]:
    from perftune.data import load_dataset
    from perftune.spec import DatasetSpec

    data = load_dataset(DatasetSpec(name="529_pollen"))
    order = np.random.default_rng(0).permutation(data.n_rows)
    X, y = data.X[order], data.y[order]
    initial = pd.DataFrame(X[:INITIAL_ROWS], columns=data.feature_names)
    initial[data.target] = y[:INITIAL_ROWS]
    j = data.feature_names.index("RIDGE")
    design = np.c_[X[:INITIAL_ROWS], np.ones(INITIAL_ROWS)]
    b = np.linalg.lstsq(design, y[:INITIAL_ROWS], rcond=None)[0][j]
    windows = []
    for w, rows in enumerate(np.array_split(np.arange(INITIAL_ROWS, data.n_rows), WINDOWS)):
        yw = y[rows] - (2 * b * X[rows, j] if w >= DRIFT_FROM else 0.0)
        windows.append((X[rows], yw))
    return data.feature_names, data.target, initial, windows


def log_window(engine, model, version: str, X: np.ndarray, y: np.ndarray, columns: list[str], at: datetime) -> None:
    """The window's requests (8 rows each) as the server logs them, and their labels as feedback."""
    from perftune.serve.feedback import attach_labels
    from perftune.serve.scoring import inputs_f64, insert_rows

    rows, items = [], []
    predictions = model.predict(pd.DataFrame(X, columns=columns))
    for i in range(0, len(X), 8):
        batch = np.ascontiguousarray(X[i : i + 8])
        key = uuid.uuid4().hex
        rows.append({"request_id": key, "client_id": None, "at": at + timedelta(seconds=i), "model": MODEL,
                     "version": version, "endpoint": "invocations", "rows": len(batch),
                     "inputs": orjson.dumps(batch.tolist()).decode(), "inputs_f64": inputs_f64(batch),
                     "outputs": orjson.dumps(predictions[i : i + 8].tolist()).decode(), "latency_ms": 1.0})  # fmt: skip
        items.append((key, y[i : i + 8].tolist()))
    insert_rows(engine, rows)
    attach_labels(engine, MODEL, items)


def rmse(model, X: np.ndarray, y: np.ndarray, columns: list[str]) -> float:
    return float(np.sqrt(np.mean((model.predict(pd.DataFrame(X, columns=columns)) - y) ** 2)))


def full_search(spec, reference: str, workspace: Path, tag: str, uri: str) -> tuple[object, float, float, int]:
    """(c): the original search from scratch on the table (b) assembled; its best trial registered."""
    from perftune.registry.register import register
    from perftune.retrain.evaluate import load
    from perftune.spec import DatasetSpec
    from perftune.tuning.engine import run_study

    started = time.perf_counter()
    full = spec.model_copy(update={"name": f"pollen-full-{tag}",
                                   "datasets": [DatasetSpec(name=reference, source="store")]}, deep=True)  # fmt: skip
    study = run_study(full, out=workspace / "runs" / f"pollen-full-{tag}")
    registered = register(study.out_dir, FULL, tracking_uri=uri)
    return (
        load(uri, FULL, str(registered.version)),
        study.compute()["cpu_s"],
        time.perf_counter() - started,
        len(study.trials),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.3, help="retrain.search.budget of the loop (the default)")
    parser.add_argument("--keep", type=Path, help="keep the workspace in this folder")
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_PROGRESS_BAR", "false")

    import perftune
    from perftune.data.store import DataStore
    from perftune.registry.catalog import ModelRegistry
    from perftune.registry.register import register
    from perftune.retrain.evaluate import load
    from perftune.retrain.loop import Retrainer
    from perftune.serve.scoring import scoring_engine
    from perftune.spec import parse_spec

    root = Path(tempfile.mkdtemp(prefix="perftune-bench-retrain-"))
    workspace = root / "ws"
    columns, target, initial, windows = scenario()
    DataStore(workspace).put(initial, "pollen-initial", target, "529_pollen, first 1500 shuffled rows", {})
    spec_path = root / "pollen.yaml"
    spec_path.write_text(ORIGINAL.format(budget=args.budget, workspace=workspace))
    spec = parse_spec(spec_path.read_text())

    started = time.perf_counter()
    original = perftune.tune(spec_path, out=workspace / "runs" / "pollen")
    uri = original.tracking["uri"]
    register(original.out_dir, MODEL)
    registry = ModelRegistry(uri)
    registry.promote(MODEL, "1", reason="the original study's best")
    original_wall = time.perf_counter() - started
    print(f"original study: {len(original.trials)} trials, {original.compute()['cpu_s']:.1f} CPU-s, "
          f"{original_wall:.1f} s wall (with registration)")  # fmt: skip

    scoring = f"sqlite:///{root / 'scoring.db'}"
    engine = scoring_engine(scoring)
    loop = Retrainer(MODEL, uri, scoring, workspace, say=lambda step: print(f"    {step.what}: {step.message}"))
    never = load(uri, MODEL, "1")
    served_b, version_b = never, "1"
    served_c = never
    costs = {"b": {"cpu_s": 0.0, "wall_s": 0.0, "trials": 0, "runs": 0},
             "c": {"cpu_s": 0.0, "wall_s": 0.0, "trials": 0, "runs": 0}}  # fmt: skip
    rows = []
    first_retrain = None
    day0 = datetime.now(timezone.utc)
    for w, (X, y) in enumerate(windows):
        at = day0 + timedelta(days=w)
        rows.append((w, rmse(never, X, y, columns), rmse(served_b, X, y, columns), rmse(served_c, X, y, columns),
                     version_b))  # fmt: skip
        print(f"window {w} ({'drifted' if w >= DRIFT_FROM else 'as trained'}): RMSE a {rows[-1][1]:.3f}  "
              f"b {rows[-1][2]:.3f} (v{version_b})  c {rows[-1][3]:.3f}")  # fmt: skip
        if w == len(windows) - 1:
            break
        log_window(engine, served_b, version_b, X, y, columns, at)
        t0 = time.perf_counter()
        outcome = loop.run(now=at + timedelta(hours=23))
        wall = time.perf_counter() - t0
        study = next((s for s in outcome.steps if s.what == "study"), None)
        if study is None:
            continue
        first_retrain = first_retrain if first_retrain is not None else w
        costs["b"]["cpu_s"] += study.details["compute"]["cpu_s"]
        costs["b"]["wall_s"] += wall
        costs["b"]["trials"] += int(study.message.split()[0])
        costs["b"]["runs"] += 1
        if outcome.promoted:
            version_b = registry.aliases(MODEL)["champion"]
            served_b = load(uri, MODEL, version_b)
        data = next(s for s in outcome.steps if s.what == "data")
        model, cpu, wall_c, trials = full_search(spec, data.details["version"], workspace, str(w), uri)
        served_c = model
        costs["c"]["cpu_s"] += cpu
        costs["c"]["wall_s"] += wall_c
        costs["c"]["trials"] += trials
        costs["c"]["runs"] += 1
    loop.close()
    registry.close()
    engine.dispose()

    print()
    print("| window | concept | (a) never retrained | (b) perftune loop | serving | (c) full re-search |")
    print("|---|---|---|---|---|---|")
    for w, a, b, c, v in rows:
        print(f"| {w} | {'changed' if w >= DRIFT_FROM else 'original'} | {a:.3f} | {b:.3f} | v{v} | {c:.3f} |")
    if first_retrain is None:
        print("the loop never retrained: no trigger fired")
        return
    after = [r for r in rows if r[0] > first_retrain]
    mean = {k: float(np.mean([r[i] for r in after])) for k, i in (("a", 1), ("b", 2), ("c", 3))}
    print()
    print(f"mean RMSE over windows {after[0][0]}–{after[-1][0]} (after the first retraining): "
          f"a {mean['a']:.3f}, b {mean['b']:.3f}, c {mean['c']:.3f}")  # fmt: skip
    print()
    print("| | retrainings | trials | trial CPU-s | retraining wall s |")
    print("|---|---|---|---|---|")
    for k, label in (("b", "(b) perftune loop"), ("c", "(c) full re-search")):
        cost = costs[k]
        print(f"| {label} | {cost['runs']} | {cost['trials']} | {cost['cpu_s']:.1f} | {cost['wall_s']:.1f} |")
    quality = mean["c"] / mean["b"]
    compute = costs["b"]["cpu_s"] / costs["c"]["cpu_s"] if costs["c"]["cpu_s"] else float("nan")
    wall = costs["b"]["wall_s"] / costs["c"]["wall_s"] if costs["c"]["wall_s"] else float("nan")
    share = (mean["a"] - mean["b"]) / (mean["a"] - mean["c"]) if mean["a"] != mean["c"] else float("nan")
    print()
    print(f"quality of (b) relative to (c): RMSE_c / RMSE_b = {quality:.3f} (target >= 0.9: "
          f"{'met' if quality >= 0.9 else 'NOT met'})")  # fmt: skip
    print(f"share of (c)'s improvement over (a) that (b) achieves: {share:.1%}")
    print(f"compute of (b) relative to (c): trial CPU-s {compute:.3f} (target <= 1/3: "
          f"{'met' if compute <= 1 / 3 else 'NOT met'}), retraining wall {wall:.3f}")  # fmt: skip
    if args.keep:
        shutil.copytree(root, args.keep, dirs_exist_ok=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
