"""The server's logic, whatever the transport: inference, metadata, readiness, feedback, model management.

:class:`DataPlane` takes what a request says (path parameters, a :class:`Body` it reads only when it needs it)
and returns a :class:`Reply`, or raises a :class:`~perftune.serve.errors.RequestError` carrying its status.
It knows nothing of HTTP requests: :mod:`perftune.serve.endpoints` adapts it to FastAPI.

One inference: the model is taken once (a swap meanwhile does not change who answers), the name and version are
checked before the body is read, the body is parsed against the signature (:mod:`perftune.serve.protocol`),
predicted, and the response is encoded *before* it is written to the scoring log: only a response that exists
is logged, and counted as answered.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import orjson
from starlette.concurrency import run_in_threadpool

from perftune import __version__
from perftune.errors import PerftuneError, UsageError
from perftune.measure.contention import this_thread_wait_s
from perftune.serve import protocol
from perftune.serve.errors import InternalError, RequestError
from perftune.serve.feedback import RULE as FEEDBACK_RULE
from perftune.serve.feedback import LabelCountError, attach_labels
from perftune.serve.model import LoadedModel
from perftune.serve.server import Server

log = logging.getLogger("perftune.serve")

__all__ = ["INLINE_ROWS", "Body", "DataPlane", "Endpoint", "Reply", "encode"]

INLINE_ROWS = 256  # larger batches predict in a worker thread so the event loop keeps answering

Endpoint = Literal["v2", "invocations"]  # the inference protocols, as metrics and the scoring log name them


class Body(Protocol):
    """A request's body, read only when the data plane needs it: a refused request is never read."""

    @property
    def content_type(self) -> str: ...

    async def read(self) -> bytes: ...


@dataclass(frozen=True)
class Reply:
    """An answer that is not an error: a JSON document (or its encoded bytes), its status and headers."""

    body: Any
    status: int = 200
    headers: dict[str, str] | None = None


def encode(body: Any) -> bytes:
    """A JSON document as bytes (numpy arrays and scalars included, string labels too); bytes pass through."""
    if isinstance(body, bytes):
        return body
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=_object_array)


