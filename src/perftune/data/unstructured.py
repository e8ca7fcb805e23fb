"""Unstructured data into the versioned store: text files and idx images, checked file by file, with labels.

``perftune data ingest-text bbc-fulltext.zip --name bbc --labels-from folders`` reads a zip or a folder of
text files; ``perftune data ingest-images fashion-mnist/ --name fashion`` reads the idx files of an
(MNIST-style) image set; ``perftune data ingest-labels export.json --name bbc`` takes labels from a Label Studio
JSON export. Each step checks every file against explicit rules, keeps a per-file report, and stores the
result as a new content-addressed version (one Parquet table: the rows, their labels and their ``split``) with
its report and its lineage: the sha256 of the raw input it was built from.

Text rules: only the listed extensions are read; a file must decode as UTF-8, and one that does not is
repaired or rejected by the ``invalid_utf8`` policy (``replace``: U+FFFD for each bad byte; ``latin1``: read
the file as Latin-1; ``reject``); a NUL byte means the file is not text; the text must have at least
``min_chars`` characters; duplicate texts are dropped (kept with ``duplicates="keep"``). Image rules: idx
magic numbers and dimensions, unsigned-byte pixels, one label per image, labels in ``0 … classes-1``.

Splits are seeded and stratified by label (``test_fraction`` of each class); an image set that comes split
(``train-*`` / ``t10k-*``) keeps its own split.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from perftune.errors import DatasetError, UsageError

if TYPE_CHECKING:
    from perftune.data.store import DataStore, StoredVersion

TEXT_COLUMN, IMAGE_COLUMN, LABEL_COLUMN, SPLIT_COLUMN, FILE_COLUMN = "text", "image", "label", "split", "file"

# Where a machine with a network gets the two sets when no local copy exists (the loaders' real download path).
DOWNLOADS = {
    "fashion-mnist": {
        "base": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "files": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
    "bbc": {"base": "http://mlg.ucd.ie/files/datasets/", "files": {"bbc-fulltext.zip": None}},
}


@dataclass(frozen=True)
class TextRules:
    """What to do with each problem a text file can have."""

    invalid_utf8: Literal["replace", "latin1", "reject"] = "replace"
    min_chars: int = 20
    extensions: tuple[str, ...] = (".txt",)
    duplicates: Literal["drop", "keep"] = "drop"


@dataclass
class FileReport:
    """One input file: ``ok``, ``repaired`` (kept after a rule changed it), ``rejected`` or ``skipped``."""

    file: str
    status: str
    reason: str = ""
    size: int = 0


@dataclass
class IngestReport:
    """Every file's outcome and the totals."""

    files: list[FileReport] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)

    def add(self, file: str, status: str, reason: str = "", size: int = 0) -> None:
        self.files.append(FileReport(file, status, reason, size))

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.status for f in self.files))

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts(),
            "actions": self.actions,
            "files": [f.__dict__ for f in self.files],
        }


def raw_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative path and content, in path order)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\x00")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def resolve_raw(path: str | Path, kind: str) -> Path:
    """``path`` as given, or — for the well-known names ``fashion-mnist`` and ``bbc`` — the offline copy under the
    data folder, downloaded there first when a machine with a network has none."""
    given = Path(path).expanduser()
    if given.exists():
        return given
    name = str(path)
    if name in DOWNLOADS:
        from perftune.data.sources import data_dir

        folder = data_dir() / name
        wanted = DOWNLOADS[name]["files"]
        if not all((folder / f).is_file() for f in wanted):
            _download(name, folder)
        return folder / "bbc-fulltext.zip" if name == "bbc" else folder
    raise UsageError(f"{path}: no such file or folder (give a {kind}, or one of: {', '.join(DOWNLOADS)})")


def _download(name: str, folder: Path) -> None:
    import urllib.request

    spec = DOWNLOADS[name]
    folder.mkdir(parents=True, exist_ok=True)
    for filename, md5 in spec["files"].items():
        target = folder / filename
        if target.is_file():
            continue
        try:
            with urllib.request.urlopen(spec["base"] + filename, timeout=60) as response:
                data = response.read()
        except OSError as exc:
            raise DatasetError(
                f"could not download {filename} for {name!r} ({exc}); put the files in {folder} "
                "(set PERFTUNE_DATA_DIR to a folder that has them)"
            ) from None
        if md5 and hashlib.md5(data).hexdigest() != md5:
            raise DatasetError(f"downloaded {filename} does not match its published md5 {md5}; try again")
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)


