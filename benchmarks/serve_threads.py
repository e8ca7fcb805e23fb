"""perftune serve on a busy machine: loaded p95 ÷ quiet p95 of single-row requests, per thread setting.

A registered model (default ``bbc-news@champion`` of the workspace: the BBC int8 MLP, see examples/bbc_news.yaml)
is served by several ``perftune serve`` processes on 127.0.0.1 at once, one per configuration:

  * ``before`` (with ``--before-src DIR``): the server of an older perftune checkout's ``src`` (no thread
    setting: torch and onnxruntime on every core);
  * ``default``: ``perftune serve`` as it starts now (``--threads`` = usable cores ÷ workers);
  * ``threads=N`` for each ``--threads N`` asked for, and any ``--server LABEL=OPTIONS``.

Rounds alternate quiet and loaded (``../shared/tools/busy 2``: two busy processes, started for one loaded round
and stopped after it), and in every round each server gets the same bounded number of single-row
``/invocations`` requests, one at a time over one keep-alive connection (BBC articles read from the dataset's
zip). The client's latency of every request is kept; printed per configuration: quiet and loaded p50 and p95
over all rounds, and loaded p95 ÷ quiet p95 (the issue's target: ≤ 3). ``--onnx-spinning`` adds an in-process
table: onnxruntime on 1 thread, and on 2 with and without spin-waiting (``session.intra_op.allow_spinning``).

:func:`client_latency` and :func:`served` are the parts another benchmark (benchmarks/contention.py) can reuse.

Usage: ``python benchmarks/serve_threads.py [--reference bbc-news@champion] [--tracking-uri URI]
[--requests 300] [--rounds 3] [--threads 1 --threads 2] [--before-src /path/to/old/src]``
(PERFTUNE_WORKSPACE or ``--tracking-uri`` names the registry; PERFTUNE_DATA_DIR the datasets).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import free_port, wait_ready

BUSY = Path(__file__).resolve().parents[1] / ".." / "shared" / "tools" / "busy"
WARMUP = 20  # requests per server and round that are not counted (connection, first-call costs)


@dataclass
class Config:
    """One server: a label, its extra ``perftune serve`` options, and the ``src`` folder it runs from."""

    label: str
    options: list[str] = field(default_factory=list)
    src: str | None = None  # None: this checkout's perftune


def articles(limit: int = 50) -> list[str]:
    """BBC articles from the dataset's zip (the server's input: one raw text per request)."""
    archive = Path(os.environ.get("PERFTUNE_DATA_DIR", "../shared/datasets")) / "bbc" / "bbc-fulltext.zip"
    with zipfile.ZipFile(archive) as z:
        names = [n for n in z.namelist() if n.endswith(".txt") and "README" not in n][::40][:limit]
        return [z.read(n).decode("utf-8", errors="replace") for n in names]


@contextlib.contextmanager
def served(reference: str, tracking_uri: str, config: Config, scratch: Path) -> Iterator[str]:
    """Start ``perftune serve REFERENCE`` on 127.0.0.1 as ``config`` says; yield its base URL; stop it (SIGTERM)."""
    port = free_port()
    env = dict(os.environ)
    if config.src:
        env["PYTHONPATH"] = config.src
    command = [sys.executable, "-m", "perftune", "serve", reference, "--port", str(port),
               "--tracking-uri", tracking_uri, "--scoring-uri", f"sqlite:///{scratch / config.label}.db",
               "--log-level", "warning", *config.options]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client_latency(address: str, texts: list[str], requests: int, warmup: int = WARMUP) -> np.ndarray:
    """Client-side milliseconds of ``requests`` single-row ``/invocations`` requests, sent one at a time."""
    connection = http.client.HTTPConnection(address, timeout=60)
    bodies = [json.dumps({"inputs": [t]}).encode() for t in texts]
    times = np.empty(requests)
    try:
        for i in range(warmup + requests):
            body = bodies[i % len(bodies)]
            started = time.perf_counter()
            connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise SystemExit(f"{address}: HTTP {response.status} on /invocations")
            if i >= warmup:
                times[i - warmup] = elapsed * 1000
    finally:
        connection.close()
    return times


@contextlib.contextmanager
def busy(seconds: int) -> Iterator[None]:
    """Two busy processes for at most ``seconds`` (stopped as soon as the block ends)."""
    process = subprocess.Popen([sys.executable, str(BUSY), "2", str(seconds)])
    time.sleep(1.0)  # let both burners start
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(
    reference: str, tracking_uri: str, configs: list[Config], rounds: int, requests: int
) -> dict[str, dict[str, np.ndarray]]:
    """All servers up at once; rounds alternate quiet and loaded; returns latencies per label and condition."""
    texts = articles()
    results: dict[str, dict[str, list[np.ndarray]]] = {c.label: {"quiet": [], "loaded": []} for c in configs}
    with tempfile.TemporaryDirectory(prefix="perftune-serve-threads-") as folder, contextlib.ExitStack() as stack:
        addresses = {c.label: stack.enter_context(served(reference, tracking_uri, c, Path(folder))) for c in configs}
        for r in range(rounds):
            for condition in ("quiet", "loaded"):
                order = configs if r % 2 == 0 else configs[::-1]  # no configuration always goes first
                load = busy(600) if condition == "loaded" else contextlib.nullcontext()
                with load:
                    for c in order:
                        times = client_latency(addresses[c.label], texts, requests)
                        results[c.label][condition].append(times)
                        print(f"round {r + 1} {condition:6} {c.label:10} p50 {np.percentile(times, 50):7.2f} ms"
                              f"  p95 {np.percentile(times, 95):7.2f} ms  load {os.getloadavg()[0]:.1f}",
                              flush=True)  # fmt: skip
    return {label: {k: np.concatenate(v) for k, v in by.items()} for label, by in results.items()}


def onnx_spinning(rounds: int, requests: int) -> dict[str, dict[str, np.ndarray]]:
    """In process: single-row latency of an onnxruntime MLP (5000 → 256 → 5, float32, as BBC's unquantized network)
    on 1 thread, and on 2 threads with and without spin-waiting, quiet and beside busy 2, alternating rounds."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from perftune.measure.threads import session_options

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
               for n, s in (("w1", (5000, 256)), ("b1", (256,)), ("w2", (256, 5)))]  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["a"]),
         helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", 5000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 5])], weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sessions = {}
    for label, threads, spinning in (("1 thread", 1, "0"), ("2, no spin", 2, "0"), ("2, spinning", 2, "1")):
        options = session_options(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        sessions[label] = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    row = {"x": (rng.random((1, 5000)) < 0.02).astype(np.float32)}
    results: dict[str, dict[str, list[float]]] = {k: {"quiet": [], "loaded": []} for k in sessions}
    for r in range(rounds):
        for condition in ("quiet", "loaded"):
            with busy(600) if condition == "loaded" else contextlib.nullcontext():
                for label, session in sessions.items() if r % 2 == 0 else reversed(sessions.items()):
                    for i in range(WARMUP + requests):
                        started = time.perf_counter()
                        session.run(None, row)
                        if i >= WARMUP:
                            results[label][condition].append((time.perf_counter() - started) * 1000)
    return {label: {k: np.asarray(v) for k, v in by.items()} for label, by in results.items()}


def table(results: dict[str, dict[str, np.ndarray]]) -> str:
    lines = [f"{'server':12} {'quiet p50':>10} {'quiet p95':>10} {'loaded p50':>11} {'loaded p95':>11} "
             f"{'loaded/quiet p95':>17}"]  # fmt: skip
    for label, by in results.items():
        q50, q95 = np.percentile(by["quiet"], [50, 95])
        l50, l95 = np.percentile(by["loaded"], [50, 95])
        lines.append(f"{label:12} {q50:10.2f} {q95:10.2f} {l50:11.2f} {l95:11.2f} {l95 / q95:17.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="bbc-news@champion")
    parser.add_argument("--tracking-uri", help="default: the workspace's store")
    parser.add_argument("--requests", type=int, default=300, help="counted requests per server and round")
    parser.add_argument("--rounds", type=int, default=3, help="quiet/loaded pairs")
    parser.add_argument("--threads", type=int, action="append", default=[], help="a server with --threads N")
    parser.add_argument("--server", action="append", default=[], metavar="LABEL=OPTIONS",
                        help="another server, e.g. 'no-poll=--threads 1 --poll-interval 0'")  # fmt: skip
    parser.add_argument("--before-src", help="an older checkout's src folder: its server is the 'before' row")
    parser.add_argument("--onnx-spinning", action="store_true", help="also: onnxruntime's spin-waiting, in process")
    args = parser.parse_args()
    if args.tracking_uri:
        tracking_uri = args.tracking_uri
    else:
        from perftune.settings import Settings

        tracking_uri = Settings.load().existing_tracking_uri()
    configs = [Config("before", src=args.before_src)] if args.before_src else []
    configs.append(Config("default"))
    configs += [Config(f"threads={n}", ["--threads", str(n)]) for n in args.threads]
    configs += [Config(label, options.split()) for label, _, options in (v.partition("=") for v in args.server)]
    cores = len(os.sched_getaffinity(0))
    print(f"{args.reference}: {args.rounds} rounds × {args.requests} single-row requests per server, "
          f"quiet and beside busy 2, on {cores} cores", flush=True)  # fmt: skip
    print(table(measure(args.reference, tracking_uri, configs, args.rounds, args.requests)))
    if args.onnx_spinning:
        print("onnxruntime in process, single rows (ms):")
        print(table(onnx_spinning(args.rounds, args.requests * 5)))


if __name__ == "__main__":
    main()
