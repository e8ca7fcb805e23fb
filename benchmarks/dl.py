"""Deep-learning use cases (Fashion-MNIST images, BBC News text): what budget-aware ASHA saves against the full
grid on the same space, and what compression does to the best feasible model. (Prints tables; no assertions.)

For each use case, in a fresh temporary workspace (the raw files are ingested into its data store first):

  1. the example's space as a full grid: policy ``none``, no scheduler — every configuration to its end;
  2. the example as written: ASHA on validation accuracy plus the budget stoppers;
  3. the best feasible trial of (2), refitted on the whole training split and measured on the held-out test
     split as it is served (features step + network): uncompressed, with dynamic int8 quantization, with 50 %
     magnitude pruning, and with both (whatever the search chose for compression). Registration measures each
     network with torch's and with onnxruntime's forward pass, alternately on the same rows (a quantized network
     has no ONNX export).

Printed: CPU-seconds and wall seconds of (1) and (2) and their ratios (the savings factors), the best accuracy of
each; then test accuracy, train time, latency p95 and throughput under each runtime, sizes, and the runtime
registration would serve, for each variant of (3).

Usage: ``python benchmarks/dl.py [--only bbc|fashion]`` (PERFTUNE_DATA_DIR must point at the datasets).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

import perftune
from perftune.data.sources import data_dir
from perftune.data.store import DataStore
from perftune.data.unstructured import ingest_images, ingest_text
from perftune.registry.register import RefitPlan, choose_trial, refit
from perftune.spec import parse_spec

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "bbc": ("examples/bbc_news.yaml", lambda store: ingest_text(store, data_dir() / "bbc" / "bbc-fulltext.zip", "bbc")),
    "fashion": (
        "examples/fashion_mnist.yaml",
        lambda store: ingest_images(store, data_dir() / "fashion-mnist", "fashion", classes=10),
    ),
}
VARIANTS = {
    "uncompressed": {"quantize": False, "prune": 0.0},
    "quantized": {"quantize": True, "prune": 0.0},
    "pruned 50 %": {"quantize": False, "prune": 0.5},
    "pruned + quantized": {"quantize": True, "prune": 0.5},
}  # the best trial's other hyperparameters, compressed each way (whatever the search chose for these)


def run(case: str, workdir: Path) -> None:
    example, ingest = CASES[case]
    raw = yaml.safe_load((REPO / example).read_text())
    raw["workspace"] = str(workdir / "ws")
    ingest(DataStore(workdir / "ws"))
    full = {**raw, "name": f"{raw['name']}-full", "early_stopping": {"policy": "none"}}
    full["search"] = {k: v for k, v in raw["search"].items() if k != "scheduler"}
    studies = {}
    for label, body in (("full grid", full), ("ASHA + budgets", raw)):
        spec = parse_spec(yaml.safe_dump(body), origin=f"{example} ({label})")
        started = time.perf_counter()
        result = perftune.tune(spec, out=workdir / label.replace(" ", "-"))
        studies[label] = (spec, result, time.perf_counter() - started)
    print(f"\n{case}: {example}")
    print(f"{'run':<16} {'trials':>6} {'stopped':>8} {'CPU-s':>8} {'wall-s':>8} {'best val accuracy':>18}")
    for label, (_, result, wall) in studies.items():
        trials = result.trials
        stopped = sum(t.status != "completed" for t in trials)
        best = max((g.best.metrics["accuracy"] for g in result.groups if g.best), default=float("nan"))
        print(f"{label:<16} {len(trials):>6} {stopped:>8} {result.compute()['cpu_s']:>8.1f} {wall:>8.1f} {best:>18.4f}")
    (_, full_result, full_wall), (spec, tuned, tuned_wall) = studies["full grid"], studies["ASHA + budgets"]
    print(
        f"savings: CPU ×{full_result.compute()['cpu_s'] / tuned.compute()['cpu_s']:.2f}, "
        f"wall ×{full_wall / tuned_wall:.2f} (whole study commands, Ray start included)"
    )
    trial = choose_trial(tuned, None, None, None)
    plan = RefitPlan.from_study(spec, tuned, trial)
    print(f"\nbest feasible: {trial.model} {trial.params}; refitted on the training split, measured on the test split")
    print(
        f"{'variant':<20} {'test accuracy':>13} {'drop':>7} {'train s':>8} {'p95 ms torch':>13} {'p95 ms onnx':>12} "
        f"{'rows/s torch':>13} {'rows/s onnx':>12} {'size bytes':>11} {'onnx bytes':>11} {'served by':>12}"
    )
    for name, change in VARIANTS.items():
        refitted = refit(replace(plan, params={**plan.params, **change}))
        m = refitted.metrics
        torch_p95, torch_rps = m.get("latency_ms_p95_torch", m["latency_ms_p95"]), m.get("throughput_rps_torch")
        print(
            f"{name:<20} {m['accuracy']:>13.4f} {m['accuracy_drop']:>7.4f} {m['train_time_s']:>8.1f} "
            f"{torch_p95:>13.3f} {_num(m.get('latency_ms_p95_onnx'), '.3f'):>12} "
            f"{_num(torch_rps or m['throughput_rps'], '.0f'):>13} {_num(m.get('throughput_rps_onnx'), '.0f'):>12} "
            f"{m['model_size_bytes']:>11.0f} {_num(m.get('model_size_bytes_onnx'), '.0f'):>11} {refitted.runtime:>12}"
        )


def _num(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(CASES))
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores")
    for case in [args.only] if args.only else list(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            run(case, Path(tmp))


if __name__ == "__main__":
    main()
