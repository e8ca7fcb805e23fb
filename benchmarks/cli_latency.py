"""How fast does the CLI answer? (Prints a table of medians; no assertions.)

Each command runs as a real process (``perftune …`` from this venv), ``--repeat`` times (default 5), and the
median wall time is printed beside its target:

* ``--version``, ``--help``;
* a usage error (``tune /nonexistent.yaml``) and a spec error (a spec with an unknown field): target ≤ 0.5 s;
* the registry commands on SQLite — ``models``, ``models show``, ``history``, ``promote``, ``rollback`` —
  target ≤ the MLflow import + 0.5 s, since they must open MLflow's store;
* the floor: ``python -c "import mlflow"`` from the same venv, measured in the same run; and, beside it, the
  floor of any registry read through MLflow's own client — import, open the SQLAlchemy store, list the
  registered models — since that is what the registry commands must at least do.

With ``--baseline REF`` (e.g. ``--baseline HEAD~3``) the same commands also run from a checkout of that git
revision (a temporary worktree put first on ``PYTHONPATH``, same venv), alternating with the current code run
by run, so "before" and "after" share the machine's noise.

Set-up (not timed): a tiny study (diabetes × sgd_logistic, 2 trials) in a temporary workspace and two
registered versions, so promote / rollback have something to move.

Usage: ``python benchmarks/cli_latency.py [--repeat N] [--baseline REF]``
(PERFTUNE_DATA_DIR must point at the datasets).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent
PERFTUNE = str(BIN / "perftune")


def run(args: list[str], cwd: Path, ok: bool = True, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if ok and proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    if not ok and proc.returncode == 0:
        raise SystemExit(f"{' '.join(args)} was expected to fail")
    return elapsed


def medians(
    args: list[str], cwd: Path, envs: list[dict[str, str]], repeat: int, ok: bool = True, then: list[str] | None = None
) -> list[float]:
    """Median wall time of ``args`` under each environment, runs alternating between them; ``then`` (untimed)
    runs after each, e.g. to undo a promote."""
    times: list[list[float]] = [[] for _ in envs]
    for _ in range(repeat):
        for i, env in enumerate(envs):
            times[i].append(run(args, cwd, ok, env))
            if then:
                run(then, cwd, env=env)
    return [statistics.median(t) for t in times]


def set_up(work: Path) -> None:
    (work / "tiny.yaml").write_text(
        textwrap.dedent(f"""
        name: tiny
        datasets: [diabetes]
        models: [sgd_logistic]
        search:
          space: {{batch_size: [32, 64], learning_rate: 0.01, alpha: 0.0001, epochs: 2}}
        objectives: [accuracy]
        constraints: ['train_time_s <= 60']
        workspace: {work / "ws"}
    """)
    )
    (work / "bad.yaml").write_text("name: bad\ndatasets: [diabetes]\nmodels: [sgd_logistic]\nobjectivs: [accuracy]\n")
    run([PERFTUNE, "tune", "tiny.yaml", "--out", "runs/tiny"], work)
    for _ in range(2):
        run([PERFTUNE, "register", "runs/tiny", "--name", "clf", "--force"], work)
    run([PERFTUNE, "promote", "clf", "1", "--workspace", "ws"], work)


@contextlib.contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """A temporary git worktree of ``ref`` (removed afterwards)."""
    repo = Path(__file__).resolve().parents[1]
    folder = Path(tempfile.mkdtemp(prefix="perftune-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), ref], cwd=repo, check=True, capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=repo, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", help="a git revision to measure beside the current code")
    args = parser.parse_args()
    os.environ.setdefault("PERFTUNE_DATA_DIR", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"))
    with contextlib.ExitStack() as stack:
        envs, labels = [dict(os.environ)], ["now"]
        if args.baseline:
            folder = stack.enter_context(checkout(args.baseline))
            envs.insert(0, {**os.environ, "PYTHONPATH": str(folder / "src")})
            labels.insert(0, args.baseline)
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        print("set-up: a tiny study and two registered versions …", flush=True)
        set_up(work)
        n = args.repeat
        ws = ["--workspace", "ws"]
        floor = medians([sys.executable, "-c", "import mlflow"], work, [envs[-1]], n)[0]
        uri = f"sqlite:///{work / 'ws' / 'mlflow.db'}"
        client_code = f"from mlflow import MlflowClient; MlflowClient({uri!r}, {uri!r}).search_registered_models()"
        client_floor = medians([sys.executable, "-c", client_code], work, [envs[-1]], n)[0]
        registry_target = floor + 0.5
        promote, rollback = [PERFTUNE, "promote", "clf", "2", *ws], [PERFTUNE, "rollback", "clf", *ws]
        rows = [
            ("perftune --version", medians([PERFTUNE, "--version"], work, envs, n), None),
            ("perftune --help", medians([PERFTUNE, "--help"], work, envs, n), None),
            (
                "tune /nonexistent.yaml (usage error)",
                medians([PERFTUNE, "tune", "/nonexistent.yaml"], work, envs, n, ok=False),
                0.5,
            ),
            ("tune bad.yaml (spec error)", medians([PERFTUNE, "tune", "bad.yaml"], work, envs, n, ok=False), 0.5),
            ("models", medians([PERFTUNE, "models", *ws], work, envs, n), registry_target),
            (
                "models show clf 1",
                medians([PERFTUNE, "models", "show", "clf", "1", *ws], work, envs, n),
                registry_target,
            ),
            ("history clf", medians([PERFTUNE, "history", "clf", *ws], work, envs, n), registry_target),
            ("promote clf 2", medians(promote, work, envs, n, then=rollback), registry_target),  # champion back at 1
        ]
        run(promote, work)
        rows.append(("rollback clf", medians(rollback, work, envs, n, then=promote), registry_target))
    print(f"\nCLI latency, median of {n} runs each (python -c 'import mlflow' = {floor:.2f} s, the floor)\n")
    head = " | ".join(f"{label[:12]:>12} s" for label in labels)
    print(f"| {'command':<40} | {head} | target s | within |")
    print(f"|{'-' * 42}|" + "|".join("-" * 16 for _ in labels) + "|----------|--------|")
    floor_name = 'python -c "import mlflow" (floor)'
    blanks = " | ".join(" " * 14 for _ in labels[:-1])
    print(f"| {floor_name:<40} | " + (blanks + " | " if blanks else "") + f"{floor:14.2f} |          |        |")
    client_name = "MlflowClient(sqlite).search_registered_models"
    prefix = f"| {client_name:<40} | " + (blanks + " | " if blanks else "")
    print(prefix + f"{client_floor:14.2f} |          |        |")
    for name, seconds, target in rows:
        shown = f"{target:8.2f}" if target is not None else " " * 8
        within = ("yes" if seconds[-1] <= target else "no") if target is not None else ""
        cells = " | ".join(f"{value:14.2f}" for value in seconds)
        print(f"| {name:<40} | {cells} | {shown} | {within:<6} |")


if __name__ == "__main__":
    main()
