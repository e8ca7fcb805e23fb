"""Content keys of rows: the same model input has the same key, whichever way it came back.

Retraining must know whether a served row *is* a row of the champion's test split or of the comparison's holdout
(:mod:`.data`), and whether a row the two versions are compared on is one either of them trained on. Request ids
and labels say nothing about that; the input does. A row's key is a digest of its input after the normalisation
that makes two copies of one input equal:

* **table rows** (float features): each value as a float32 — a value that went through JSON, the scoring log's
  float64 copy or a client's float32 array comes back within float32 precision of itself, so ``0.627``,
  ``0.6269999742507935`` and ``np.float32(0.627)`` are one value; ``-0.0`` is ``0.0`` and every NaN is one NaN;
* **texts**: Unicode NFC, every run of whitespace one space, no leading or trailing whitespace — the data store
  strips texts on ingest and a client may send ``\\r\\n`` or a trailing newline; letter case is content;
* **images**: pixels rounded to whole values and clipped to 0…255, as the retraining table stores them (:mod:`.data`).

A key is the 16-byte BLAKE2b digest of those values, so a table of 70 000 images costs 1 MB of keys, not the pixels.
Two different inputs share a key only when float32 rounding makes them equal (or by a 2⁻¹²⁸ collision): they are
then treated as one row, which can only leave a served row out of training, never let a tested one in.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

import numpy as np

__all__ = ["Keys", "row_keys"]

_WHITESPACE = re.compile(r"\s+")


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _text(value: object) -> bytes:
    text = unicodedata.normalize("NFC", str(value))
    return _WHITESPACE.sub(" ", text).strip().encode("utf-8")


def _numbers(rows: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # beyond float32's range is an infinity: still one key per value
        values = np.asarray(rows, dtype=np.float64).astype(np.float32) + np.float32(0.0)  # -0.0 + 0.0 is 0.0
    values[np.isnan(values)] = np.float32("nan")  # one bit pattern for every NaN
    return np.ascontiguousarray(values)


def _pixels(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(np.asarray(rows, dtype=np.float64)), 0, 255).astype(np.uint8))


def row_keys(rows: np.ndarray, kind: str) -> list[bytes]:
    """One key per row of ``rows`` (N×features for a table, N×1 or N texts, N×pixels or N×H×W images).

    Args:
        rows: the rows as the model takes them (a scoring log's inputs, a dataset's features or raw inputs).
        kind: ``table``, ``text`` or ``images`` (:class:`perftune.retrain.data.RetrainData`'s kinds).

    Returns:
        The content key of each row, in order.
    """
    if len(rows) == 0:
        return []
    if kind == "text":
        return [_digest(_text(value)) for value in np.asarray(rows, dtype=object).reshape(len(rows), -1)[:, 0]]
    flat = np.asarray(rows).reshape(len(rows), -1)
    values = _pixels(flat) if kind == "images" else _numbers(flat)
    return [_digest(row.tobytes()) for row in values]


class Keys:
    """The content keys of a set of rows, to ask which other rows are among them."""

    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        self._keys = set(keys)

    @classmethod
    def of(cls, rows: np.ndarray, kind: str) -> Keys:
        return cls(row_keys(rows, kind))

    def __len__(self) -> int:
        return len(self._keys)

    def __or__(self, other: Keys) -> Keys:
        return Keys(self._keys | other._keys)

    def contains(self, keys: list[bytes]) -> np.ndarray:
        """Mask of the ``keys`` (from :func:`row_keys`) that are among these."""
        return np.fromiter((key in self._keys for key in keys), dtype=bool, count=len(keys))
