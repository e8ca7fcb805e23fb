"""The versioned ML data store: validated, cleaned tables as content-addressed Parquet in the workspace.

``perftune data ingest data.csv --name claims --target y`` reads a table, writes a validation report (schema,
types, missing values, duplicate rows, constant columns, target present), applies the declared cleaning
rules and stores the result as ``<workspace>/data/<name>/<version>.parquet`` where ``version`` is the first 12
hex digits of the cleaned content's sha256: identical content gives the same version. Specs refer to
``store:NAME`` (the newest version) or ``store:NAME@VERSION``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd

from perftune.data.dataset import fingerprint_frame, infer_task
from perftune.data.sources import DatasetInfo, Locations, RawTable, register_source
from perftune.errors import DatasetError, UsageError
from perftune.spec import DatasetSpec

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise DatasetError(
            f"dataset name {name!r} must start with a letter or digit and use only letters, digits, '_', '.', '-'"
        )


@dataclass(frozen=True)
class CleaningRules:
    """What to do with each problem the validation finds."""

    missing: Literal["reject", "drop_rows"] = "reject"
    duplicates: Literal["keep", "drop", "reject"] = "drop"
    constant_columns: Literal["keep", "drop"] = "drop"
    non_numeric: Literal["reject", "drop"] = "reject"


def cleaning_rules(**rules: str) -> CleaningRules:
    """Rules from option values (``missing="drop_rows"``, …); a bad value is a one-line :class:`UsageError`."""
    return rules_from_options(CleaningRules, **rules)


def rules_from_options(cls: type[Any], **values: Any) -> Any:
    """A rules dataclass from command-line option values; a bad value is a one-line :class:`UsageError` that
    names the option (``--invalid-utf8: Input should be 'replace', 'latin1' or 'reject'``)."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(cls).validate_python(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None


@dataclass
class ValidationReport:
    """What was found in a raw table, and what the rules did about it."""

    rows: int
    columns: dict[str, str]
    target: str
    target_present: bool
    missing: dict[str, int]
    duplicate_rows: int
    constant_columns: list[str]
    non_numeric_columns: list[str]
    actions: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected


def validate(frame: pd.DataFrame, target: str) -> ValidationReport:
    features = frame.drop(columns=[target], errors="ignore")
    return ValidationReport(
        rows=len(frame),
        columns={str(c): str(t) for c, t in frame.dtypes.items()},
        target=target,
        target_present=target in frame.columns,
        missing={str(c): int(n) for c, n in frame.isna().sum().items() if n},
        duplicate_rows=int(frame.duplicated().sum()),
        constant_columns=[str(c) for c in features.columns if features[c].nunique(dropna=False) <= 1],
        non_numeric_columns=[str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])],
    )


def clean(frame: pd.DataFrame, report: ValidationReport, rules: CleaningRules) -> pd.DataFrame:
    """Apply the rules; record each action or rejection on the report."""
    if not report.target_present:
        report.rejected.append(f"target column {report.target!r} is missing; columns: {', '.join(report.columns)}")
        return frame
    if len(frame) == 0:
        report.rejected.append("the table has no rows")
        return frame
    if report.non_numeric_columns:
        if rules.non_numeric == "reject":
            report.rejected.append(
                f"non-numeric feature columns {report.non_numeric_columns} (rule non_numeric: reject; "
                "use --non-numeric drop or encode them)"
            )
        else:
            frame = frame.drop(columns=report.non_numeric_columns)
            report.actions.append(f"dropped non-numeric columns {report.non_numeric_columns}")
    if report.missing:
        if rules.missing == "reject":
            report.rejected.append(f"missing values {report.missing} (rule missing: reject; use --missing drop_rows)")
        else:
            before = len(frame)
            frame = frame.dropna()
            report.actions.append(f"dropped {before - len(frame)} rows with missing values")
    if report.duplicate_rows:
        if rules.duplicates == "reject":
            report.rejected.append(f"{report.duplicate_rows} duplicate rows (rule duplicates: reject)")
        elif rules.duplicates == "drop":
            frame = frame.drop_duplicates()
            report.actions.append(f"dropped {report.duplicate_rows} duplicate rows")
    constant = [c for c in report.constant_columns if c in frame.columns]
    if constant and rules.constant_columns == "drop":
        frame = frame.drop(columns=constant)
        report.actions.append(f"dropped constant columns {constant}")
    if not report.rejected and len(frame) == 0:
        report.rejected.append("no rows left after cleaning")
    return frame.reset_index(drop=True)


