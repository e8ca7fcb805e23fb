"""Data: load → validate → fingerprint → split.

Names are imported on first use (PEP 562), so ``perftune.data.sources`` — which checking a spec needs — does
not pull in scikit-learn's splitting and pandas' readers with it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perftune.data.dataset import Dataset
    from perftune.data.sources import DatasetInfo, Locations
    from perftune.data.split import Fold, PreparedData
    from perftune.spec import DatasetSpec

_LAZY = {
    "Dataset": "perftune.data.dataset",
    "dataset_from_frame": "perftune.data.dataset",
    "DEFAULT_SOURCE": "perftune.data.sources",
    "DatasetInfo": "perftune.data.sources",
    "Locations": "perftune.data.sources",
    "data_dir": "perftune.data.sources",
    "list_datasets": "perftune.data.sources",
    "read_table": "perftune.data.sources",
    "Fold": "perftune.data.split",
    "PreparedData": "perftune.data.split",
    "prepare": "perftune.data.split",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'perftune.data' has no attribute {name!r}")


def load_dataset(spec: DatasetSpec, *, seed: int = 0, where: Locations | None = None) -> Dataset:
    """Read, validate and fingerprint one dataset named in a spec."""
    from perftune.data.dataset import dataset_from_frame
    from perftune.data.sources import DEFAULT_SOURCE, read_table

    raw = read_table(spec, where)
    if raw.kind != "table" or spec.transform is not None:
        from perftune.data.sources import Locations
        from perftune.data.transforms import dataset_from_unstructured

        return dataset_from_unstructured(raw, spec, seed, (where or Locations.default()).workspace)
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
        weight=raw.weight,
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