# -- text --------------------------------------------------------------------------------------------------------
def _text_entries(path: Path) -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of every file in a zip or a folder, in path order."""
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            yield str(file.relative_to(path).as_posix()), file.read_bytes()
        return
    try:
        with zipfile.ZipFile(path) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if not info.is_dir():
                    yield info.filename, archive.read(info)
    except zipfile.BadZipFile:
        raise DatasetError(f"{path} is neither a folder nor a zip file (ingest-text reads one of those)") from None


def decode_text(raw: bytes, policy: str) -> tuple[str | None, str]:
    """The text of a file under the ``invalid_utf8`` policy, and what was done (empty when nothing was)."""
    if b"\x00" in raw:
        return None, "holds a NUL byte: not a text file"
    try:
        return raw.decode("utf-8-sig"), ""
    except UnicodeDecodeError as exc:
        where = f"invalid UTF-8 byte 0x{raw[exc.start]:02X} at offset {exc.start}"
        if policy == "reject":
            return None, f"{where} (policy invalid_utf8: reject)"
        if policy == "latin1":
            return raw.decode("latin-1"), f"{where}: read as Latin-1"
        bad = sum(1 for _ in _invalid_positions(raw))
        return raw.decode("utf-8", errors="replace"), f"{where}: {bad} invalid byte(s) replaced by U+FFFD"


def _invalid_positions(raw: bytes) -> Iterator[int]:
    start = 0
    while start < len(raw):
        try:
            raw[start:].decode("utf-8")
            return
        except UnicodeDecodeError as exc:
            yield start + exc.start
            start += exc.end


def read_text_files(
    path: Path, rules: TextRules, labels_from: Literal["folders", "none"]
) -> tuple[pd.DataFrame, IngestReport]:
    """One row per accepted file (``file``, ``text``, ``label``) and the per-file report."""
    entries = list(_text_entries(path))
    if not entries:
        raise DatasetError(f"{path} holds no files")
    parts = [PurePosixPath(name).parts for name, _ in entries]
    common = 0  # the folders every file sits in (a zip's top folder): not labels
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    report, rows = IngestReport(), []
    for (name, raw), part in zip(entries, parts, strict=True):
        if PurePosixPath(name).suffix.lower() not in rules.extensions or name.startswith("__MACOSX"):
            report.add(name, "skipped", f"not a {'/'.join(rules.extensions)} file", len(raw))
            continue
        label = part[common] if len(part) > common + 1 else None
        if labels_from == "folders" and label is None:
            report.add(name, "skipped", "not in a label folder (labels come from folder names)", len(raw))
            continue
        text, note = decode_text(raw, rules.invalid_utf8)
        if text is None:
            report.add(name, "rejected", note, len(raw))
            continue
        text = text.strip()
        if len(text) < rules.min_chars:
            report.add(name, "rejected", f"{len(text)} characters, fewer than min_chars={rules.min_chars}", len(raw))
            continue
        report.add(name, "repaired" if note else "ok", note, len(raw))
        rows.append({FILE_COLUMN: name, TEXT_COLUMN: text, LABEL_COLUMN: label if labels_from == "folders" else ""})
    frame = pd.DataFrame(rows, columns=[FILE_COLUMN, TEXT_COLUMN, LABEL_COLUMN])
    if rules.duplicates == "drop" and len(frame):
        duplicated = frame.duplicated(subset=[TEXT_COLUMN], keep="first")
        first_file = dict(zip(frame.loc[~duplicated, TEXT_COLUMN], frame.loc[~duplicated, FILE_COLUMN], strict=True))
        entries = {entry.file: entry for entry in report.files}
        for name, text in zip(frame.loc[duplicated, FILE_COLUMN], frame.loc[duplicated, TEXT_COLUMN], strict=True):
            entries[name].status = "rejected"
            entries[name].reason = f"the same text as {first_file[text]} (duplicates: drop)"
        if duplicated.any():
            report.actions.append(f"dropped {int(duplicated.sum())} duplicate texts")
        frame = frame.loc[~duplicated]
    if frame.empty:
        raise DatasetError(f"{path}: no file passed the rules ({report.counts()}); see the rules in --help")
    return frame.reset_index(drop=True), report


def assign_split(labels: pd.Series, test_fraction: float, seed: int) -> np.ndarray:
    """``train``/``test`` per row: seeded, stratified by label where every labelled class has two rows."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise UsageError(f"--test-fraction must be between 0 and 1, not {test_fraction}")
    index = np.arange(len(labels))
    counts = labels.value_counts()
    stratify = labels if len(counts) > 1 and counts.min() >= 2 and (labels != "").all() else None
    _, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=stratify)
    split = np.full(len(labels), "train", dtype=object)
    split[test] = "test"
    return split


