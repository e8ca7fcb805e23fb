"""Start the inference server from :class:`ServeSettings`: the whole bootstrap, so the CLI only parses.

Order matters for what a user sees: the settings are checked (by pydantic, before this runs), the model is
loaded (a bad reference fails here), the port is checked (a busy port fails here) — and only then does the
server say where it serves and start answering. ``--workers N`` runs N uvicorn processes that each build the
app from the settings passed as JSON in ``SETTINGS_ENV``; their Prometheus files go to a temporary folder
that is removed when the server stops (unless ``PROMETHEUS_MULTIPROC_DIR`` names one already).

Each process runs its model on one thread setting: the first load resolves it (``--threads``, or what the
version was measured with) and pins the runtimes loaded then (see :class:`~perftune.serve.server.Server`);
``OMP_NUM_THREADS`` and its kin are set in the environment too, so that a library loaded later — another
version's, every library of a spawned worker — starts with the same number, and workers get the resolved number.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator

from perftune.errors import UsageError
from perftune.measure.threads import thread_env, threads_text
from perftune.serve.settings import SETTINGS_ENV, ServeSettings


def check_port(host: str, port: int) -> None:
    """Fail with one line when ``host:port`` cannot be bound (in use, or not an address of this machine)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(
            f"--host {host}: cannot resolve it ({exc.strerror}); give an address such as 0.0.0.0"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "busy"
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"--port {port}: {host}:{port} is in use; stop what listens there or pick another port"
                ) from None
            raise UsageError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None


@contextlib.contextmanager
def _worker_metrics_dir() -> Iterator[None]:
    """A Prometheus multiprocess folder for ``--workers`` processes, removed afterwards if perftune made it."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        yield
        return
    folder = tempfile.mkdtemp(prefix="perftune-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(folder, ignore_errors=True)


def run_server(settings: ServeSettings, announce: Callable[[str], None] = print) -> None:
    """Serve until SIGTERM / Ctrl-C; ``announce`` is told where, once the model is loaded and the port is free.

    Raises:
        UsageError: the port is busy or the host is not an address here.
        PerftuneError: the model cannot be loaded (unknown reference, archived version, unreachable store).
    """
    import uvicorn

    from perftune.serve.app import create_app

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": 30,
        "loop": "uvloop",
        "http": "httptools",
    }
    where = f"http://{settings.host}:{settings.port}"
    following = f" (following {settings.reference})" if "@" in settings.reference else ""
    if settings.workers == 1:
        application = create_app(settings)  # load errors surface before the port opens
        check_port(settings.host, settings.port)
        server = application.state.server
        model = server.model
        os.environ.update(thread_env(server.threads))  # what libraries loaded later start with
        announce(
            f"serving {model.name} v{model.version}{following} on {where} with {threads_text(server.threads)} — "
            f"/v2/models/{model.name}/infer, /invocations, /metrics, /docs"
        )
        uvicorn.run(application, **options)
        return
    server = create_app(settings).state.server  # check it loads once, with a clear error if not
    server.close()
    check_port(settings.host, settings.port)
    settings = settings.model_copy(update={"threads": server.threads})  # every worker: the number announced
    os.environ.update(thread_env(server.threads))  # what each worker's libraries start with
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    threads = threads_text(server.threads)
    with _worker_metrics_dir():
        announce(f"serving {settings.reference} with {settings.workers} workers of {threads} each on {where}")
        uvicorn.run("perftune.serve.app:create_app_from_env", factory=True, workers=settings.workers, **options)
