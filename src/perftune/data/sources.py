"""Dataset sources (a plug-in point): where a named dataset comes from and how it is read.

A source is one class with a ``name`` that implements :class:`Source` and is registered with
:func:`register_source`. ``load_dataset`` picks the source from the spec entry (``source:`` or a
``prefix:name``), reads a table and validates it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from perftune.errors import DatasetError
from perftune.settings import default_workspace
from perftune.spec import DatasetSpec

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_SOURCE = "pmlb"


def data_dir() -> Path:
    """Where offline copies and downloads live: ``$PERFTUNE_DATA_DIR``, else the user's cache folder."""
    configured = os.environ.get("PERFTUNE_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "perftune" / "datasets"


@dataclass(frozen=True)
class Locations:
    """Where sources look: the download cache / offline copies, and the workspace (its versioned data store)."""

    data_dir: Path
    workspace: Path

    @classmethod
    def default(cls, workspace: Path | str | None = None, recorded_data_dir: str | None = None) -> Locations:
        """$PERFTUNE_DATA_DIR if set, else the data dir a study recorded (refits), else the user's cache."""
        chosen = workspace or default_workspace()
        if recorded_data_dir and not os.environ.get("PERFTUNE_DATA_DIR"):
            return cls(Path(recorded_data_dir), Path(chosen))
        return cls(data_dir(), Path(chosen))


@dataclass(frozen=True)
class DatasetInfo:
    """One row of ``perftune datasets``."""

    name: str
    source: str
    task: str | None
    rows: int | None
    features: int | None
    available: str  # "local" or "download on first use"
    location: str


@dataclass
class RawTable:
    """A table as read from a source, before validation."""

    frame: pd.DataFrame
    target: str
    location: str
    task: str | None = None
    version: str | None = None  # the ML data store's version, for store: datasets
    weight: str | None = None  # a column of per-row sample weights (not a feature), e.g. retraining's recency
    kind: str = "table"  # "text" / "images": unstructured rows that a transform turns into features
    meta: dict[str, Any] = field(default_factory=dict)  # the store's facts about them (image size, fingerprint)


class Source(Protocol):
    name: ClassVar[str]

    def check(self, spec: DatasetSpec, where: Locations) -> str | None:
        """Cheaply check that the dataset exists (raise DatasetError if not); return its task if known."""

    def read(self, spec: DatasetSpec, where: Locations) -> RawTable:
        """Read the dataset's table; raise DatasetError (unknown name) or DataUnavailableError."""

    def list(self, where: Locations, everything: bool = False) -> list[DatasetInfo]:
        """What this source can load (``everything``: also what would be downloaded)."""


_SOURCES: dict[str, type[Source]] = {}


def register_source(cls: type[Source]) -> type[Source]:
    _SOURCES[cls.name] = cls
    return cls


def get_source(name: str) -> Source:
    from perftune.data import file_source, pmlb_source, sklearn_source, store  # noqa: F401  (registration)

    try:
        return _SOURCES[name]()
    except KeyError:
        raise DatasetError(f"unknown dataset source {name!r}; known: {', '.join(sorted(_SOURCES))}") from None


def source_names() -> list[str]:
    from perftune.data import file_source, pmlb_source, sklearn_source, store  # noqa: F401

    return sorted(_SOURCES)


def read_table(spec: DatasetSpec, where: Locations | None = None) -> RawTable:
    """Read the raw table for a spec entry (no validation yet)."""
    source = get_source(spec.source or DEFAULT_SOURCE)
    return source.read(spec, where or Locations.default())


def list_datasets(everything: bool = False, where: Locations | None = None) -> list[DatasetInfo]:
    where = where or Locations.default()
    return [info for name in source_names() for info in get_source(name).list(where, everything)]
