"""perftune serve vs `mlflow models serve` vs in-process predict: same model, same machine, same client, one run.

A registered diabetes classifier (a small study is tuned and registered in a temporary workspace, unless
``--tracking-uri`` and ``--model`` name an existing version) is served twice, side by side:

  (a) ``perftune serve NAME/VERSION`` — 1 worker, scoring log on (the default, ``--scoring-durability memory``),
      on ``/invocations`` and on Open Inference Protocol v2 ``/v2/models/NAME/infer``;
  (a') the same with ``--scoring-durability local`` (each answered row written through to a local file before
      the response): its latency and throughput beside (a), as ratios local / memory;
  (b) ``mlflow models serve -m models:/NAME/VERSION --env-manager local`` — 1 worker, ``/invocations``;
  (c) the floor: the same model called in process on one row (perftune's predict on a float row, and MLflow
      pyfunc's predict on a one-row DataFrame).

The load client is ``wrk`` (C, one connection per concurrent client, keep-alive), single-row JSON requests at
concurrency 1 and 8 for a fixed time each. Printed: p50, p99 and requests/s per server and concurrency, and
the ratios the serving issue targets: perftune rps / mlflow rps (target ≥ 2 at both concurrencies) and
perftune p50 − in-process floor at concurrency 1 (target ≤ 1 ms). wrk and servers share the 2 cores.

Usage: ``python benchmarks/serving.py [--seconds 5] [--rounds 3] [--tracking-uri URI --model NAME/VERSION]``
(``make bench-serving`` installs wrk when missing; PERFTUNE_DATA_DIR must point at the datasets).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from perftune.serve.deploy import SERVER_BASELINE_MB

ROW = [6, 148, 72, 35, 0, 33.6, 0.627, 50]
STUDY = """
name: bench-serving
datasets: [diabetes]
models: [sgd_logistic]
search:
  space: {batch_size: [32], learning_rate: [0.01], epochs: 10}
objectives: [accuracy]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register_model(root: Path) -> tuple[str, str]:
    import perftune
    from perftune.registry.register import register

    spec = root / "bench.yaml"
    spec.write_text(STUDY + f"workspace: {root / 'ws'}\n")
    result = perftune.tune(spec, out=root / "out")
    registered = register(root / "out", "bench-clf")
    return result.tracking["uri"], f"bench-clf/{registered.version}"


def floor_ms(tracking_uri: str, reference: str, n: int = 3000) -> dict[str, float]:
    import mlflow
    import pandas as pd

    from perftune.registry.catalog import ModelRegistry
    from perftune.serve.model import load_version

    registry = ModelRegistry(tracking_uri)
    loaded = load_version(registry, reference)
    registry.close()
    pyfunc = mlflow.pyfunc.load_model(loaded.model_uri)
    row = np.asarray([ROW], dtype=np.float64)
    frame = pd.DataFrame(row, columns=loaded.schema.names)

    def p50(fn) -> float:
        for _ in range(200):
            fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000)

    return {
        "perftune_predict": p50(lambda: loaded.predict(row)),
        "pyfunc_predict": p50(lambda: pyfunc.predict(frame)),
        "predict_memory_mb": float(registry_tags(tracking_uri, reference)["test.predict_memory_mb"]),
    }


def registry_tags(tracking_uri: str, reference: str) -> dict[str, str]:
    from perftune.registry.catalog import ModelRegistry

    registry = ModelRegistry(tracking_uri)
    tags = registry.resolve(reference).tags
    registry.close()
    return tags


def server_memory_mb(pid: int) -> float:
    """RSS − shared of the server and its children (uvicorn may fork), as perftune measures memory."""
    import psutil

    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum((p.memory_info().rss - p.memory_info().shared) / 2**20 for p in processes)


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            command = " ".join(map(str, process.args))
            raise SystemExit(f"server exited early (exit {process.returncode}): {command}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} not ready after {timeout} s")


