"""The HTTP endpoints: path parameters and the body in, the data plane's reply out — HTTP only, no logic.

Each endpoint is one line around a :class:`~perftune.serve.dataplane.DataPlane` method; the route table of
:mod:`perftune.serve.app` says where each is served and who may call it. The endpoints' names are the
``operationId`` stems of ``/openapi.json``; only ``reload`` has a docstring, which the document shows.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from perftune.serve.dataplane import DataPlane, Reply, encode
from perftune.serve.errors import ClientAborted, RequestError

__all__ = ["PROMETHEUS_TYPE", "Endpoints", "RequestBody", "render"]

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(reply: Reply) -> Response:
    """A reply (or an error document) as a JSON response."""
    return Response(encode(reply.body), reply.status, reply.headers, media_type="application/json")


class RequestBody:
    """A request's body for the data plane: streamed only when read, refused (413) past ``--max-body-mb``; a
    client that disconnects before its body is complete is :class:`~perftune.serve.errors.ClientAborted`."""

    def __init__(self, request: Request, limit: int) -> None:
        self.request, self.limit = request, limit

    @property
    def content_type(self) -> str:
        return self.request.headers.get("content-type", "")

    async def read(self) -> bytes:
        limit = self.limit
        declared = self.request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"payload of {int(declared)} bytes is over the limit of {limit} (--max-body-mb)")
        chunks, size = [], 0
        try:
            async for chunk in self.request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, f"payload is over the limit of {limit} bytes (--max-body-mb)")
                chunks.append(chunk)
        except ClientDisconnect:
            raise ClientAborted(size, declared) from None
        return b"".join(chunks)


class Endpoints:
    """The endpoints of one server, bound to its data plane."""

    def __init__(self, plane: DataPlane, max_body_bytes: int) -> None:
        self.plane, self.max_body_bytes = plane, max_body_bytes

    def _body(self, request: Request) -> RequestBody:
        return RequestBody(request, self.max_body_bytes)

    # health
    async def live(self) -> Response:
        return render(self.plane.live())

    async def ready(self) -> Response:
        return render(self.plane.ready())

    async def ping(self) -> Response:
        return render(self.plane.ping())

    # metadata
    async def server_metadata(self) -> Response:
        return render(self.plane.server_metadata())

    async def metadata(self, name: str) -> Response:
        return render(self.plane.model_metadata(name, None))

    async def metadata_version(self, name: str, version: str) -> Response:
        return render(self.plane.model_metadata(name, version))

    async def is_ready(self, name: str) -> Response:
        return render(self.plane.model_ready(name, None))

    async def is_ready_version(self, name: str, version: str) -> Response:
        return render(self.plane.model_ready(name, version))

    # inference
    async def infer_v2(self, request: Request, name: str) -> Response:
        return render(await self.plane.infer(name, None, "v2", self._body(request)))

    async def infer_v2_version(self, request: Request, name: str, version: str) -> Response:
        return render(await self.plane.infer(name, version, "v2", self._body(request)))

    async def invocations(self, request: Request) -> Response:
        return render(await self.plane.infer(self.plane.name, None, "invocations", self._body(request)))

    async def explain(self, request: Request, name: str) -> Response:
        return render(await self.plane.explain(name, None, self._body(request)))

    async def explain_version(self, request: Request, name: str, version: str) -> Response:
        return render(await self.plane.explain(name, version, self._body(request)))

    # feedback and metrics
    async def feedback(self, request: Request, name: str) -> Response:
        return render(await self.plane.feedback(name, self._body(request)))

    async def prometheus(self) -> Response:
        return Response(self.plane.exposition(), media_type=PROMETHEUS_TYPE)

    # management
    async def repository_index(self) -> Response:
        return render(self.plane.repository_index())

    async def load(self, request: Request, name: str) -> Response:
        return render(await self.plane.load(name, self._body(request)))

    async def unload(self, name: str) -> Response:
        return render(self.plane.unload(name))

    async def reload(self) -> Response:
        """Re-resolve the alias now instead of at the next poll."""
        return render(await self.plane.reload())
