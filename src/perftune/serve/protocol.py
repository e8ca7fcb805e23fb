"""Request formats → a validated float matrix in the model's column order; predictions → response bodies.

Open Inference Protocol v2 (``/v2/models/{name}/infer``) and MLflow's ``/invocations`` (``dataframe_split``,
``dataframe_records``, ``instances``, ``inputs``; JSON or CSV). Every check raises :class:`RequestError` with a
status and a message that says what is wrong without echoing the data.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from perftune.serve.errors import RequestError
from perftune.serve.model import InputSchema, LoadedModel
from perftune.serve.scoring import CLIENT_ID_MAX

V2_NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
INVOCATION_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


_NON_FINITE = ("nan", "infinity", "inf")


def json_error(exc: ValueError) -> str:
    """orjson's decode error → a one-line message; "numbers must be finite" only where a number is the problem."""
    message = str(exc).split(":")[0]
    doc, pos = getattr(exc, "doc", "") or "", getattr(exc, "pos", 0) or 0
    near = doc[max(pos - 1, 0) : pos + 9].lstrip("-+[, ").lower() if isinstance(doc, str) else ""
    if "infinity" in message or near.startswith(_NON_FINITE):
        return f"malformed JSON: {message} (numbers must be finite: NaN and Infinity are not JSON)"
    return f"malformed JSON: {message}"


