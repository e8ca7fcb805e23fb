"""How much does perftune cost on top of the training it runs? (Prints ratios; no assertions.)

The same 24 small SGD trials (529_pollen, linear regression, batch size × learning rate × alpha) run

  (a) as a plain sequential Python loop of ``partial_fit`` calls: the raw compute;
  (b) through perftune: Ray Tune, every metric, budgets checked after every window and continuously by the
      watchdog (policy ``violation`` with bounds no trial reaches, so no trial stops), end-of-trial
      latency/size, MLflow tracking on SQLite;
  (c) through plain Ray Tune with default settings: the same loop as a function trainable reporting once
      per epoch, ``tune.with_parameters`` for the data, default Tuner/TuneConfig/RunConfig;
  (d) through Optuna in-process, what a user might pick instead: a ``GridSampler`` over the same 24
      configurations, ``study.optimize(n_jobs=cores)`` (threads), the validation MSE as the objective;
  (e) through a plain ``joblib.Parallel(n_jobs=cores)`` loop (loky worker processes), the simplest parallel
      loop there is — no metrics, no budgets, no tracking.

(f) the floor: Ray start, one no-op trial per core through Tune, Ray stop — what any run on a local Ray pays.

(b) is timed from before ``ray.init`` to after Ray's stop (the call returns then); (c) from before ``ray.init``
to its last result, so (c) is spared Ray's stop (about a second here). Each runs on a fresh Ray; the
modules of both (ray, mlflow, perftune) are imported before any timing, so neither pays import time.
The fixed cost of a run (Ray start-up, worker processes, opening the MLflow store) does not depend on how
long trials are, so the ratios are printed for two trial lengths (``--epochs``, default 12 and 30).

Printed: ``overhead = perftune wall / (raw / cores)`` (1.0 = perfect parallel use of the cores with zero
cost), ``raytune_default / perftune``, perftune's wall against (d) and (e), and the measurement's own cost
as a fraction of trial time: the probe's time (per window) and the watchdog thread's CPU time (readings
50 ms – 1 s apart, by headroom), and their sum.

Usage: ``python benchmarks/overhead.py [--epochs N [N ...]]`` (PERFTUNE_DATA_DIR must point at the datasets).
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
        constraints: ['train_time_s <= 3600', 'cpu_s <= 3600', 'memory_mb <= 8192']
        early_stopping: {{policy: violation}}
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


def run_ray_floor(workdir: Path) -> float:
    """What any local Ray Tune run pays whatever its trials: Ray start, one no-op trial per core (so that every
    worker process starts), Ray stop. perftune cannot go below this with a local Ray."""
    import ray
    from ray import tune

    def noop(config):
        tune.report({"done": 1})

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    with contextlib.redirect_stdout(io.StringIO()):
        tune.Tuner(
            noop,
            param_space={"i": tune.grid_search(list(range(os.cpu_count() or 1)))},
            run_config=tune.RunConfig(storage_path=str(workdir / "ray_floor"), name="floor", verbose=0),
        ).fit()
    ray.shutdown()
    return time.perf_counter() - start


def _val_mse(model: SGDRegressor, fold) -> float:
    return float(np.mean((model.predict(fold.X_val) - fold.y_val) ** 2))


def run_optuna(data, epochs: int, cores: int) -> float:
    import optuna

    fold = data.folds[0]
    grid = {"batch_size": BATCH_SIZES, "learning_rate": LEARNING_RATES, "alpha": ALPHAS}

    def objective(trial) -> float:
        config = {name: trial.suggest_categorical(name, values) for name, values in grid.items()}
        return _val_mse(train(fold.X_train, fold.y_train, config, epochs), fold)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    study.optimize(objective, n_trials=len(configs()), n_jobs=cores)
    elapsed = time.perf_counter() - start
    assert len(study.trials) == len(configs())
    return elapsed


def run_joblib(data, epochs: int, cores: int) -> float:
    from joblib import Parallel, delayed

    fold = data.folds[0]

    def one(config: dict) -> float:
        return _val_mse(train(fold.X_train, fold.y_train, config, epochs), fold)

    start = time.perf_counter()
    scores = Parallel(n_jobs=cores)(delayed(one)(config) for config in configs())
    elapsed = time.perf_counter() - start
    assert len(scores) == len(configs())
    return elapsed


def measure(data, epochs: int, cores: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        raw = run_raw(data, epochs)
        floor = run_ray_floor(workdir)
        perftune_wall, trials = run_perftune(epochs, workdir)
        default_wall = run_raytune_default(data, epochs, workdir)
        optuna_wall = run_optuna(data, epochs, cores)
        joblib_wall = run_joblib(data, epochs, cores)
    assert len(trials) == len(configs()) and all(t.status == "completed" for t in trials)
    probe = sum(t.metrics.get("probe_overhead_s", 0.0) for t in trials)
    watchdog = sum(t.metrics.get("watchdog_overhead_s", 0.0) for t in trials)
    trial_s = sum(t.trial_s for t in trials)
    samples = sum(max(math.ceil(t.metrics.get("steps", 0) / 100), 1) for t in trials)
    return {
        "epochs": epochs,
        "raw_s": raw,
        "perftune_s": perftune_wall,
        "raytune_default_s": default_wall,
        "overhead": perftune_wall / (raw / cores),
        "ray_floor_s": floor,
        "floor_overhead": (raw / cores + floor) / (raw / cores),
        "raytune_default_over_perftune": default_wall / perftune_wall,
        "optuna_s": optuna_wall,
        "joblib_s": joblib_wall,
        "probe_pct": 100 * probe / trial_s,
        "watchdog_pct": 100 * watchdog / trial_s,
        "probe_us_per_sample": 1e6 * probe / samples,
        "trial_s_mean": raw / len(configs()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[12, 30])
    args = parser.parse_args()
    import mlflow  # noqa: F401  (import cost is not what is measured)
    import ray.tune  # noqa: F401

    import perftune.tuning.engine  # noqa: F401

    cores = os.cpu_count() or 1
    data = prepare(load_dataset(DatasetSpec(name="529_pollen")), EvaluationSpec(), seed=0)
    print(
        f"{len(configs())} trials of SGD linear regression on 529_pollen ({len(data.folds[0].y_train)} rows), "
        f"{cores} cores"
    )
    rows = [measure(data, epochs, cores) for epochs in args.epochs]
    print()
    print(
        f"{'epochs':>6} {'raw trial':>10} {'raw':>8} {'raw/cores':>10} {'perftune':>9} {'Ray Tune':>9} "
        f"{'overhead':>9} {'default/perftune':>17} {'probe':>8} {'watchdog':>9} {'both':>7}"
    )
    for r in rows:
        print(
            f"{r['epochs']:>6} {r['trial_s_mean']:>9.2f}s {r['raw_s']:>7.2f}s {r['raw_s'] / cores:>9.2f}s "
            f"{r['perftune_s']:>8.2f}s {r['raytune_default_s']:>8.2f}s {r['overhead']:>9.2f} "
            f"{r['raytune_default_over_perftune']:>17.2f} {r['probe_pct']:>7.3f}% {r['watchdog_pct']:>8.3f}% "
            f"{r['probe_pct'] + r['watchdog_pct']:>6.3f}%"
        )
    print()
    header = ["epochs", "perftune", "Optuna n_jobs", "joblib", "perftune/Optuna", "perftune/joblib"]
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 9, 14, 8, 16, 16), strict=True)))
    for r in rows:
        print(
            f"{r['epochs']:>6} {r['perftune_s']:>8.2f}s {r['optuna_s']:>13.2f}s {r['joblib_s']:>7.2f}s "
            f"{r['perftune_s'] / r['optuna_s']:>16.2f} {r['perftune_s'] / r['joblib_s']:>16.2f}"
        )
    print()
    print(" ".join(f"{h:>{w}}" for h, w in zip(["epochs", "Ray floor", "floor overhead"], (6, 10, 15), strict=True)))
    for r in rows:
        print(f"{r['epochs']:>6} {r['ray_floor_s']:>9.2f}s {r['floor_overhead']:>15.2f}")
    print()
    print("overhead = perftune wall / (raw / cores)   targets <= 1.3 (0.66 s trials), <= 1.15 (1.9 s trials)")
    print(
        "Ray floor = Ray start + one no-op Tune trial per core + Ray stop; floor overhead = (raw / cores + floor) /"
        " (raw / cores): the lowest overhead any local Ray Tune run of these trials can have"
    )
    print("default/perftune = Ray Tune defaults wall / perftune wall   target > 1")
    print(f"probe = probe time / trial time  ({rows[-1]['probe_us_per_sample']:.0f} µs per sample)")
    print("watchdog = watchdog thread CPU time / trial time   both = probe + watchdog   target < 1 %")


if __name__ == "__main__":
    main()
