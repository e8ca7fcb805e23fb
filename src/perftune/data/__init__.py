"""Data: load → validate → fingerprint → split."""

from __future__ import annotations

from perftune.data.dataset import Dataset, dataset_from_frame
from perftune.data.sources import DEFAULT_SOURCE, DatasetInfo, Locations, data_dir, list_datasets, read_table
from perftune.data.split import Fold, PreparedData, prepare
from perftune.spec import DatasetSpec


def load_dataset(spec: DatasetSpec, *, seed: int = 0, where: Locations | None = None) -> Dataset:
    """Read, validate and fingerprint one dataset named in a spec."""
    raw = read_table(spec, where)
    return dataset_from_frame(
        raw.frame,
        name=spec.name,
        source=spec.source or DEFAULT_SOURCE,
        location=raw.location,
        target=raw.target,
        task=spec.task or raw.task,
        sample=spec.sample,
        seed=seed,
        version=raw.version,
    )


__all__ = [
    "Dataset",
    "DatasetInfo",
    "Fold",
    "Locations",
    "PreparedData",
    "data_dir",
    "list_datasets",
    "load_dataset",
    "prepare",
]