def client_id(value: Any) -> str | None:
    """The v2 request's ``"id"``: printable ASCII, at most 128 characters (it is echoed and logged)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(422, "'id' must be a string")
    if not value or len(value) > CLIENT_ID_MAX:
        raise RequestError(422, f"'id' must be 1 to {CLIENT_ID_MAX} characters, got {len(value)}")
    if not (value.isascii() and value.isprintable()):
        raise RequestError(422, "'id' must be printable ASCII (no control characters, line breaks or non-ASCII)")
    return value


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _numbers(values: Any, what: str) -> np.ndarray:
    """Values → float64, refusing strings, booleans, nulls, ragged rows, NaN and infinity."""
    try:
        array = np.asarray(values)
    except ValueError:
        raise RequestError(422, f"{what}: rows have different lengths") from None
    if array.dtype.kind not in "iuf":
        if array.dtype.kind == "b":
            raise RequestError(422, f"{what}: booleans where the model expects numbers")
        if array.dtype.kind == "O" and array.size and any(v is None for v in array.ravel().tolist()):
            raise RequestError(422, f"{what}: missing values (null); the model needs a number in every cell")
        if array.dtype.kind == "O" and array.ndim == 1 and any(isinstance(v, list) for v in array.tolist()):
            raise RequestError(422, f"{what}: rows have different lengths")
        raise RequestError(422, f"{what}: non-numeric values; the model expects numbers")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise RequestError(422, f"{what}: NaN or infinite values; the model needs finite numbers")
    return array


def _rows(matrix: np.ndarray, schema: InputSchema, what: str) -> np.ndarray:
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1) if matrix.size else matrix.reshape(0, schema.n_features)
    if matrix.ndim != 2:
        raise RequestError(422, f"{what}: expected rows of {schema.n_features} features, got {matrix.ndim} dimensions")
    if matrix.shape[0] == 0:
        raise RequestError(422, f"{what}: empty input; send at least one row")
    if matrix.shape[1] != schema.n_features:
        raise RequestError(
            422,
            f"{what}: the model takes {schema.n_features} features ({', '.join(schema.names)}), got {matrix.shape[1]}",
        )
    return matrix


def _by_name(columns: dict[str, Any], schema: InputSchema, what: str) -> list[Any]:
    missing = [n for n in schema.names if n not in columns]
    unknown = [str(c) for c in columns if c not in schema.names]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown {', '.join(unknown[:10])}")
        raise RequestError(422, f"{what}: columns do not match the model's ({'; '.join(parts)})")
    return [columns[n] for n in schema.names]


# ------------------------------------------------------------------------------------------ Open Inference v2


def v2_request(payload: Any, schema: InputSchema) -> tuple[np.ndarray, str | None]:
    """An OIP v2 infer request → (rows, request id). One tensor ``[N, F]``, or one tensor per named feature."""
    if not isinstance(payload, dict):
        raise RequestError(422, "the body must be a JSON object with an 'inputs' list")
    request_id = client_id(payload.get("id"))
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(422, "'inputs' must be a non-empty list of tensors {name, shape, datatype, data}")
    if schema.kind != "table":
        return _v2_unstructured(inputs, schema), request_id
    tensors = [_tensor(t, i) for i, t in enumerate(inputs)]
    if len(tensors) == 1 and tensors[0][0] not in schema.names:
        name, shape, values = tensors[0]
        return _rows(values.reshape(shape), schema, name), request_id
    columns = {}
    for name, shape, values in tensors:
        if name in columns:
            raise RequestError(422, f"tensor {name!r} appears twice")
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise RequestError(422, f"{name}: a per-feature tensor has shape [N] or [N, 1], got {shape}")
        columns[name] = values.reshape(-1)
    ordered = _by_name(columns, schema, "inputs")
    lengths = {len(c) for c in ordered}
    if len(lengths) != 1:
        raise RequestError(422, "inputs: per-feature tensors have different lengths")
    return _rows(np.column_stack(ordered), schema, "inputs"), request_id


def _tensor(tensor: Any, index: int) -> tuple[str, list[int], np.ndarray]:
    if not isinstance(tensor, dict):
        raise RequestError(422, f"inputs[{index}] must be an object {{name, shape, datatype, data}}")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError(422, f"inputs[{index}]: 'name' must be a non-empty string")
    shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise RequestError(422, f"{name}: 'shape' must be a list of non-negative integers")
    if datatype not in V2_NUMPY:
        raise RequestError(422, f"{name}: datatype {str(datatype)[:20]!r} is not one of {', '.join(V2_NUMPY)}")
    if datatype == "BYTES":
        raise RequestError(422, f"{name}: datatype BYTES, but the model takes numbers (FP64)")
    if data is None:
        raise RequestError(422, f"{name}: 'data' is missing")
    flat = _flatten(data)
    expected = math.prod(shape)
    if len(flat) != expected:
        raise RequestError(422, f"{name}: shape {shape} holds {expected} values, 'data' has {len(flat)}")
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise RequestError(422, f"{name}: datatype BOOL needs true/false values")
        return name, shape, np.asarray(flat, dtype=np.float64)
    if any(isinstance(v, bool) for v in flat):
        raise RequestError(422, f"{name}: booleans in a {datatype} tensor")
    values = _numbers(flat, name)
    if datatype.startswith(("INT", "UINT")) and not np.array_equal(values, np.round(values)):
        raise RequestError(422, f"{name}: datatype {datatype}, but the data has fractions")
    return name, shape, values


def v2_response(model: LoadedModel, predictions: np.ndarray, request_id: str) -> dict[str, Any]:
    return {
        "model_name": model.name,
        "model_version": model.version,
        "id": request_id,
        "outputs": [
            {
                "name": "predict",
                "shape": list(predictions.shape),
                "datatype": model.output_datatype,
                "data": predictions.ravel().tolist(),
            }
        ],
    }


def v2_metadata(model: LoadedModel) -> dict[str, Any]:
    s = model.schema
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": model.platform,
        "inputs": [_metadata_input(s)],
        "outputs": [{"name": "predict", "datatype": model.output_datatype, "shape": [-1]}],
        "parameters": {
            "feature_names": s.names,
            "feature_types": s.types,
            "threads": model.threads,  # what its runtimes run on here
            "measured_threads": model.measured_threads,  # what registration measured its latency with (None: unknown)
        },
    }


def _metadata_input(schema: InputSchema) -> dict[str, Any]:
    if schema.kind == "text":
        return {"name": "text", "datatype": "BYTES", "shape": [-1]}
    if schema.kind == "image":
        return {"name": "image", "datatype": "FP64", "shape": [-1, *schema.shape]}
    return {"name": "input-0", "datatype": "FP64", "shape": [-1, schema.n_features]}


# ------------------------------------------------------------------------------------------ MLflow /invocations


def invocations_request(payload: Any, schema: InputSchema) -> np.ndarray:
    """An MLflow scoring request (JSON) → rows in the model's column order."""
    if not isinstance(payload, dict):
        raise RequestError(422, f"the body must be a JSON object with one of {', '.join(INVOCATION_FORMATS)}")
    given = [k for k in INVOCATION_FORMATS if k in payload]
    if len(given) != 1:
        raise RequestError(
            422,
            f"send exactly one of {', '.join(INVOCATION_FORMATS)}"
            + (f" (got {', '.join(given)})" if given else f" (got keys: {', '.join(map(str, list(payload)[:5]))})"),
        )
    kind = given[0]
    body = payload[kind]
    if schema.kind != "table":
        return _invocations_unstructured(kind, body, schema)
    if kind == "dataframe_split":
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise RequestError(422, "dataframe_split needs {'columns': [...], 'data': [[...], ...]}")
        columns = body.get("columns")
        data = body["data"]
        if columns is None:
            return _rows(_numbers(data, kind), schema, kind)
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise RequestError(422, "dataframe_split: 'columns' must be a list of strings")
        if len(set(columns)) != len(columns):
            raise RequestError(422, "dataframe_split: duplicate column names")
        matrix = _numbers(data, kind)
        if matrix.ndim != 2 or matrix.shape[1] != len(columns):
            if matrix.size == 0:
                raise RequestError(422, f"{kind}: empty input; send at least one row")
            raise RequestError(422, f"{kind}: every row needs {len(columns)} values, one per column")
        index = dict(zip(columns, range(len(columns)), strict=True))
        _by_name(index, schema, kind)
        return _rows(matrix[:, [index[n] for n in schema.names]], schema, kind)
    if kind == "dataframe_records":
        return _records(body, schema, kind)
    # instances / inputs: a list of rows (lists or records), or {column: values}
    if isinstance(body, dict):
        ordered = _by_name(body, schema, kind)
        columns = [_numbers(c, kind).reshape(-1) for c in ordered]
        if len({len(c) for c in columns}) != 1:
            raise RequestError(422, f"{kind}: columns have different lengths")
        return _rows(np.column_stack(columns), schema, kind)
    if isinstance(body, list) and body and all(isinstance(r, dict) for r in body):
        return _records(body, schema, kind)
    return _rows(_numbers(body, kind), schema, kind)


