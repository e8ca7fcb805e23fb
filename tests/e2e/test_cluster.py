"""`perftune tune --address` joins an existing Ray cluster (a real one, started with `ray start --head`)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

RAY = shutil.which("ray", path=str(Path(sys.executable).parent))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A Ray head in the foreground (--block): terminating it stops this cluster and no other Ray."""
    port = free_port()
    # Ray authenticates clients with a token; head and client share one, as on a real cluster. Without
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, Ray would swap 127.0.0.1 for the machine's interface address.
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Unix socket paths must stay under 108 bytes
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.time() + 120
        while not reachable(port):
            assert head.poll() is None, head.stderr.read().decode()
            assert time.time() < deadline, "the Ray head did not come up in 120 s"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


def reachable(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_study_runs_on_an_existing_cluster(ray_cluster, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"""
datasets: [diabetes]
models: [sgd_svm]
search:
  space: {{batch_size: [16, 64], learning_rate: [0.01]}}
objectives: [accuracy]
workspace: {tmp_path / "ws"}
""")
    address, env = ray_cluster
    proc = subprocess.run(
        [sys.executable, "-m", "perftune", "tune", str(spec), "--out", str(tmp_path / "out"), "--address", address],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"]


def test_an_unreachable_cluster_is_a_clear_error(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"""
datasets: [diabetes]
models: [sgd_svm]
search:
  space: {{batch_size: [16], learning_rate: [0.01]}}
objectives: [accuracy]
workspace: {tmp_path / "ws"}
""")
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "perftune", "tune", str(spec), "--address", address],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert f"could not join the Ray cluster at '{address}'" in proc.stderr and "Traceback" not in proc.stderr
