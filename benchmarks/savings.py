"""RQ2 benchmark: how much compute do system-budget stoppers save, and at what cost in result quality?

Runs ``perftune savings`` (full search with policy none vs the spec's policy, side by side in one run, in a
fresh temporary workspace) on

  1. examples/quick.yaml (diabetes and 529_pollen × the SGD families, train-time budget, `projected`);
  2. a larger thesis-style grid: a stratified 20 000-row subset of kddcup (23 classes), logistic regression and
     linear SVM, batch size 2 … n × learning rate 1e-4 … 1e-1, a train-time budget.

Prints, per dataset × model: trials, stopped, CPU-seconds of both runs, the savings factor, whether the same
configuration wins, the regret and the false stops. No assertions: the target (savings >= 3x with zero regret
on most groups of the quick spec) is read from the output.

Usage: ``python benchmarks/savings.py [--only quick|kddcup]`` (PERFTUNE_DATA_DIR must point at the datasets).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import textwrap
from pathlib import Path

from rich.console import Console

from perftune.analysis.savings import SavingsReport, run_savings
from perftune.console import savings_table
from perftune.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]

KDDCUP = """
name: kddcup-savings
seed: 0
datasets:
  - {name: kddcup, sample: 20000}
models: [sgd_logistic, sgd_svm]
search:
  algorithm: grid
  space:
    batch_size: {powers_of_two: {from: 1, until: n_samples}}
    learning_rate: {powers_of_ten: {from: -4, to: -1}}
    alpha: [0.0001]
    epochs: 2
objectives:
  - accuracy
  - train_time_s
constraints:
  - train_time_s <= 1.5
  - memory_mb <= 4096
early_stopping: {policy: projected, min_observations: 2}
evaluation: {cv_folds: 1, eval_every: 100}
"""


def print_report(title: str, report: SavingsReport) -> None:
    """The RQ2 table as `perftune savings` prints it, plus the count the target is read from."""
    print(f"\n{title}")
    Console(width=200).print(savings_table(report))
    hits = sum(g.savings_factor >= 3 and g.regret == 0 for g in report.groups)
    print(f"groups with savings >= 3x and zero regret: {hits} of {len(report.groups)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["quick", "kddcup"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        if args.only in (None, "quick"):
            spec = load_spec(REPO / "examples" / "quick.yaml")
            spec.workspace = str(workspace / "quick")
            print_report("examples/quick.yaml", run_savings(spec, rerun=True))
        if args.only in (None, "kddcup"):
            spec = parse_spec(textwrap.dedent(KDDCUP) + f"workspace: {workspace / 'kddcup'}\n", origin="kddcup")
            print_report("kddcup subset (thesis-style grid)", run_savings(spec, rerun=True))


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    main()
