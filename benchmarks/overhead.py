"""How much does perftune cost on top of the training it runs? (Prints ratios; no assertions.)

The same 24 small SGD trials (529_pollen, linear regression, batch size × learning rate × alpha) run

  (a) as a plain sequential Python loop of ``partial_fit`` calls: the raw compute;
  (b) through perftune: Ray Tune, every metric, budgets checked (policy none, so no trial stops),
      end-of-trial latency/size, MLflow tracking on SQLite;
  (c) through plain Ray Tune with default settings: the same loop as a function trainable reporting once
      per epoch, ``tune.with_parameters`` for the data, default Tuner/TuneConfig/RunConfig.

Both (b) and (c) are timed from before ``ray.init`` to after the last result, on a fresh Ray each.

Printed: ``overhead = perftune wall / (raw / cores)`` (1.0 = perfect parallel use of the cores with zero
cost), ``raytune_default / perftune``, and the probe's own time as a fraction of trial time.

Usage: ``python benchmarks/overhead.py [--epochs N]`` (PERFTUNE_DATA_DIR must point at the datasets).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import SGDRegressor

import perftune
from perftune.data import load_dataset, prepare
from perftune.spec import DatasetSpec, EvaluationSpec

BATCH_SIZES = [8, 16, 32]
LEARNING_RATES = [1e-4, 1e-3, 1e-2, 1e-1]
ALPHAS = [1e-4, 1e-3]


def configs() -> list[dict]:
    return [
        {"batch_size": b, "learning_rate": lr, "alpha": a} for b in BATCH_SIZES for lr in LEARNING_RATES for a in ALPHAS
    ]


def train(X: np.ndarray, y: np.ndarray, config: dict, epochs: int, on_epoch=None) -> SGDRegressor:
    """The raw work of one trial: mini-batch partial_fit with a constant learning rate."""
    model = SGDRegressor(alpha=config["alpha"], learning_rate="constant", eta0=config["learning_rate"], random_state=0)
    rng = np.random.default_rng(0)
    batch = config["batch_size"]
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            rows = order[start : start + batch]
            model.partial_fit(X[rows], y[rows])
        if on_epoch is not None:
            on_epoch(epoch, model)
    return model


def run_raw(data, epochs: int) -> float:
    fold = data.folds[0]
    start = time.perf_counter()
    for config in configs():
        train(fold.X_train, fold.y_train, config, epochs)
    return time.perf_counter() - start


def run_perftune(epochs: int, workdir: Path) -> tuple[float, list]:
    spec = workdir / "overhead.yaml"
    spec.write_text(
        textwrap.dedent(f"""
        name: overhead
        datasets: [529_pollen]
        models: [sgd_linear]
        search:
          space:
            batch_size: {BATCH_SIZES}
            learning_rate: {LEARNING_RATES}
            alpha: {ALPHAS}
            epochs: {epochs}
        objectives: [rmse]
        constraints: ['train_time_s <= 3600', 'memory_mb <= 8192']
        early_stopping: {{policy: none}}
        workspace: {workdir / "ws"}
    """)
    )
    start = time.perf_counter()
    result = perftune.tune(spec, out=workdir / "out")
    return time.perf_counter() - start, result.trials


def run_raytune_default(data, epochs: int, workdir: Path) -> float:
    import ray
    from ray import tune

    def trainable(config, X, y):
        train(
            X,
            y,
            config,
            epochs,
            on_epoch=lambda e, m: tune.report({"epoch": e, "mse": float(np.mean((m.predict(X[:256]) - y[:256]) ** 2))}),
        )

    fold = data.folds[0]
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    space = {
        "batch_size": tune.grid_search(BATCH_SIZES),
        "learning_rate": tune.grid_search(LEARNING_RATES),
        "alpha": tune.grid_search(ALPHAS),
    }
    tuner = tune.Tuner(
        tune.with_parameters(trainable, X=fold.X_train, y=fold.y_train),
        param_space=space,
        run_config=tune.RunConfig(storage_path=str(workdir / "ray_default"), name="default"),
    )
    with contextlib.redirect_stdout(io.StringIO()):  # its console tables are part of the cost, not of the output
        grid = tuner.fit()
    elapsed = time.perf_counter() - start
    assert len(grid) == len(configs()) and not grid.errors
    ray.shutdown()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    data = prepare(load_dataset(DatasetSpec(name="529_pollen")), EvaluationSpec(), seed=0)
    print(
        f"{len(configs())} trials of SGD linear regression on 529_pollen ({len(data.folds[0].y_train)} rows), "
        f"{args.epochs} epochs each, {cores} cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        raw = run_raw(data, args.epochs)
        print(f"(a) raw sequential loop      {raw:8.2f} s   (raw / cores = {raw / cores:.2f} s)")
        perftune_wall, trials = run_perftune(args.epochs, workdir)
        print(f"(b) perftune (all metrics)   {perftune_wall:8.2f} s")
        default_wall = run_raytune_default(data, args.epochs, workdir)
        print(f"(c) Ray Tune, defaults       {default_wall:8.2f} s")
    probe = sum(t.metrics.get("probe_overhead_s", 0.0) for t in trials)
    trial_time = sum(t.trial_s for t in trials)
    steps = sum(t.metrics.get("steps", 0) for t in trials)
    assert len(trials) == len(configs()) and all(t.status == "completed" for t in trials)
    print()
    print(f"overhead = perftune wall / (raw / cores)  = {perftune_wall / (raw / cores):.2f}   (target <= 2.0)")
    print(f"raytune_default / perftune                = {default_wall / perftune_wall:.2f}   (target > 1)")
    print(
        f"probe cost / trial time                   = {100 * probe / trial_time:.3f} %  (target < 1 %; "
        f"{1e6 * probe / max(math.ceil(steps / 100), 1):.0f} µs per sample)"
    )


if __name__ == "__main__":
    main()
