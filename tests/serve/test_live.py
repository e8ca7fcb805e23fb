"""The real server process under load: SIGTERM loses no logged request; an alias swap fails no request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress

import httpx
import sqlalchemy as sa

from perftune.registry.catalog import ModelRegistry

BODY = {"instances": [[6, 148, 72, 35, 0, 33.6, 0.627, 50]]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(registered, *args: str, log_file=None):
    """A real ``perftune serve`` process (its own session, so that its workers can be killed together)."""
    port = free_port()
    command = [sys.executable, "-m", "perftune.cli", "serve", *args, "--port", str(port)]
    command += ["--tracking-uri", registered.uri, "--log-level", "warning"]
    output = log_file.open("a") if log_file else subprocess.PIPE
    process = subprocess.Popen(
        command, stdout=output, stderr=subprocess.STDOUT, text=True, env=os.environ, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
        if process.poll() is not None:
            said = log_file.read_text() if log_file else process.stdout.read()
            raise AssertionError(f"server exited: {said}")
    else:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("server did not become ready in 60 s")
    try:
        yield process, url
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the server and any workers it left
        process.wait()


class Load:
    """Client threads posting single-row requests until told to stop (or the server goes away)."""

    def __init__(self, url: str, threads: int) -> None:
        self.url, self.stop = url, threading.Event()
        self.results: list[tuple[int, str | None]] = []
        self.ok_keys: list[str] = []  # X-Request-Id of every 200: what the scoring log must hold
        self.transport_errors = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(f"{self.url}/invocations", json=BODY)
                except httpx.TransportError:
                    with self.lock:
                        self.transport_errors += 1
                    if self.stop.wait(0.05):
                        return
                    continue
                with self.lock:
                    self.results.append((response.status_code, response.headers.get("X-Model-Version")))
                    if response.status_code == 200:
                        self.ok_keys.append(response.headers["X-Request-Id"])

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def test_sigterm_under_load_logs_every_successful_response(registered, tmp_path):
    scoring = tmp_path / "scoring.db"
    with (
        server(registered, "diabetes-clf/1", "--scoring-uri", f"sqlite:///{scoring}") as (process, url),
        Load(url, threads=4) as load,
    ):
        wait_for(lambda: len(load.ok_keys) > 50, "50 answers before the signal")  # however slow the machine
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully (in-flight requests answered, lifespan shutdown flushes the log), then
        # re-raises SIGTERM so that process managers see how it ended
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        time.sleep(0.3)  # clients see the closed port
    ok = sum(1 for status, _ in load.results if status == 200)
    assert ok > 50 and all(status == 200 for status, _ in load.results)
    with sa.create_engine(f"sqlite:///{scoring}").connect() as conn:
        logged = conn.execute(sa.text("select count(*) from perftune_scoring_log")).scalar_one()
    assert logged == ok


def test_alias_swap_under_load_fails_no_request(registered):
    registry = ModelRegistry(registered.uri)
    assert registry.aliases("diabetes-clf")["champion"] == "1"
    try:
        with (
            server(registered, "diabetes-clf@champion", "--poll-interval", "0.2", "--no-scoring-log") as (_, url),
            Load(url, threads=3) as load,
        ):
            wait_for(lambda: len(load.results) > 10, "answers from v1")  # v1 answers before the swap
            registry.promote("diabetes-clf", "2", reason="swap test")
            wait_for(lambda: load.results and load.results[-1][1] == "2", "the swap to v2")
            registry.rollback("diabetes-clf", reason="swap test")
            wait_for(lambda: load.results and load.results[-1][1] == "1", "the swap back to v1")
            time.sleep(0.5)
    finally:
        if registry.aliases("diabetes-clf")["champion"] != "1":
            registry.promote("diabetes-clf", "1", reason="restore after a failed swap test")
        registry.close()
    statuses = {status for status, _ in load.results}
    versions = [v for _, v in load.results]
    assert statuses == {200} and load.transport_errors == 0
    first_two = versions.index("2")
    assert versions[0] == "1" and "1" in versions[first_two:]  # 1 → 2 → 1, every request answered


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {what} in {timeout:g} s")
