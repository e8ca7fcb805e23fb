"""Do the thesis's runs keep the cores busy? budgets, asha and budgets + ASHA on a part of thesis-small, side by side.

``make thesis`` runs ``examples/thesis-small.yaml`` five ways in ~47 min; this runs three of them (the spec's budget
policy; ASHA alone; both) on two of its datasets (diabetes, kddcup's 600-row sample) and one family
(``sgd_logistic``): 128 short trials each, a few minutes a run. Printed per run: the share of the cores it kept busy
with trials (Σ trial wall time ÷ (run wall × cores), as the chapter computes it, see ``thesis.busy_share``), the
worker processes its trials ran in (as many as cores when every worker takes trial after trial), and the CPU wait
its trials met (contention from other processes). No assertions; the issue's target is 85 %.

``--code LABEL=SRC`` (repeatable) runs every variant against each checkout (its ``src`` first on PYTHONPATH), the
runs alternating code by code and variant by variant within each round (A, B, A, B), so that they meet the same
background. A checkout older than the ``worker`` field shows ``?`` workers; one older than ``trial_wall_s`` is
measured by its trials' training wall time, a little less.

Usage: ``python benchmarks/busy_cores.py [--code before=../wt-before/src --code after=src] [--rounds 2]``
(PERFTUNE_DATA_DIR must point at the datasets).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("budgets", "asha", "budgets+asha")
ASHA = {"metric": {"classification": "accuracy", "regression": "rmse"}, "grace_period": 1.0}  # as thesis.variants


def run_variant(variant: str, out: Path) -> None:
    """Run one variant with the perftune on PYTHONPATH (a subprocess of :func:`main`); its summary is in ``out``."""
    from perftune.spec import SchedulerSpec, load_spec
    from perftune.tuning.engine import run_study

    spec = load_spec(ROOT / "examples" / "thesis-small.yaml")
    spec.datasets = [d for d in spec.datasets if d.name in ("diabetes", "kddcup")]
    spec.models = ["sgd_logistic"]
    spec.workspace = str(out.parent)
    spec.name = f"busy-{variant.replace('+', '-')}"
    if variant != "budgets":
        spec.search.scheduler = SchedulerSpec(**ASHA)
    if variant == "asha":
        spec.early_stopping.policy = "none"
    run_study(spec, out=out, overwrite=True)


def measure(out: Path, cores: int) -> dict[str, Any]:
    from perftune.results import contention_totals, load_study
    from thesis import busy_share, worker_count  # benchmarks/ is on sys.path: this script's folder

    result = load_study(out)
    wait = contention_totals(result.trials).get("cpu_wait_share")
    return {
        "busy": busy_share(result, cores),
        "workers": worker_count(result) or "?",
        "wait": "?" if wait is None else f"{wait:.0%}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", default=[], help="LABEL=SRC: a checkout's src folder")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run", nargs=2, metavar=("VARIANT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_variant(args.run[0], Path(args.run[1]))
        return
    codes = dict(c.split("=", 1) for c in args.code) or {"this": str(ROOT / "src")}
    cores = os.cpu_count() or 1
    found: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="perftune-busy-") as tmp:
        for i in range(args.rounds):
            for variant in VARIANTS:
                for label, src in codes.items():
                    out = Path(tmp) / label / "runs" / variant
                    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
                    subprocess.run(
                        [sys.executable, __file__, "--run", variant, str(out)],
                        env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    row = measure(out, cores)
                    found.setdefault((variant, label), []).append(row)
                    print(f"round {i + 1} {variant:<13} {label:<8} busy {row['busy']:.0%}  workers {row['workers']}  "
                          f"cpu wait {row['wait']}", flush=True)  # fmt: skip
    print(f"\n{'variant':<13} " + " ".join(f"{label + ' busy':>14}" for label in codes) + "   ratio (last ÷ first)")
    for variant in VARIANTS:
        means = [statistics.fmean(r["busy"] for r in found[(variant, label)]) for label in codes]
        ratio = f"{means[-1] / means[0]:.2f}" if len(means) > 1 and means[0] else "—"
        print(f"{variant:<13} " + " ".join(f"{m:>14.0%}" for m in means) + f"   {ratio}")


if __name__ == "__main__":
    main()