def wrk(url: str, body: dict, connections: int, seconds: int, scratch: Path) -> dict[str, float]:
    script = scratch / "post.lua"
    script.write_text(
        textwrap.dedent(
            f"""
            wrk.method = "POST"
            wrk.body = '{json.dumps(body)}'
            wrk.headers["Content-Type"] = "application/json"
            done = function(summary, latency, requests)
              local e = summary.errors
              io.write(string.format("RESULT %d %d %d %f %f\\n", summary.requests,
                e.status + e.connect + e.read + e.write + e.timeout,
                summary.duration, latency:percentile(50), latency:percentile(99)))
            end
            """
        )
    )
    threads = min(connections, 2)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", out)
    if not match:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    requests, errors, duration_us, p50_us, p99_us = match.groups()
    return {
        "rps": int(requests) / (int(duration_us) / 1e6),
        "p50_ms": float(p50_us) / 1000,
        "p99_ms": float(p99_us) / 1000,
        "errors": int(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="load duration per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians")
    parser.add_argument("--tracking-uri", help="use an existing registry …")
    parser.add_argument("--model", help="… and this NAME/VERSION in it")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk; `make bench-serving` does it)")
    scratch = Path(tempfile.mkdtemp(prefix="perftune-bench-serving-"))
    if args.tracking_uri and args.model:
        tracking_uri, reference = args.tracking_uri, args.model
    else:
        print("registering a diabetes classifier in", scratch)
        tracking_uri, reference = register_model(scratch)
    name, version = reference.split("/")
    floors = floor_ms(tracking_uri, reference)

    bin_dir = Path(sys.executable).parent
    # mlflow models serve starts `uvicorn` through bash: the venv's bin must be on PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    ports = {"perftune": free_port(), "perftune-local": free_port(), "mlflow": free_port()}

    def perftune(server: str, *extra: str) -> list[str]:
        folder = scratch / server  # one scoring database (and durable log) per server
        return [
            *(str(bin_dir / "perftune"), "serve", reference, "--port", str(ports[server])),
            *("--tracking-uri", tracking_uri, "--scoring-uri", f"sqlite:///{folder / 'scoring.db'}"),
            *("--log-level", "warning", "--poll-interval", "0", *extra),
        ]

    commands = {
        "perftune": perftune("perftune"),
        "perftune-local": perftune("perftune-local", "--scoring-durability", "local"),
        "mlflow": [
            *(str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{name}/{version}"),
            *("--env-manager", "local", "-p", str(ports["mlflow"]), "-w", "1"),
        ],
    }
    servers = {}
    for server, command in commands.items():
        # a log file, not a pipe: mlflow logs every request, and a full pipe would stall it
        log = (scratch / f"{server}.log").open("w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        servers[server] = (process, f"http://127.0.0.1:{ports[server]}")
    try:
        for server in ("perftune", "perftune-local"):
            wait_ready(servers[server][1] + "/v2/health/ready", servers[server][0])
        wait_ready(servers["mlflow"][1] + "/ping", servers["mlflow"][0])
        columns = [f"A{i}" for i in range(1, 9)]
        invocations = {"dataframe_split": {"columns": columns, "data": [ROW]}}
        v2 = {"inputs": [{"name": "input-0", "shape": [1, 8], "datatype": "FP64", "data": ROW}]}
        targets = [
            ("perftune", "/invocations", servers["perftune"][1] + "/invocations", invocations),
            ("perftune", "/v2 infer", servers["perftune"][1] + f"/v2/models/{name}/infer", v2),
            ("mlflow", "/invocations", servers["mlflow"][1] + "/invocations", invocations),
            ("perftune-local", "/invocations", servers["perftune-local"][1] + "/invocations", invocations),
            ("perftune-local", "/v2 infer", servers["perftune-local"][1] + f"/v2/models/{name}/infer", v2),
        ]
        # rounds interleave the servers, so a neighbour's load on the shared cores hits them alike; medians
        runs: dict[tuple[str, str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for connections in (1, 8):
                for server, endpoint, url, body in targets:
                    wrk(url, body, connections, 1, scratch)  # warm-up
                    runs.setdefault((server, endpoint, connections), []).append(
                        wrk(url, body, connections, args.seconds, scratch)
                    )
        results = {key: {m: float(np.median([r[m] for r in rs])) for m in rs[0]} for key, rs in runs.items()}
        memory = server_memory_mb(servers["perftune"][0].pid)
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
        for process, _ in servers.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    print(
        f"\nmodel {reference}; in-process floor (p50 of one-row predict): perftune {floors['perftune_predict']:.3f} ms,"
        f" MLflow pyfunc {floors['pyfunc_predict']:.3f} ms; median of {args.rounds} interleaved rounds of"
        f" {args.seconds} s, wrk on the same 2 cores\n"
    )
    print(f"{'server':15} {'endpoint':14} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'rps':>9} {'errors':>6}")
    for (server, endpoint, connections), r in results.items():
        print(
            f"{server:15} {endpoint:14} {connections:>4} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['rps']:>9.0f}"
            f" {r['errors']:>6.0f}"
        )
    print("\nscoring durability, local / memory (same endpoint, same concurrency, same run):")
    for connections in (1, 8):
        for endpoint in ("/invocations", "/v2 infer"):
            queued = results[("perftune", endpoint, connections)]
            local = results[("perftune-local", endpoint, connections)]
            print(
                f"  concurrency {connections} {endpoint:13} p50 × {local['p50_ms'] / queued['p50_ms']:.2f}"
                f" (+{local['p50_ms'] - queued['p50_ms']:.3f} ms), p99 × {local['p99_ms'] / queued['p99_ms']:.2f},"
                f" rps × {local['rps'] / queued['rps']:.2f}"
            )
    print()
    for connections in (1, 8):
        ours, theirs = (
            results[("perftune", "/invocations", connections)],
            results[("mlflow", "/invocations", connections)],
        )
        v2r = results[("perftune", "/v2 infer", connections)]
        print(
            f"concurrency {connections}: perftune/mlflow rps = {ours['rps'] / theirs['rps']:.2f} (/invocations),"
            f" {v2r['rps'] / theirs['rps']:.2f} (v2 vs mlflow /invocations)   [target ≥ 2]"
        )
    print(
        f"perftune serve after the load: {memory:.0f} MB RSS − shared (uvicorn + model + scoring log);"
        f" the version's predict_memory_mb is {floors['predict_memory_mb']:.0f} MB; perftune deploy's server"
        f" baseline is {SERVER_BASELINE_MB:g} MB"
    )
    c1 = results[("perftune", "/invocations", 1)]
    print(
        f"concurrency 1: perftune p50 − in-process floor = {c1['p50_ms'] - floors['perftune_predict']:.3f} ms"
        f" (/invocations), {results[('perftune', '/v2 infer', 1)]['p50_ms'] - floors['perftune_predict']:.3f} ms"
        f" (v2)   [target ≤ 1 ms]"
    )


if __name__ == "__main__":
    main()
