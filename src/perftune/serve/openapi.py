"""The request bodies as ``/openapi.json`` documents them: pydantic models that never sit on the hot path.

The endpoints read their raw bodies (:mod:`perftune.serve.protocol` validates them far faster than pydantic
would); these models only describe them. :func:`request_body` is a route's ``openapi_extra``, and
:func:`openapi_schema` adds the models to the generated document.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

__all__ = ["FeedbackRequest", "InferRequest", "InvocationsRequest", "LoadRequest", "openapi_schema", "request_body"]

_REF = "#/components/schemas/{model}"


class Tensor(BaseModel):
    name: str = Field(examples=["input-0"])
    shape: list[int] = Field(examples=[[1, 8]])
    datatype: str = Field(examples=["FP64"], description="BOOL, UINT8…64, INT8…64, FP16, FP32, FP64 or BYTES")
    data: list[Any] = Field(description="row-major values, flat or nested")
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[Tensor]
    outputs: list[dict[str, Any]] | None = None


class DataFrameSplit(BaseModel):
    columns: list[str] | None = None
    data: list[list[Any]]
    index: list[Any] | None = None


class InvocationsRequest(BaseModel):
    """Exactly one of the four formats."""

    dataframe_split: DataFrameSplit | None = None
    dataframe_records: list[dict[str, Any]] | None = None
    instances: list[Any] | None = None
    inputs: list[Any] | dict[str, list[Any]] | None = None
    params: dict[str, Any] | None = None


class FeedbackItem(BaseModel):
    request_id: str
    labels: list[Any] | Any = Field(description="the true label of each row of that request")


class FeedbackRequest(BaseModel):
    items: list[FeedbackItem]


class LoadRequest(BaseModel):
    reference: str | None = Field(default=None, description="NAME@ALIAS or NAME/VERSION; default: the served one")


def request_body(model: type[BaseModel], csv: bool = False) -> dict[str, Any]:
    """A route's ``openapi_extra``: a required body described by ``model`` (and plain text CSV if ``csv``)."""
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}
    if csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    return {"requestBody": {"required": True, "content": content}}


def openapi_schema(app: FastAPI, bodies: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """FastAPI's document of ``app`` with the schemas of ``bodies`` (and of the models they hold) added."""
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in bodies:
        document = model.model_json_schema(ref_template=_REF)
        components.update(document.pop("$defs", {}))
        components[model.__name__] = document
    return schema