def _records(records: Any, schema: InputSchema, kind: str) -> np.ndarray:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise RequestError(422, f"{kind} must be a list of {{column: value}} objects")
    if not records:
        raise RequestError(422, f"{kind}: empty input; send at least one row")
    for record in records:
        _by_name(record, schema, kind)
    return _rows(_numbers([[r[n] for n in schema.names] for r in records], kind), schema, kind)


def csv_request(body: bytes, schema: InputSchema) -> np.ndarray:
    """A CSV body with a header row (MLflow's ``text/csv``)."""
    import pandas as pd

    if schema.kind == "image":
        raise RequestError(415, "this model takes images: send JSON ('inputs': [N, H, W] or [N, H·W] pixel arrays)")
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=str if schema.kind == "text" else None, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise RequestError(400, f"malformed CSV: {str(exc).splitlines()[0][:200]}") from None
    if schema.kind == "text":
        if list(frame.columns) != ["text"]:
            raise RequestError(422, "csv: this model takes one column, 'text' (a header line, then one text per row)")
        return _texts(frame["text"].tolist(), "csv")
    columns = {str(c): frame[c].to_numpy() for c in frame.columns}
    if set(columns) != set(schema.names) or len(columns) != len(frame.columns):
        # the first line may be data (a CSV without a header): never echo it, only count what matches
        matching = len(set(columns) & set(schema.names))
        raise RequestError(
            422,
            f"csv: the first line must be a header naming the model's {schema.n_features} columns"
            f" ({', '.join(schema.names)}); {matching} of its {len(frame.columns)} fields name one",
        )
    ordered = _by_name(columns, schema, "csv")
    return _rows(_numbers(np.column_stack(ordered) if ordered else [], "csv"), schema, "csv")


# ------------------------------------------------------------------------------------------ texts and images
MAX_TEXT_CHARS = 200_000  # one article is a few thousand characters


