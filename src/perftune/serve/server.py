"""One server process's state: the model it serves now, the alias follower, the scoring log, the metrics.

The model is swapped atomically (:meth:`Server.swap`): a request holds the :class:`LoadedModel` it started
with, the next one gets the new one. A reference ``NAME@ALIAS`` is followed by a thread that re-resolves the
alias every ``poll_interval_s`` and loads the version it points at; a failed poll keeps serving what is loaded.

The process's runtimes are pinned before the first model loads, and stay pinned until :meth:`Server.close`
(see :mod:`perftune.measure.threads`), to ``settings.threads`` or, by default, to what the version it starts
with was measured with (at most cores ÷ workers); each load says when a version was measured with another setting.
"""

from __future__ import annotations

import logging
import threading

from perftune.measure.threads import limit_threads, serving_threads
from perftune.registry.catalog import ModelRegistry
from perftune.serve.metrics import ServerMetrics
from perftune.serve.model import LoadedModel, load_version, measured_threads
from perftune.serve.scoring_writer import ScoringLog
from perftune.serve.settings import ServeSettings

log = logging.getLogger("perftune.serve")

__all__ = ["Server"]


class Server:
    """Load the model named by ``settings.reference`` (errors surface here, before any port opens)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = ServerMetrics()
        self.registry = ModelRegistry(settings.tracking_uri)
        self.threads = settings.threads or self._default_threads()
        self.thread_limit = limit_threads(self.threads)  # before any model loads; restored by close()
        try:
            self.model: LoadedModel | None = self.load(settings.reference)
        except BaseException:
            self.thread_limit.restore()
            raise
        self.name = self.model.name
        self.scoring = (
            ScoringLog(
                settings.scoring_uri,
                settings.scoring_spool(),
                settings.scoring_durability,
                on_failure=self.metrics.scoring_failures.inc,
            )
            if settings.scoring_uri
            else None
        )
        self.following = "@" in settings.reference
        self._stop = threading.Event()
        self._follower = threading.Thread(target=self._follow, name="perftune-alias-follower", daemon=True)

    def _default_threads(self) -> int:
        """What the starting version was measured with (1 when it records none), at most cores ÷ workers."""
        version = self.registry.servable(self.settings.reference)
        return serving_threads(measured_threads(version.tags), self.settings.workers)

    def load(self, reference: str) -> LoadedModel:
        """Load a version (not yet served: :meth:`swap` serves it)."""
        model = load_version(self.registry, reference, self.thread_limit)
        self.metrics.load_seconds.labels(model.name, model.version).set(model.load_seconds)
        self.metrics.loaded.labels(model.name, model.version).set(1)
        log.info("loaded %s v%s in %.3f s (%d threads)", model.name, model.version, model.load_seconds, model.threads)
        note = model.threads_note()
        if note:
            log.warning("%s", note)
        return model

    def swap(self, model: LoadedModel | None) -> None:
        """Switch atomically: a request holds the model it started with, the next one gets the new one."""
        before, self.model = self.model, model
        if before is not None and (model is None or model.version != before.version):
            self.metrics.loaded.labels(before.name, before.version).set(0)
            self.metrics.swaps.labels(self.name).inc()
            log.info("%s: v%s → %s", self.name, before.version, f"v{model.version}" if model else "unloaded")

    def start(self) -> None:
        if self.following and self.settings.poll_interval_s > 0:
            self._follower.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.settings.poll_interval_s):
            try:
                self.refresh()
            except Exception as exc:  # keep serving what we have; say why the alias could not be followed
                log.warning("following %s failed: %s", self.settings.reference, exc)

    def refresh(self) -> bool:
        """Load the version the alias points at now, if it changed. Returns whether it swapped."""
        target = self.registry.resolve(self.settings.reference)
        current = self.model
        if current is not None and str(target.version) == current.version:
            return False
        self.swap(self.load(f"{self.name}/{target.version}"))
        return True

    def close(self) -> None:
        self._stop.set()
        if self._follower.is_alive():
            self._follower.join(timeout=10)
        if self.scoring is not None:
            self.scoring.close()
        self.registry.close()
        self.thread_limit.restore()
