"""CSV and Parquet files with a named target column."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pandas as pd

from perftune.data.sources import DatasetInfo, Locations, RawTable, register_source
from perftune.errors import DatasetError
from perftune.spec import DatasetSpec

_READERS = {
    ".csv": pd.read_csv,
    ".csv.gz": pd.read_csv,
    ".tsv": lambda path: pd.read_csv(path, sep="\t"),
    ".tsv.gz": lambda path: pd.read_csv(path, sep="\t"),
    ".parquet": pd.read_parquet,
}


def _reader(path: Path):  # type: ignore[no-untyped-def]
    name = path.name.lower()
    return next((read for suffix, read in _READERS.items() if name.endswith(suffix)), None)


def read_file(path: Path, name: str) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet file; a missing, unknown or corrupt file is a DatasetError."""
    if not path.is_file():
        raise DatasetError(f"dataset {name!r}: file {path} does not exist")
    reader = _reader(path)
    if reader is None:
        raise DatasetError(f"dataset {name!r}: cannot read {path.name}; use a .csv, .tsv or .parquet file")
    try:
        return reader(path)
    except Exception as exc:  # pandas/pyarrow raise many types for corrupt files
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"dataset {name!r}: {path} could not be read: {detail}") from None


@register_source
class FileSource:
    name: ClassVar[str] = "file"

    def check(self, spec: DatasetSpec, where: Locations) -> str | None:
        path = Path(spec.path or "")
        if not path.is_file():
            raise DatasetError(f"dataset {spec.name!r}: file {path} does not exist")
        if _reader(path) is None:
            raise DatasetError(f"dataset {spec.name!r}: cannot read {path.name}; use a .csv, .tsv or .parquet file")
        if not spec.target:
            raise DatasetError(f"dataset {spec.name!r}: a file dataset needs 'target' (the label column's name)")
        return spec.task

    def read(self, spec: DatasetSpec, where: Locations) -> RawTable:
        self.check(spec, where)
        path = Path(spec.path or "")
        assert spec.target is not None
        return RawTable(
            frame=read_file(path, spec.name), target=spec.target, location=str(path.resolve()), task=spec.task
        )

    def list(self, where: Locations, everything: bool = False) -> list[DatasetInfo]:
        return []  # files are named in specs, not discovered
