"""scikit-learn's bundled datasets (shipped inside the package: no download)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import ClassVar

import pandas as pd
from sklearn import datasets as skd

from perftune.data.sources import DatasetInfo, Locations, RawTable, register_source
from perftune.errors import DatasetError
from perftune.spec import DatasetSpec

_BUILTIN: dict[str, tuple[Callable[..., object], str]] = {
    "iris": (skd.load_iris, "classification"),
    "wine": (skd.load_wine, "classification"),
    "breast_cancer": (skd.load_breast_cancer, "classification"),
    "digits": (skd.load_digits, "classification"),
    "diabetes": (skd.load_diabetes, "regression"),
    "linnerud": (skd.load_linnerud, "regression"),
}


@register_source
class SklearnSource:
    name: ClassVar[str] = "sklearn"

    def check(self, spec: DatasetSpec, where: Locations) -> str | None:
        if spec.name not in _BUILTIN:
            close = difflib.get_close_matches(spec.name, _BUILTIN, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DatasetError(
                f"unknown scikit-learn dataset {spec.name!r}{hint}; known: {', '.join(sorted(_BUILTIN))}"
            )
        return spec.task or _BUILTIN[spec.name][1]

    def read(self, spec: DatasetSpec, where: Locations) -> RawTable:
        self.check(spec, where)
        loader, task = _BUILTIN[spec.name]
        bunch = loader(as_frame=True)
        frame: pd.DataFrame = bunch.frame  # type: ignore[attr-defined]
        target = spec.target or ("target" if "target" in frame.columns else str(frame.columns[-1]))
        return RawTable(frame=frame, target=target, location=f"sklearn.datasets.load_{spec.name}", task=task)

    def list(self, where: Locations, everything: bool = False) -> list[DatasetInfo]:
        out = []
        for name, (loader, task) in sorted(_BUILTIN.items()):
            bunch = loader()
            out.append(
                DatasetInfo(
                    name=f"sklearn:{name}",
                    source=self.name,
                    task=task,
                    rows=int(bunch.data.shape[0]),
                    features=int(bunch.data.shape[1]),  # type: ignore[attr-defined]
                    available="local",
                    location=f"sklearn.datasets.load_{name}",
                )
            )
        return out