def _texts(values: Any, what: str) -> np.ndarray:
    """Strings → an N×1 object array, refusing anything that is not a non-empty list of strings."""
    flat = _flatten(values)
    if not flat:
        raise RequestError(422, f"{what}: empty input; send at least one text")
    for value in flat:
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise RequestError(422, f"{what}: every input must be a text (a string), got {kind}")
        if len(value) > MAX_TEXT_CHARS:
            raise RequestError(422, f"{what}: a text of {len(value)} characters; at most {MAX_TEXT_CHARS}")
        if not value.strip():
            raise RequestError(422, f"{what}: an empty or blank text; send the document's text")
    return np.array(flat, dtype=object).reshape(-1, 1)


def _images(values: np.ndarray, schema: InputSchema, what: str) -> np.ndarray:
    """Pixel values shaped [N, H, W] or [N, H·W] → rows of H·W pixels (float64), each in 0…255."""
    height, width = schema.shape
    if values.ndim == 3 and values.shape[1:] == (height, width):
        values = values.reshape(len(values), -1)
    if values.ndim != 2 or values.shape[1] != height * width:
        raise RequestError(
            422,
            f"{what}: images must be shaped [N, {height}, {width}] or [N, {height * width}], got {list(values.shape)}",
        )
    if values.shape[0] == 0:
        raise RequestError(422, f"{what}: empty input; send at least one image")
    if values.min() < 0 or values.max() > 255:
        raise RequestError(422, f"{what}: pixel values must lie in 0…255")
    return values


def _v2_unstructured(inputs: list[Any], schema: InputSchema) -> np.ndarray:
    """One v2 tensor of texts (BYTES, shape [N] or [N, 1]) or of images (numbers, [N, H, W] or [N, H·W])."""
    if len(inputs) != 1:
        raise RequestError(422, f"this model takes one input tensor ({schema.names[0]}), got {len(inputs)}")
    if schema.kind == "image":
        name, shape, values = _tensor(inputs[0], 0)
        return _images(values.reshape(shape), schema, name)
    tensor = inputs[0]
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str) or not tensor["name"]:
        raise RequestError(422, "inputs[0] must be an object {name, shape, datatype, data} with a non-empty name")
    name, shape, data = tensor["name"], tensor.get("shape"), tensor.get("data")
    if tensor.get("datatype") != "BYTES":
        raise RequestError(
            422, f"{name}: datatype {str(tensor.get('datatype'))[:20]!r}, but the model takes text (BYTES)"
        )
    if not isinstance(shape, list) or not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise RequestError(422, f"{name}: a text tensor has shape [N] or [N, 1], got {shape}")
    texts = _texts(data if data is not None else [], name)
    if len(texts) != shape[0]:
        raise RequestError(422, f"{name}: shape {shape} holds {shape[0]} texts, 'data' has {len(texts)}")
    return texts


def _invocations_unstructured(kind: str, body: Any, schema: InputSchema) -> np.ndarray:
    """/invocations for texts (``inputs``/``instances``: a list of strings or {"text": [...]}; the dataframe
    formats with one ``text`` column) and images (``inputs``/``instances``: [N, H, W] or [N, H·W] arrays)."""
    if schema.kind == "image":
        if kind not in ("inputs", "instances"):
            raise RequestError(422, f"{kind}: send images as 'inputs' or 'instances' ([N, H, W] or [N, H·W] arrays)")
        return _images(_numbers(body, kind), schema, kind)
    if kind == "dataframe_split":
        if (
            not isinstance(body, dict)
            or body.get("columns", ["text"]) != ["text"]
            or not isinstance(body.get("data"), list)
        ):
            raise RequestError(422, "dataframe_split needs {'columns': ['text'], 'data': [['…'], …]}")
        return _texts(body["data"], kind)
    if kind == "dataframe_records" or (isinstance(body, list) and body and all(isinstance(r, dict) for r in body)):
        if not isinstance(body, list) or not all(isinstance(r, dict) and list(r) == ["text"] for r in body):
            raise RequestError(422, f"{kind} must be a list of {{'text': '…'}} objects")
        return _texts([r["text"] for r in body], kind)
    if isinstance(body, dict):
        if list(body) != ["text"]:
            raise RequestError(422, f"{kind}: this model takes one column, 'text'")
        body = body["text"]
    return _texts(body if isinstance(body, list) else [body], kind)
