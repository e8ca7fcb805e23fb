"""perftune's drift check vs Evidently's DataDriftPreset: same data, same machine, one run. (Prints; no assertions.)

Data, per size N (``--sizes``, default 10k, 100k and 1M rows): a reference and a current sample of N rows × 20
columns, generated with seeded numpy — 16 numeric columns of varied shapes (normal, lognormal, exponential,
uniform, gamma, beta, t, Laplace, Poisson counts with ties, a bimodal mixture …) and 4 categorical ones with 3–5
categories (at most 5, so perftune's registration infers them categorical, as Evidently's rule does; Evidently
is also told so explicitly). The current sample is a fresh draw with a +0.5 σ shift on ``n02`` and ``n06`` and
a frequency change on ``c2``: those three columns, and only those, should drift. The samples are written to a
temporary folder as ``.npy`` files, so every process (and both venvs) reads identical data.

Measured, each in a fresh subprocess (so peak memory is that measurement's own, and no run warms another):

  (0) perftune's reference profile build from the reference sample (done once per version, at ``perftune
      register``; reported apart, not part of a check);
  (a) perftune in memory: the current sample streamed in chunks of ``CHUNK_ROWS`` into a ``WindowSummary``,
      then ``check_drift`` (the profile JSON is read inside the timing);
  (b) perftune through the scoring log, the ``perftune monitor`` path: the current sample is first logged to a
      temporary SQLite scoring database as requests of 100 rows (not timed), then the timing covers
      ``window.bounds`` + ``window.chunks`` (inputs from the float64 copy the server stores beside
      the JSON; predictions parsed from JSON) + ``WindowSummary`` + ``check_drift``;
  (c) Evidently ``Report([DataDriftPreset()])`` on the two DataFrames, in its own venv (Evidently 0.7 needs
      pandas < 3), created by this script under ``.bench/evidently-venv``; the timing covers
      ``Dataset.from_pandas``, ``Report.run`` and reading the result (``snapshot.json()``); its per-column
      verdicts are its own ``Value Drift`` test statuses.

Imports are not in the time: each process imports its tool first (perftune's drift modules and the scipy its
tests import on first use; Evidently's presets and pandas), shown apart as ``import s``, paid once per process.
Each tool uses its defaults, which here are the same tests: references above 1000 rows get Wasserstein (normed
by the reference std) on numeric columns and Jensen–Shannon on categorical ones, threshold 0.1.
Memory: ``peak MB`` is the process's peak resident set (``VmHWM``: ``ru_maxrss`` can inherit the parent's
peak across exec), ``+MB`` that minus the resident set after the imports, before any data is loaded — so it
includes the data each tool holds (perftune in memory: the current sample; Evidently: both samples).
Printed: one table (time, memory, drifted columns, whether they are exactly the shifted ones), the ratios
Evidently / perftune per size, and the issue's target at 1M rows (≥ 50× faster, ≤ 1/4 of the memory).

Usage: ``python benchmarks/drift.py [--sizes 10000 100000 1000000] [--skip-evidently] [--skip-sqlite]``
(the first run installs Evidently into ``.bench/evidently-venv``; 1M rows take Evidently 1–2 minutes and 1.6 GB).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np  # the only import at the top: the Evidently venv runs this file too (``--worker evidently``)

EVIDENTLY = "0.7.23"  # the newest 0.7.x on the index when this was written
VENV = Path(__file__).resolve().parent.parent / ".bench" / "evidently-venv"
MODEL, VERSION, REQUEST_ROWS = "bench-drift", "1", 100

NUMERIC = [  # one sampler per numeric column
    lambda rng, n: rng.normal(0, 1, n),
    lambda rng, n: rng.normal(10, 2, n),
    lambda rng, n: rng.lognormal(0, 0.5, n),
    lambda rng, n: rng.exponential(1.0, n),
    lambda rng, n: rng.uniform(-1, 1, n),
    lambda rng, n: rng.gamma(2.0, 2.0, n),
    lambda rng, n: rng.beta(2, 5, n),
    lambda rng, n: rng.standard_t(5, n),
    lambda rng, n: rng.laplace(0, 1, n),
    lambda rng, n: rng.logistic(0, 1, n),
    lambda rng, n: rng.weibull(1.5, n),
    lambda rng, n: rng.chisquare(4, n),
    lambda rng, n: rng.poisson(20, n).astype(float),
    lambda rng, n: rng.triangular(0, 1, 4, n),
    lambda rng, n: rng.rayleigh(1.0, n),
    lambda rng, n: np.where(rng.random(n) < 0.3, rng.normal(-2, 0.5, n), rng.normal(2, 1, n)),
]
CATEGORICAL = [  # values, reference frequencies, current frequencies
    ([0, 1, 2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2]),
    ([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1], [0.25, 0.3, 0.2, 0.25]),  # c2: Jensen–Shannon 0.16
    ([0, 1, 2, 3, 4], [0.35, 0.25, 0.2, 0.12, 0.08], [0.35, 0.25, 0.2, 0.12, 0.08]),
    ([10, 20, 30, 40, 50], [0.2] * 5, [0.2] * 5),
]
NUMERIC_NAMES = [f"n{j + 1:02d}" for j in range(len(NUMERIC))]
CATEGORICAL_NAMES = [f"c{j + 1}" for j in range(len(CATEGORICAL))]
COLUMNS = NUMERIC_NAMES + CATEGORICAL_NAMES
SHIFTED = ["n02", "n06"]  # +0.5 σ
EXPECTED = [c for c in COLUMNS if c in [*SHIFTED, "c2"]]
TOOLS = {"memory": "perftune, in memory", "sqlite": "perftune, SQLite log", "evidently": f"Evidently {EVIDENTLY}"}


# -- data ------------------------------------------------------------------------------------------------


def sample(rows: int, current: bool) -> tuple[np.ndarray, np.ndarray]:
    """One sample (rows × 20, float64) and its predictions (a class from the unshifted ``n01``)."""
    rng = np.random.default_rng([rows, int(current)])
    numeric = []
    for name, draw in zip(NUMERIC_NAMES, NUMERIC, strict=True):
        column = draw(rng, rows)
        numeric.append(column + 0.5 * column.std() if current and name in SHIFTED else column)
    categorical = [
        rng.choice(np.asarray(values, dtype=float), rows, p=now if current else before)
        for values, before, now in CATEGORICAL
    ]
    X = np.column_stack(numeric + categorical)
    return X, (X[:, 0] > 0).astype(float)


def write_data(folder: Path, rows: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for role, current in (("reference", False), ("current", True)):
        X, predictions = sample(rows, current)
        np.save(folder / f"{role}.npy", X)
        np.save(folder / f"{role}_predictions.npy", predictions)


def fill_scoring_log(folder: Path) -> float:
    """Log the current sample to a fresh SQLite scoring database as requests of 100 rows (not measured)."""
    import orjson

    from perftune.serve.scoring import inputs_f64, insert_rows, scoring_engine

    start = time.perf_counter()
    X, predictions = np.load(folder / "current.npy"), np.load(folder / "current_predictions.npy")
    engine = scoring_engine(f"sqlite:///{folder / 'scoring.db'}")
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    batch = []
    for i, first in enumerate(range(0, len(X), REQUEST_ROWS)):
        block = slice(first, first + REQUEST_ROWS)
        batch.append(
            {
                "request_id": f"{i:032x}", "client_id": None, "at": t0 + timedelta(milliseconds=i), "model": MODEL,
                "version": VERSION, "endpoint": "invocations", "rows": len(X[block]), "latency_ms": 1.0,
                "inputs": orjson.dumps(X[block], option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                "inputs_f64": inputs_f64(X[block]),  # what perftune serve stores beside the JSON
                "outputs": orjson.dumps(predictions[block], option=orjson.OPT_SERIALIZE_NUMPY).decode(),
            }
        )  # fmt: skip
        if len(batch) == 1000:
            insert_rows(engine, batch)
            batch = []
    if batch:
        insert_rows(engine, batch)
    engine.dispose()
    return time.perf_counter() - start


# -- workers: one measurement each, in a fresh process ---------------------------------------------------


def memory_mb(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def work_profile(folder: Path) -> dict:
    from perftune.monitor.profile import CATEGORICAL as KIND
    from perftune.monitor.profile import ColumnProfile, ReferenceProfile

    X, predictions = np.load(folder / "reference.npy"), np.load(folder / "reference_predictions.npy")
    start = time.perf_counter()
    columns = [ColumnProfile.build(name, X[:, j]) for j, name in enumerate(COLUMNS)]  # kinds inferred, as register
    profile = ReferenceProfile(columns, ColumnProfile.build("prediction", predictions, KIND), "classification", len(X))
    (folder / "profile.json").write_text(json.dumps(profile.to_dict()))
    return {"time_s": time.perf_counter() - start, "categorical": [c.name for c in columns if c.kind == KIND]}


def work_memory(folder: Path) -> dict:
    from perftune.monitor.drift import check_drift
    from perftune.monitor.profile import ReferenceProfile, WindowSummary
    from perftune.monitor.window import CHUNK_ROWS

    X, predictions = np.load(folder / "current.npy"), np.load(folder / "current_predictions.npy")
    start = time.perf_counter()
    summary = WindowSummary(ReferenceProfile.from_dict(json.loads((folder / "profile.json").read_text())))
    for first in range(0, len(X), CHUNK_ROWS):
        summary.add(X[first : first + CHUNK_ROWS], predictions[first : first + CHUNK_ROWS])
    report = check_drift(summary)
    return {"time_s": time.perf_counter() - start, **verdicts(report)}


def work_sqlite(folder: Path) -> dict:
    from perftune.monitor import window
    from perftune.monitor.drift import check_drift
    from perftune.monitor.profile import ReferenceProfile, WindowSummary
    from perftune.serve.scoring import scoring_engine

    engine = scoring_engine(f"sqlite:///{folder / 'scoring.db'}")
    rows = len(np.load(folder / "current_predictions.npy", mmap_mode="r"))
    start = time.perf_counter()
    summary = WindowSummary(ReferenceProfile.from_dict(json.loads((folder / "profile.json").read_text())))
    bounds = window.bounds(engine, MODEL, VERSION, "rows", rows)
    for chunk in window.chunks(engine, MODEL, VERSION, bounds):
        summary.add(chunk.X, chunk.predictions)
    report = check_drift(summary)
    return {"time_s": time.perf_counter() - start, "window_rows": summary.rows, **verdicts(report)}


def verdicts(report) -> dict:
    return {"drifted": report.drifted_columns, "scores": {c.column: c.score for c in report.columns}}


def work_evidently(folder: Path) -> dict:
    import evidently
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference = pd.DataFrame(np.load(folder / "reference.npy"), columns=COLUMNS)
    current = pd.DataFrame(np.load(folder / "current.npy"), columns=COLUMNS)
    start = time.perf_counter()
    definition = DataDefinition(numerical_columns=NUMERIC_NAMES, categorical_columns=CATEGORICAL_NAMES)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    result = json.loads(snapshot.json())
    elapsed = time.perf_counter() - start
    # each column's ValueDrift metric has a "Value Drift" test bound to it: FAIL means Evidently saw drift
    column_of = {m["id"]: m["config"]["column"] for m in result["metrics"] if "column" in m["config"]}
    failed = {
        column_of[t["bound_test"]["metric_fingerprint"]]
        for t in result["tests"]
        if t["status"] == "FAIL" and t["bound_test"].get("metric_fingerprint") in column_of
    }
    scores = {m["config"]["column"]: m["value"] for m in result["metrics"] if "column" in m["config"]}
    drifted = [c for c in COLUMNS if c in failed]
    return {"time_s": elapsed, "drifted": drifted, "scores": scores, "version": evidently.__version__}


WORKERS = {"profile": work_profile, "memory": work_memory, "sqlite": work_sqlite, "evidently": work_evidently}
IMPORTS = {
    # perftune's drift tests import scipy when first used: a cost of the first check in a process, shown as import s
    "perftune": ["perftune.monitor.drift", "perftune.monitor.window", "perftune.serve.scoring", "scipy.stats"],
    "evidently": ["evidently.presets", "pandas"],
}


def worker(kind: str, folder: Path) -> None:
    start = time.perf_counter()
    for module in IMPORTS["evidently" if kind == "evidently" else "perftune"]:
        importlib.import_module(module)  # import cost is shown apart, not part of the time
    imports_s, baseline = time.perf_counter() - start, memory_mb("VmRSS")
    result = WORKERS[kind](folder)
    peak = memory_mb("VmHWM")
    print("RESULT " + json.dumps({**result, "import_s": imports_s, "peak_mb": peak, "increment_mb": peak - baseline}))


def measure(python: Path | str, kind: str, folder: Path) -> dict:
    env = dict(os.environ)
    if kind == "evidently":
        env.pop("PYTHONPATH", None)  # its venv holds everything it needs, nothing of perftune's
    done = subprocess.run(
        [str(python), __file__, "--worker", kind, str(folder)], capture_output=True, text=True, env=env
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"the {kind} measurement failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def evidently_python() -> Path:
    """The Evidently venv's interpreter, creating the venv on first use (``evidently==EVIDENTLY``, pandas < 3)."""
    python, marker = VENV / "bin" / "python", VENV / f".installed-evidently-{EVIDENTLY}"
    if not marker.exists():
        print(f"installing evidently=={EVIDENTLY} into {VENV} …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, f"evidently=={EVIDENTLY}", "pandas<3"], check=True)
        marker.touch()
    return python


# -- the run and its table -------------------------------------------------------------------------------


def run_size(rows: int, scratch: Path, evidently: Path | None, sqlite: bool) -> dict[str, dict]:
    folder = scratch / str(rows)
    write_data(folder, rows)
    results = {"profile": measure(sys.executable, "profile", folder)}
    results["memory"] = measure(sys.executable, "memory", folder)
    if sqlite:
        setup_s = fill_scoring_log(folder)
        print(f"{rows:,} rows: {rows // REQUEST_ROWS:,} requests logged to SQLite in {setup_s:.0f} s", flush=True)
        results["sqlite"] = measure(sys.executable, "sqlite", folder)
    if evidently is not None:
        results["evidently"] = measure(evidently, "evidently", folder)
    shutil.rmtree(folder)  # up to ~800 MB at 1M rows
    return results


def print_table(results: dict[int, dict[str, dict]]) -> None:
    header = f"{'rows':>9}  {'tool':22} {'time s':>8} {'peak MB':>8} {'+MB':>7} {'import s':>8}  {'drifted columns':18}"
    print(f"\n{header} right?")
    for rows, by_tool in results.items():
        for tool, r in by_tool.items():
            if tool == "profile":
                continue
            missed = [c for c in EXPECTED if c not in r["drifted"]]
            extra = [c for c in r["drifted"] if c not in EXPECTED]
            right = "yes" if not missed and not extra else f"no: missed {missed}, extra {extra}"
            print(
                f"{rows:>9,}  {TOOLS[tool]:22} {r['time_s']:>8.3f} {r['peak_mb']:>8.0f} {r['increment_mb']:>7.0f}"
                f" {r['import_s']:>8.2f}  {' '.join(r['drifted']) or '-':18} {right}"
            )
    print(f"(expected: {' '.join(EXPECTED)}; +MB = peak − resident set after imports, before the data;")
    print(" import s = the tool's imports in a fresh process, not in time s: paid once per process)")
    print("\nreference profile build (perftune register, once per version; not part of a check):")
    for rows, by_tool in results.items():
        p = by_tool["profile"]
        print(
            f"{rows:>9,} rows: {p['time_s']:.2f} s, peak {p['peak_mb']:.0f} MB (+{p['increment_mb']:.0f});"
            f" categorical as inferred: {' '.join(p['categorical'])}"
        )


def print_scores(results: dict[int, dict[str, dict]]) -> None:
    tools = [t for t in ("memory", "sqlite", "evidently") if t in next(iter(results.values()))]
    print(f"\nscores ({' / '.join(TOOLS[t] for t in tools)}), threshold 0.1:")
    for rows, by_tool in results.items():
        quiet = max((c for c in COLUMNS if c not in EXPECTED), key=lambda c: by_tool["memory"]["scores"][c])
        cells = [c + " " + " / ".join(f"{by_tool[t]['scores'][c]:.4f}" for t in tools) for c in [*EXPECTED, quiet]]
        print(f"{rows:>9,}  " + "   ".join(cells) + "  (the last: the highest unshifted column)")


def print_ratios(results: dict[int, dict[str, dict]]) -> None:
    if not all("evidently" in by_tool for by_tool in results.values()):
        return
    print("\nEvidently / perftune (time ×, peak memory ×, +MB ×):")
    for rows, by_tool in results.items():
        ev = by_tool["evidently"]
        cells = []
        for tool in ("memory", "sqlite"):
            if tool in by_tool:
                r = by_tool[tool]
                cells.append(
                    f"{TOOLS[tool]}: {ev['time_s'] / r['time_s']:6.1f}× time, {ev['peak_mb'] / r['peak_mb']:4.1f}×"
                    f" peak, {ev['increment_mb'] / max(r['increment_mb'], 1):5.1f}× +MB"
                )
        print(f"{rows:>9,}  " + "   ".join(cells))
    largest = max(results)
    ev = results[largest]["evidently"]
    print(f"\ntarget at 1,000,000 rows: ≥ 50× faster, ≤ 1/4 of the memory (peak) — measured at {largest:,} rows:")
    for tool in ("memory", "sqlite"):
        if tool in results[largest]:
            r = results[largest][tool]
            speed, share = ev["time_s"] / r["time_s"], r["peak_mb"] / ev["peak_mb"]
            met = "met" if speed >= 50 and share <= 0.25 else "NOT met"
            print(f"  {TOOLS[tool]:22} {speed:6.1f}× faster, {share:.2f} of the memory: {met}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--skip-evidently", action="store_true", help="measure perftune only")
    parser.add_argument("--skip-sqlite", action="store_true", help="skip the scoring-log path (its setup is slow)")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], Path(args.worker[1]))
    evidently = None if args.skip_evidently else evidently_python()
    scratch = Path(tempfile.mkdtemp(prefix="perftune-bench-drift-"))
    print(f"{len(COLUMNS)} columns ({len(NUMERIC)} numeric, {len(CATEGORICAL)} categorical), {os.cpu_count()} cores")
    results = {}
    try:
        for rows in args.sizes:
            results[rows] = run_size(rows, scratch, evidently, not args.skip_sqlite)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print_table(results)
    print_scores(results)
    print_ratios(results)


if __name__ == "__main__":
    main()
