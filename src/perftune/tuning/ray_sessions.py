"""The local Ray sessions perftune starts, and the processes they leave behind when perftune is killed.

``ray.init()`` without an address starts a private Ray (GCS, raylet, agents, workers) as children of the
study's process. A graceful exit stops them; a ``kill -9`` of the study does not: the GCS and raylet notice
their driver is gone, but ``ray::DashboardAgent``, ``ray::RuntimeEnvAgent`` (and sometimes idle workers)
live on with parent 1, holding memory and ports.

So every session perftune starts is recorded in a small index (one JSON file per session under
``<tmp>/perftune-<uid>/ray-sessions/``: the session folder and the driver's pid and start time), removed again
when the study ends normally. Before perftune starts the next local Ray it reaps the recorded sessions whose
driver is dead: it terminates the processes that belong to that session folder (named on their command line,
or holding one of its log files open). Sessions perftune did not start (a user's ``ray start``, a cluster
joined with ``--address``, a Ray the caller initialised) are never in the index and never touched.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

__all__ = ["SessionRecord", "index_dir", "reap_orphaned_sessions", "record_session", "session_processes"]


def index_dir() -> Path:
    """Where perftune records the local Ray sessions it started (one folder per user)."""
    return Path(tempfile.gettempdir()) / f"perftune-{os.getuid()}" / "ray-sessions"


@dataclass
class SessionRecord:
    """A local Ray session started by a perftune process."""

    session_dir: str
    driver_pid: int
    driver_started: float

    def driver_alive(self) -> bool:
        """Whether the process that started the session still runs (a reused pid does not count)."""
        try:
            return abs(psutil.Process(self.driver_pid).create_time() - self.driver_started) < 1.0
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False


def record_session(session_dir: str) -> Path:
    """Record that this process started the Ray session in ``session_dir``; return the record's path."""
    me = psutil.Process()
    record = SessionRecord(session_dir, me.pid, me.create_time())
    folder = index_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{Path(session_dir).name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)
    return path


def session_processes(session_dir: str) -> list[psutil.Process]:
    """Processes of this user that belong to the Ray session in ``session_dir``.

    Ray's own programs name the session folder on their command line; agents and workers rename themselves
    (``ray::DashboardAgent``, ``ray::IDLE``) but keep their log files in the session folder open.
    """
    uid = os.getuid()
    folder = session_dir.rstrip("/")
    named = re.compile(re.escape(folder) + r"(?=[/\s]|$)")
    found = []
    for proc in psutil.process_iter(["pid", "uids", "cmdline"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != uid or proc.pid == os.getpid():
                continue
            cmdline = " ".join(proc.info["cmdline"] or ())
            if named.search(cmdline) or (cmdline.startswith("ray::") and _holds_file_in(proc, folder + "/")):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _holds_file_in(proc: psutil.Process, folder: str) -> bool:
    return any(f.path.startswith(folder) for f in proc.open_files())


def reap_orphaned_sessions(grace_s: float = 5.0) -> list[int]:
    """Terminate what is left of recorded sessions whose perftune driver is dead; return the pids ended.

    Each process gets SIGTERM, then SIGKILL if it is still there after ``grace_s``. A record is removed once
    its session has no process left.
    """
    folder = index_dir()
    if not folder.is_dir():
        return []
    ended: list[int] = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = SessionRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)  # a record cut short by a kill: its session cannot be identified
            continue
        if record.driver_alive():
            continue
        procs = session_processes(record.session_dir)
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=grace_s)
        if procs:
            log.warning(
                "ended %d processes left by a killed perftune study (Ray session %s)", len(procs), record.session_dir
            )
        ended += [p.pid for p in procs]
        path.unlink(missing_ok=True)
    return ended