def _object_array(value: Any) -> Any:
    """orjson serializes numeric numpy arrays itself; an array of objects (e.g. text labels) goes as a list."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


async def read_json(body: Body, empty: Any = None) -> Any:
    """The body as JSON; an empty body is a 400 unless ``empty`` gives its meaning."""
    raw = await body.read()
    if not raw:
        if empty is not None:
            return empty
        raise RequestError(400, "empty body; send a JSON document")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, protocol.json_error(exc)) from None


class DataPlane:
    """What the server does, on the state of one :class:`Server`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.metrics = server.metrics

    @property
    def name(self) -> str:
        """The served model's name (the same whichever version is loaded)."""
        return self.server.name

    # ---------------------------------------------------------------------------------------------- checks

    def check_name(self, name: str) -> None:
        """404 unless ``name`` is the model this server serves."""
        if name != self.name:
            raise RequestError(404, f"unknown model {name[:100]!r}; this server serves {self.name!r}")

    def served(self, name: str, version: str | None, model: LoadedModel | None) -> LoadedModel:
        """``model`` if it is the one asked for: 404 for another name or version, 503 while unloaded."""
        self.check_name(name)
        if model is None:
            raise RequestError(503, f"{self.name} is unloaded; POST /v2/repository/models/{self.name}/load")
        if version is not None and version != model.version:
            raise RequestError(404, f"{self.name} version {version[:20]!r} is not loaded; serving v{model.version}")
        return model

    # ---------------------------------------------------------------------------------------------- health

    def live(self) -> Reply:
        return Reply({"live": True})

    def ready(self) -> Reply:
        loaded = self.server.model is not None
        return Reply({"ready": loaded}, 200 if loaded else 503)

    def ping(self) -> Reply:
        """MLflow's ``/ping``: an empty document, 503 while unloaded."""
        return Reply(b"\n", 200 if self.server.model is not None else 503)

    # -------------------------------------------------------------------------------------------- metadata

    def server_metadata(self) -> Reply:
        return Reply({"name": "perftune", "version": __version__, "extensions": ["model_repository"]})

    def model_metadata(self, name: str, version: str | None) -> Reply:
        return Reply(protocol.v2_metadata(self.served(name, version, self.server.model)))

    def model_ready(self, name: str, version: str | None) -> Reply:
        try:
            model = self.served(name, version, self.server.model)
        except RequestError as exc:
            if exc.status != 503:
                raise
            return Reply({"name": name, "ready": False}, 503)
        return Reply({"name": name, "version": model.version, "ready": True})

    # ------------------------------------------------------------------------------------------- inference

    async def infer(self, name: str, version: str | None, endpoint: Endpoint, body: Body) -> Reply:
        """One inference, whatever the protocol: check, parse, predict, encode the response, log it, count rows."""
        started = (time.perf_counter(), this_thread_wait_s())
        model = self.served(name, version, self.server.model)  # answers this request, even if a swap comes
        X, client_id = await self._parse(model, endpoint, body)
        predictions = await self._predict(model, X)
        reply = self._answer(model, endpoint, X, predictions, client_id, started)
        self.metrics.rows.labels(model.name).observe(len(X))
        return reply

    async def explain(self, name: str, version: str | None, body: Body) -> Reply:
        """Per-row attributions for a v2 inference body (not logged in the scoring log; see perftune.explain)."""
        model = self.served(name, version, self.server.model)
        if model.explainer is None:
            raise RequestError(501, f"{model.name} v{model.version}: {model.unexplained}")
        X, client_id = await self._parse(model, "v2", body)
        try:
            attributions = await run_in_threadpool(model.explainer.explain, X)
        except Exception:
            what, context = "the explainer failed on this input", "explainer error %s in %s v%s"
            raise InternalError.logged(what, context, model.name, model.version) from None
        document = {"model_name": model.name, "model_version": model.version, "id": client_id,
                    **attributions.to_dict()}  # fmt: skip
        return Reply(encode(document), headers={"X-Model-Version": model.version})

    async def _parse(self, model: LoadedModel, endpoint: Endpoint, body: Body) -> tuple[Any, str | None]:
        """The request's rows and the client's v2 id (None for /invocations)."""
        if endpoint == "invocations" and body.content_type.startswith("text/csv"):
            return protocol.csv_request(await body.read(), model.schema), None
        if endpoint == "invocations":
            return protocol.invocations_request(await read_json(body), model.schema), None
        return protocol.v2_request(await read_json(body), model.schema)

    async def _predict(self, model: LoadedModel, X: Any) -> Any:
        try:
            if len(X) <= INLINE_ROWS:
                return model.predict(X)
            return await run_in_threadpool(model.predict, X)
        except Exception:
            what, context = "the model failed on this input", "model error %s in %s v%s"
            raise InternalError.logged(what, context, model.name, model.version) from None

    def _answer(
        self,
        model: LoadedModel,
        endpoint: Endpoint,
        X: Any,
        predictions: Any,
        client_id: str | None,
        started: tuple[float, float],
    ) -> Reply:
        """Encode the response, then log it: only a response that exists is logged (and counted as 200).

        ``started`` is the request's start (``perf_counter``, the event-loop thread's CPU wait): the log keeps the
        latency and, of it, the time that thread waited for a CPU other processes held. A predict handed to the
        thread pool (large requests) waits there uncounted, so that figure is a lower bound for those.
        """
        key = uuid.uuid4().hex  # the server key: unique, whatever id the client sent
        headers = {"X-Request-Id": key, "X-Model-Version": model.version}
        if endpoint == "invocations":
            document: Any = {"predictions": predictions}
        else:
            document = protocol.v2_response(model, predictions, client_id or key)
        reply = Reply(encode(document), headers=headers)
        scoring = self.server.scoring
        if scoring is not None:
            latency_ms = (time.perf_counter() - started[0]) * 1000
            waited_ms = (this_thread_wait_s() - started[1]) * 1000
            try:
                scoring.log(key, client_id, model.name, model.version, endpoint, X, predictions, latency_ms,
                            min(waited_ms, latency_ms))  # fmt: skip
            except OSError as exc:  # durable mode: not written through, so not acknowledged
                log.error("cannot write the durable scoring log: %s", exc)
                raise RequestError(
                    503, f"cannot write the durable scoring log ({exc.strerror}); the request was not answered"
                ) from None
            self.metrics.queue_depth.set(scoring.depth())
        return reply

    # -------------------------------------------------------------------------------------------- feedback

    async def feedback(self, name: str, body: Body) -> Reply:
        """Join ground-truth labels to logged requests (see :mod:`perftune.serve.feedback` for the rule)."""
        model = self.served(name, None, self.server.model)
        scoring = self.server.scoring
        if scoring is None:
            raise RequestError(409, "this server keeps no scoring log (--no-scoring-log), so labels cannot join")
        pairs = _label_pairs(await read_json(body))
        await run_in_threadpool(scoring.flush)  # labels may follow right after the answer
        try:
            result = await run_in_threadpool(attach_labels, scoring.engine, self.name, pairs, model.classes)
        except LabelCountError as exc:
            raise RequestError(422, str(exc)) from None
        document = {
            "stored": result.stored,
            "replaced": result.replaced,
            "unknown_request_ids": result.unknown[:100],
            "matched": result.matched[:100],
            "rule": FEEDBACK_RULE,
        }
        return Reply(document, 200 if result.stored else 404)

    # ------------------------------------------------------------------------------------------ management

    def repository_index(self) -> Reply:
        model = self.server.model
        state = "READY" if model else "UNAVAILABLE"
        return Reply([{"name": self.name, "version": model.version if model else None, "state": state}])

    async def load(self, name: str, body: Body) -> Reply:
        """Load and serve a version of this model: the body's ``reference``, or the one the server started with."""
        self.check_name(name)
        payload = await read_json(body, empty={})
        reference = payload.get("reference") if isinstance(payload, dict) else None
        if reference is not None and (not isinstance(reference, str) or not reference.startswith(self.name)):
            raise RequestError(422, f"'reference' must name a version of {self.name} (NAME@ALIAS or NAME/VERSION)")
        try:
            model = await run_in_threadpool(self.server.load, reference or self.server.settings.reference)
        except PerftuneError as exc:
            raise RequestError(404 if isinstance(exc, UsageError) else 500, str(exc)) from None
        self.server.swap(model)
        return Reply({"name": model.name, "version": model.version, "state": "READY"})

    def unload(self, name: str) -> Reply:
        self.check_name(name)
        self.server.swap(None)
        return Reply({"name": name, "state": "UNAVAILABLE"})

    async def reload(self) -> Reply:
        """Re-resolve the alias now instead of at the next poll."""
        try:
            swapped = await run_in_threadpool(self.server.refresh)
        except PerftuneError as exc:
            raise RequestError(500, str(exc)) from None
        model = self.server.model
        return Reply({"name": self.name, "version": model.version if model else None, "swapped": swapped})

    # --------------------------------------------------------------------------------------------- metrics

    def exposition(self) -> bytes:
        """The Prometheus text of this server (all workers' with ``--workers``)."""
        if self.server.scoring is not None:
            self.metrics.queue_depth.set(self.server.scoring.depth())
        return self.metrics.exposition()


def _label_pairs(payload: Any) -> list[tuple[str, Any]]:
    """``{"items": [{"request_id", "labels"}, …]}`` → ``[(request_id, labels), …]``."""
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise RequestError(422, "send {'items': [{'request_id': ..., 'labels': [...]}, ...]}")
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("request_id"), str) or "labels" not in item:
            raise RequestError(422, f"items[{i}] needs a string 'request_id' and 'labels'")
        pairs.append((item["request_id"], item["labels"]))
    return pairs