@dataclass
class StoredVersion:
    """One version of a stored dataset (its metadata file)."""

    name: str
    version: str
    target: str
    task: str
    rows: int
    features: int
    fingerprint: str
    source: str
    created_at: str
    rules: dict[str, str]
    report: dict[str, Any]
    weight: str | None = None  # the column of sample weights, when the table has one
    lineage: dict[str, Any] = field(default_factory=dict)  # what it was built from (perftune-built tables)
    kind: str = "table"  # "table", or unstructured rows: "text" (a text column), "images" (an image column)
    meta: dict[str, Any] = field(default_factory=dict)  # kind-specific facts, e.g. the images' height and width
    reused: bool = False


class DataStore:
    """Versions of datasets under ``<workspace>/data``."""

    def __init__(self, workspace: Path | str) -> None:
        self.root = Path(workspace) / "data"

    def ingest(self, path: Path | str, name: str, target: str, rules: CleaningRules | None = None) -> StoredVersion:
        """Validate, clean and store a CSV/TSV/Parquet file; identical cleaned content → the same version.

        Raises DatasetError (with the validation report's findings) when a rule says reject.
        """
        from perftune.data.file_source import read_file

        _check_name(name)
        rules = rules or CleaningRules()
        frame = read_file(Path(path), name)
        report = validate(frame, target)
        cleaned = clean(frame, report, rules)
        if report.rejected:
            raise DatasetError(f"{path}: rejected: " + "; ".join(report.rejected))
        return self._store(cleaned, name, target, str(Path(path).resolve()), asdict(rules), asdict(report))

    def put(
        self, frame: pd.DataFrame, name: str, target: str, source: str, lineage: dict[str, Any],
        weight: str | None = None,
    ) -> StoredVersion:  # fmt: skip
        """Store a table perftune built itself (e.g. retraining data), with its ``lineage`` and an optional
        ``weight`` column of sample weights; identical content → the same version."""
        _check_name(name)
        report = validate(frame.drop(columns=[weight]) if weight else frame, target)
        return self._store(frame.reset_index(drop=True), name, target, source, {}, asdict(report), lineage, weight)

    def put_unstructured(
        self, frame: pd.DataFrame, name: str, kind: str, source: str, rules: dict[str, Any],
        report: dict[str, Any], lineage: dict[str, Any], meta: dict[str, Any], weight: str | None = None,
    ) -> StoredVersion:  # fmt: skip
        """Store text or image rows (see :mod:`perftune.data.unstructured`): one row per item, a ``label`` and a
        ``split`` column, and an optional ``weight`` column of sample weights; identical content → the same
        version."""
        _check_name(name)
        return self._store(
            frame.reset_index(drop=True), name, "label", source, rules, report, lineage, weight, kind=kind, meta=meta
        )

    def _store(
        self, cleaned: pd.DataFrame, name: str, target: str, source: str, rules: dict[str, Any],
        report: dict[str, Any], lineage: dict[str, Any] | None = None, weight: str | None = None,
        kind: str = "table", meta: dict[str, Any] | None = None,
    ) -> StoredVersion:  # fmt: skip
        fingerprint = fingerprint_frame(cleaned)
        version = fingerprint[:12]
        folder = self.root / name
        meta_path = folder / f"{version}.json"
        if meta_path.is_file():
            stored = self._read_meta(meta_path)
            stored.reused = True
            return stored
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{version}.parquet.tmp"
        cleaned.to_parquet(tmp, index=False)
        tmp.replace(folder / f"{version}.parquet")
        stored = StoredVersion(
            name=name,
            version=version,
            target=target,
            task="classification" if kind != "table" else infer_task(cleaned[target]),
            rows=len(cleaned),
            features=int((meta or {}).get("features", 1)) if kind != "table" else cleaned.shape[1] - 1 - bool(weight),
            fingerprint=fingerprint,
            source=source,
            created_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            rules=rules,
            report=report,
            weight=weight,
            lineage=lineage or {},
            kind=kind,
            meta=meta or {},
        )
        meta_tmp = folder / f".{version}.json.tmp"
        meta_tmp.write_text(json.dumps(asdict(stored), indent=2, default=str))
        meta_tmp.replace(meta_path)  # written last: a version without metadata does not exist
        return stored

    def versions(self, name: str | None = None) -> list[StoredVersion]:
        """Stored versions (of one dataset, or all), oldest first."""
        folders = [self.root / name] if name else sorted(p for p in self.root.glob("*") if p.is_dir())
        found = [self._read_meta(m) for f in folders for m in f.glob("*.json")]
        return sorted(found, key=lambda v: (v.name, v.created_at))

    def resolve(self, reference: str) -> tuple[StoredVersion, Path]:
        """``NAME`` (newest version) or ``NAME@VERSION`` → its metadata and Parquet file."""
        name, _, version = reference.partition("@")
        versions = self.versions(name) if (self.root / name).is_dir() else []
        if not versions:
            known = sorted({v.name for v in self.versions()})
            raise DatasetError(
                f"no dataset {name!r} in the data store {self.root}; stored: {', '.join(known) or 'none'}"
                f" (add one with `perftune data ingest FILE --name {name} --target COLUMN`)"
            )
        if version:
            match = [v for v in versions if v.version.startswith(version)]
            if len(match) != 1:
                raise DatasetError(
                    f"{name!r} has no single version {version!r}; versions: {', '.join(v.version for v in versions)}"
                )
            chosen = match[0]
        else:
            chosen = max(versions, key=lambda v: v.created_at)
        return chosen, self.root / name / f"{chosen.version}.parquet"

    @staticmethod
    def _read_meta(path: Path) -> StoredVersion:
        try:
            return StoredVersion(**{**json.loads(path.read_text()), "reused": False})
        except (ValueError, TypeError) as exc:
            raise DatasetError(f"{path} is not a data-store version file ({exc}); remove it") from None


@register_source
class StoreSource:
    """``store:NAME`` or ``store:NAME@VERSION`` in a spec."""

    name: ClassVar[str] = "store"

    def check(self, spec: DatasetSpec, where: Locations) -> str | None:
        stored, _ = DataStore(where.workspace).resolve(spec.name)
        return spec.task or stored.task

    def read(self, spec: DatasetSpec, where: Locations) -> RawTable:
        stored, path = DataStore(where.workspace).resolve(spec.name)
        frame = pd.read_parquet(path)
        return RawTable(
            frame=frame,
            target=spec.target or stored.target,
            location=f"{path} (store version {stored.version})",
            task=spec.task or stored.task,
            version=stored.version,
            weight=stored.weight,
            kind=stored.kind,
            meta={**stored.meta, "fingerprint": stored.fingerprint},
        )

    def list(self, where: Locations, everything: bool = False) -> list[DatasetInfo]:
        return [
            DatasetInfo(
                name=f"store:{v.name}@{v.version}",
                source=self.name,
                task=v.task,
                rows=v.rows,
                features=v.features,
                available="local",
                location=str(DataStore(where.workspace).root / v.name),
            )
            for v in DataStore(where.workspace).versions()
        ]
