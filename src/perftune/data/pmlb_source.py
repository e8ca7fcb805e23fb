"""PMLB (Penn Machine Learning Benchmarks) through ``pmlb.fetch_data`` with a local cache.

The cache is ``<data_dir>/pmlb/<name>/<name>.tsv.gz`` (pmlb's own layout). A cached file is read
offline; a missing one is downloaded by pmlb from GitHub and kept in the cache.
"""

from __future__ import annotations

import csv
import difflib
from pathlib import Path
from typing import ClassVar

import pmlb

from perftune.data.sources import DatasetInfo, Locations, RawTable, register_source
from perftune.errors import DatasetError, DataUnavailableError
from perftune.spec import DatasetSpec

_SUFFIX = ".tsv.gz"


def _task_of(name: str) -> str | None:
    if name in pmlb.classification_dataset_names:
        return "classification"
    if name in pmlb.regression_dataset_names:
        return "regression"
    return None


def _summary(folder: Path) -> tuple[int | None, int | None]:
    stats = folder / "summary_stats.tsv"
    if not stats.is_file():
        return None, None
    with stats.open() as handle:
        row = next(csv.DictReader(handle, delimiter="\t"), None)
    if not row:
        return None, None
    return int(float(row["n_instances"])), int(float(row["n_features"]))


@register_source
class PMLBSource:
    name: ClassVar[str] = "pmlb"

    def check(self, spec: DatasetSpec, where: Locations) -> str | None:
        name, cache = spec.name, where.data_dir / "pmlb"
        if not (cache / name / f"{name}{_SUFFIX}").is_file() and name not in pmlb.dataset_names:
            close = difflib.get_close_matches(name, pmlb.dataset_names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            cached = sorted(p.name for p in cache.glob("*") if (p / f"{p.name}{_SUFFIX}").is_file())
            have = f" Cached in {cache}: {', '.join(cached)}." if cached else ""
            raise DatasetError(f"unknown PMLB dataset {name!r}.{hint}{have} `perftune datasets --all` lists every name")
        return spec.task or _task_of(name)

    def read(self, spec: DatasetSpec, where: Locations) -> RawTable:
        self.check(spec, where)
        name = spec.name
        cache = where.data_dir / "pmlb"
        local = (cache / name / f"{name}{_SUFFIX}").absolute()
        if not local.is_file():
            try:
                frame = pmlb.fetch_data(name, local_cache_dir=str(cache), dropna=False)
            except Exception as exc:  # network errors come as URLError, HTTPError, OSError, …
                raise DataUnavailableError(
                    f"PMLB dataset {name!r} is not in the local cache ({local}) and could not be downloaded "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'}). "
                    f"Run once with network access to fetch it (pmlb downloads it into {cache}), or set "
                    "PERFTUNE_DATA_DIR to a folder that holds pmlb/<name>/<name>.tsv.gz"
                ) from None
        else:
            frame = pmlb.fetch_data(name, local_cache_dir=str(cache), dropna=False)
        return RawTable(frame=frame, target=spec.target or "target", location=str(local), task=_task_of(name))

    def list(self, where: Locations, everything: bool = False) -> list[DatasetInfo]:
        cache = where.data_dir / "pmlb"
        out = []
        for name in sorted(pmlb.dataset_names):
            folder = cache / name
            local = (folder / f"{name}{_SUFFIX}").is_file()
            if not (local or everything or folder.is_dir()):
                continue
            rows, features = _summary(folder)
            out.append(
                DatasetInfo(
                    name=name,
                    source=self.name,
                    task=_task_of(name),
                    rows=rows,
                    features=features,
                    available="local" if local else "download on first use",
                    location=str(folder / f"{name}{_SUFFIX}") if local else "github.com/EpistasisLab/pmlb",
                )
            )
        return out