# -- Label Studio ----------------------------------------------------------------------------------------------
def read_label_studio(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """A Label Studio JSON export → one row per task with a choice: its ``file`` (when the task names one),
    ``text``, ``label``, ``annotator`` and ``labelled_at``; plus notes on the tasks left out.

    Of a task's annotations, cancelled ones are ignored and the newest one counts; a task whose annotators
    disagree is noted.
    """
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{path} is not a Label Studio JSON export ({exc})") from None
    if not isinstance(tasks, list):
        raise DatasetError(f"{path} is not a Label Studio JSON export: expected a list of tasks")
    rows, notes = [], []
    for task in tasks:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise DatasetError(
                f"{path}: a task without 'data' ({str(task)[:80]}); is this a JSON (not JSON-MIN) export?"
            )
        data, task_id = task["data"], task.get("id", "?")
        annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        choices = [(a, _choice(a)) for a in annotations]
        choices = [(a, c) for a, c in choices if c is not None]
        if not choices:
            notes.append(f"task {task_id}: no label (no completed annotation with a choice)")
            continue
        latest, label = max(choices, key=lambda pair: str(pair[0].get("updated_at") or pair[0].get("created_at")))
        if len({c for _, c in choices}) > 1:
            notes.append(f"task {task_id}: annotators disagree ({sorted({c for _, c in choices})}); kept the newest")
        who = latest.get("completed_by")
        rows.append(
            {
                FILE_COLUMN: str(data.get("file") or data.get("path") or data.get("filename") or ""),
                TEXT_COLUMN: str(data.get("text") or ""),
                LABEL_COLUMN: label,
                "annotator": str(who.get("email") or who.get("id")) if isinstance(who, dict) else str(who or ""),
                "labelled_at": str(latest.get("updated_at") or latest.get("created_at") or ""),
            }
        )
    return pd.DataFrame(rows, columns=[FILE_COLUMN, TEXT_COLUMN, LABEL_COLUMN, "annotator", "labelled_at"]), notes


def _choice(annotation: dict[str, Any]) -> str | None:
    for result in annotation.get("result") or []:
        if result.get("type") == "choices" and result.get("value", {}).get("choices"):
            return str(result["value"]["choices"][0])
    return None


def apply_labels(frame: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Set each row's label from the export, matched by file name, else by the text itself. Rows the export does
    not label keep their label; rows left with none are dropped. Returns the new table and what was done."""
    frame = frame.copy()
    for column in ("annotator", "labelled_at"):
        if column not in frame.columns:
            frame[column] = ""
    frame["label_source"] = np.where(frame[LABEL_COLUMN] != "", "folders", "")
    by_file = {f: i for i, f in enumerate(frame[FILE_COLUMN])}
    by_text = {hashlib.sha256(t.strip().encode()).hexdigest(): i for i, t in enumerate(frame[TEXT_COLUMN])}
    matched, unmatched, changed = 0, [], 0
    for row in labels.itertuples(index=False):
        position = by_file.get(row.file) if row.file else None
        if position is None:
            position = by_text.get(hashlib.sha256(row.text.strip().encode()).hexdigest())
        if position is None:
            unmatched.append(row.file or row.text[:40])
            continue
        matched += 1
        changed += frame.at[position, LABEL_COLUMN] not in ("", row.label)
        frame.at[position, LABEL_COLUMN] = row.label
        frame.at[position, "annotator"] = row.annotator
        frame.at[position, "labelled_at"] = row.labelled_at
        frame.at[position, "label_source"] = "label-studio"
    actions = [f"{matched} rows labelled from the export ({changed} changed an earlier label)"]
    if unmatched:
        actions.append(f"{len(unmatched)} exported tasks match no row (e.g. {unmatched[0]!r})")
    unlabelled = frame[LABEL_COLUMN] == ""
    if unlabelled.any():
        actions.append(f"dropped {int(unlabelled.sum())} rows that have no label")
    if matched == 0:
        raise DatasetError("no task of the export matches a row of the dataset (by file name or by text)")
    return frame.loc[~unlabelled].reset_index(drop=True), actions


# -- idx images ------------------------------------------------------------------------------------------------
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip-compressed or not) as an array; a malformed one raises :class:`DatasetError`."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{path}: a damaged gzip file ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_TYPES:
        raise DatasetError(f"{path} is not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        raise DatasetError(f"{path}: header says {dims} of {dtype} ({expected} bytes) but the file holds {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def read_idx_images(folder: Path, classes: int | None) -> tuple[pd.DataFrame, IngestReport, dict[str, Any]]:
    """Rows (``file``, ``image`` bytes, ``label``, ``split``) of an idx image set, the per-file report, and the
    image shape. ``train-*`` files are the training split and ``t10k-*`` / ``test-*`` the test split."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder (ingest-images reads a folder of idx files)")
    report, frames, shapes = IngestReport(), [], set()
    pairs = {}
    for file in sorted(folder.iterdir()):
        name = file.name
        if "-images-idx3-ubyte" in name:
            pairs.setdefault(name.split("-images")[0], {})["images"] = file
        elif "-labels-idx1-ubyte" in name:
            pairs.setdefault(name.split("-labels")[0], {})["labels"] = file
        else:
            report.add(name, "skipped", "not an idx image or label file", file.stat().st_size)
    if not pairs:
        raise DatasetError(f"{folder} holds no idx files (*-images-idx3-ubyte[.gz] and *-labels-idx1-ubyte[.gz])")
    for prefix, files in sorted(pairs.items()):
        if set(files) != {"images", "labels"}:
            missing = ({"images", "labels"} - set(files)).pop()
            for file in files.values():
                report.add(file.name, "rejected", f"no matching {prefix}-{missing} file")
            continue
        try:
            images, labels = read_idx(files["images"]), read_idx(files["labels"])
        except DatasetError as exc:
            for file in files.values():
                report.add(file.name, "rejected", str(exc).replace(f"{file.parent}/", ""), file.stat().st_size)
            continue
        problems = []
        if images.ndim != 3 or images.dtype != np.uint8:
            problems.append(f"images must be N×H×W unsigned bytes, found {images.shape} {images.dtype}")
        if labels.ndim != 1 or len(labels) != len(images):
            problems.append(f"{len(labels)} labels for {len(images)} images")
        elif classes is not None and (labels.min() < 0 or labels.max() >= classes):
            problems.append(f"labels {int(labels.min())}…{int(labels.max())} outside 0…{classes - 1}")
        if problems:
            for file in files.values():
                report.add(file.name, "rejected", "; ".join(problems), file.stat().st_size)
            continue
        shapes.add(images.shape[1:])
        split = "test" if prefix.startswith(("t10k", "test")) else "train"
        for kind, file in files.items():
            what = f"{len(images)} images of {images.shape[1]}×{images.shape[2]}" if kind == "images" else ""
            report.add(file.name, "ok", what or f"{len(labels)} labels, {len(np.unique(labels))} classes")
        flat = images.reshape(len(images), -1)
        frames.append(
            pd.DataFrame(
                {
                    FILE_COLUMN: [f"{files['images'].name}#{i}" for i in range(len(images))],
                    IMAGE_COLUMN: [row.tobytes() for row in flat],
                    LABEL_COLUMN: labels.astype(np.int64),
                    SPLIT_COLUMN: split,
                }
            )
        )
    if not frames:
        reasons = sorted({f.reason for f in report.files if f.status == "rejected" and f.reason})
        raise DatasetError(f"{folder}: no idx pair passed the rules: {'; '.join(reasons) or report.counts()}")
    if len(shapes) > 1:
        raise DatasetError(f"{folder}: image sizes differ between files: {sorted(shapes)}")
    frame = pd.concat(frames, ignore_index=True)
    if not (frame[SPLIT_COLUMN] == "test").any():
        report.actions.append("no t10k/test files: the test split is drawn (see --test-fraction)")
    height, width = shapes.pop()
    return frame, report, {"height": int(height), "width": int(width)}


def images_array(frame: pd.DataFrame, height: int, width: int) -> np.ndarray:
    """The ``image`` column back as an N×H×W uint8 array."""
    return np.frombuffer(b"".join(frame[IMAGE_COLUMN]), dtype=np.uint8).reshape(len(frame), height, width)


# -- into the store --------------------------------------------------------------------------------------------
def ingest_text(
    store: DataStore,
    path: str | Path,
    name: str,
    rules: TextRules | None = None,
    labels_from: Literal["folders", "none"] = "folders",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> StoredVersion:
    """Read, check and store a zip or folder of text files (see the module docstring)."""
    rules = rules or TextRules()
    raw = resolve_raw(path, "zip or folder of text files")
    frame, report = read_text_files(raw, rules, labels_from)
    frame[SPLIT_COLUMN] = assign_split(frame[LABEL_COLUMN], test_fraction, seed)
    report.actions.append(f"split: {test_fraction:.0%} test, seed {seed}, stratified by label")
    return store.put_unstructured(
        frame,
        name,
        "text",
        str(raw.resolve()),
        {**asdict(rules), "labels_from": labels_from, "test_fraction": test_fraction, "seed": seed},
        report.to_dict(),
        {"raw": str(raw.resolve()), "raw_sha256": raw_digest(raw)},
        {"classes": sorted(set(frame[LABEL_COLUMN]) - {""})},
    )


def ingest_images(
    store: DataStore,
    path: str | Path,
    name: str,
    classes: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> StoredVersion:
    """Read, check and store an idx image set (see the module docstring)."""
    raw = resolve_raw(path, "folder of idx files")
    frame, report, shape = read_idx_images(raw, classes)
    if not (frame[SPLIT_COLUMN] == "test").any():
        frame[SPLIT_COLUMN] = assign_split(frame[LABEL_COLUMN].astype(str), test_fraction, seed)
    return store.put_unstructured(
        frame,
        name,
        "images",
        str(raw.resolve()),
        {"classes": classes, "test_fraction": test_fraction, "seed": seed},
        report.to_dict(),
        {"raw": str(raw.resolve()), "raw_sha256": raw_digest(raw)},
        {
            **shape,
            "features": shape["height"] * shape["width"],
            "classes": sorted(int(c) for c in set(frame[LABEL_COLUMN])),
        },
    )


def ingest_labels(
    store: DataStore, export: str | Path, name: str, test_fraction: float = 0.2, seed: int = 0
) -> StoredVersion:
    """A new version of the text dataset ``name`` with labels from a Label Studio JSON export (annotator and time
    kept per row); its split is drawn again when the labels change which rows are kept."""
    current, path = store.resolve(name)
    if current.kind != "text":
        raise UsageError(f"store:{name} holds {current.kind}, not text; Label Studio labels go onto a text dataset")
    export = Path(export)
    labels, notes = read_label_studio(export)
    frame, actions = apply_labels(pd.read_parquet(path), labels)
    frame[SPLIT_COLUMN] = assign_split(frame[LABEL_COLUMN], test_fraction, seed)
    report = {
        "counts": {"tasks": len(labels) + len(notes), "labelled": len(labels)},
        "actions": actions,
        "notes": notes,
    }
    return store.put_unstructured(
        frame,
        name,
        "text",
        current.source,
        {**current.rules, "labels": "label-studio", "test_fraction": test_fraction, "seed": seed},
        report,
        {
            "parent": f"store:{name}@{current.version}",
            "raw": current.lineage.get("raw"),
            "raw_sha256": current.lineage.get("raw_sha256"),
            "labels": str(export.resolve()),
            "labels_sha256": raw_digest(export),
        },
        {"classes": sorted(set(frame[LABEL_COLUMN]))},
    )
