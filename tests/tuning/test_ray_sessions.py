"""Reaping what a killed study's private Ray left behind: only sessions perftune recorded, only dead drivers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from perftune.tuning import ray_sessions
from perftune.tuning.ray_sessions import SessionRecord, reap_orphaned_sessions, record_session, session_processes


@pytest.fixture
def index(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "index"
    monkeypatch.setattr(ray_sessions, "index_dir", lambda: folder)
    return folder


def fake_ray_process(session_dir: Path) -> subprocess.Popen[bytes]:
    """A process that names the session folder on its command line, as Ray's raylet and GCS do."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", f"--session-dir={session_dir}"])


def dead_driver() -> tuple[int, float]:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    return proc.pid, started


def write_record(index: Path, session_dir: Path, pid: int, started: float) -> Path:
    index.mkdir(parents=True, exist_ok=True)
    path = index / f"{session_dir.name}.json"
    path.write_text(json.dumps({"session_dir": str(session_dir), "driver_pid": pid, "driver_started": started}))
    return path


def test_processes_of_a_session_whose_driver_died_are_ended_and_the_record_removed(index, tmp_path):
    session = tmp_path / "session_2026_1"
    left = fake_ray_process(session)
    record = write_record(index, session, *dead_driver())
    found = session_processes(str(session))
    assert [p.pid for p in found] == [left.pid]
    assert reap_orphaned_sessions() == [left.pid]
    assert not found[0].is_running() and not record.exists()
    left.wait()


def test_a_session_whose_driver_runs_is_left_alone(index, tmp_path):
    session = tmp_path / "session_2026_2"
    alive = fake_ray_process(session)
    try:
        record = record_session(str(session))  # this test process is the (live) driver
        assert SessionRecord(**json.loads(record.read_text())).driver_alive()
        assert reap_orphaned_sessions() == []
        assert alive.poll() is None and record.exists()
    finally:
        alive.kill()
        alive.wait()


def test_a_ray_perftune_did_not_start_is_never_touched(index, tmp_path):
    theirs = fake_ray_process(tmp_path / "session_2026_30")  # e.g. the user's own `ray start`
    other = tmp_path / "session_2026_3"  # a recorded session whose name is a prefix of theirs
    write_record(index, other, *dead_driver())
    try:
        assert reap_orphaned_sessions() == []
        assert theirs.poll() is None
    finally:
        theirs.kill()
        theirs.wait()
