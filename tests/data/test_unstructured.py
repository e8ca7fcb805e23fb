"""Unstructured data into the store: text files and idx images, each rule, labels and splits, and the
transform cache that turns them into features."""

from __future__ import annotations

import gzip
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perftune.data import load_dataset, prepare
from perftune.data.sources import Locations, data_dir
from perftune.data.store import DataStore
from perftune.data.unstructured import TextRules, ingest_images, ingest_labels, ingest_text, read_idx
from perftune.errors import DatasetError, SpecError, UsageError
from perftune.spec import DatasetSpec, EvaluationSpec

WORDS = {
    "sport": "match goal team player season coach league win",
    "business": "market shares profit bank economy company price growth",
}


def article(label: str, i: int) -> str:
    words = WORDS[label].split()
    rng = np.random.default_rng(i)
    return f"Title {label} {i}\n" + " ".join(rng.choice(words, 40)) + f" story{i}"


@pytest.fixture
def text_zip(tmp_path: Path) -> Path:
    """bbc-like: a top folder, one folder per label, a README, a Latin-1 file, a short file, a duplicate."""
    path = tmp_path / "news.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("news/README.TXT", "About these files: they are news articles from a test.")
        for label in WORDS:
            for i in range(10):
                archive.writestr(f"news/{label}/{i:03d}.txt", article(label, i))
        archive.writestr("news/sport/latin1.txt", ("Price of the ticket: £20 " * 5).encode("latin-1"))
        archive.writestr("news/sport/short.txt", "Too short")
        archive.writestr("news/business/copy.txt", article("business", 3))
        archive.writestr("news/business/image.png", b"\x89PNG...")
    return path


def test_text_files_are_checked_one_by_one(tmp_path, text_zip):
    stored = ingest_text(DataStore(tmp_path / "ws"), text_zip, "news")
    files = {f["file"]: f for f in stored.report["files"]}
    assert files["news/README.TXT"]["status"] == "skipped"  # not in a label folder
    assert files["news/business/image.png"]["status"] == "skipped"  # not a .txt file
    assert (
        files["news/sport/short.txt"]["status"] == "rejected" and "min_chars" in files["news/sport/short.txt"]["reason"]
    )
    assert files["news/business/copy.txt"]["reason"] == "the same text as news/business/003.txt (duplicates: drop)"
    latin = files["news/sport/latin1.txt"]
    assert latin["status"] == "repaired" and "0xA3 at offset 21" in latin["reason"] and "U+FFFD" in latin["reason"]
    assert stored.rows == 21 and stored.kind == "text" and stored.meta["classes"] == ["business", "sport"]
    frame = pd.read_parquet(DataStore(tmp_path / "ws").resolve("news")[1])
    assert "\ufffd" in frame.loc[frame.file == "news/sport/latin1.txt", "text"].iloc[0]
    assert stored.lineage["raw_sha256"] and len(stored.lineage["raw_sha256"]) == 64


@pytest.mark.parametrize(("policy", "status", "text"), [("latin1", "repaired", "£20"), ("reject", "rejected", None)])
def test_the_invalid_utf8_policy_decides_what_happens_to_a_latin1_file(tmp_path, text_zip, policy, status, text):
    stored = ingest_text(DataStore(tmp_path / "ws"), text_zip, "news", TextRules(invalid_utf8=policy))
    entry = next(f for f in stored.report["files"] if f["file"] == "news/sport/latin1.txt")
    assert entry["status"] == status
    frame = pd.read_parquet(DataStore(tmp_path / "ws").resolve("news")[1])
    kept = frame.loc[frame.file == "news/sport/latin1.txt", "text"]
    assert (text in kept.iloc[0]) if text else kept.empty


def test_the_bbc_latin1_article_is_repaired_and_logged(tmp_path):
    stored = ingest_text(DataStore(tmp_path / "ws"), data_dir() / "bbc" / "bbc-fulltext.zip", "bbc")
    entry = next(f for f in stored.report["files"] if f["file"] == "bbc/sport/199.txt")
    assert entry["status"] == "repaired" and "0xA3" in entry["reason"]
    assert stored.report["counts"] == {"ok": 2126, "repaired": 1, "rejected": 98, "skipped": 1}  # 98 duplicates
    assert stored.meta["classes"] == ["business", "entertainment", "politics", "sport", "tech"]


def test_the_split_is_seeded_stratified_and_reproducible(tmp_path, text_zip):
    def split(seed: int, ws: str) -> pd.DataFrame:
        store = DataStore(tmp_path / ws)
        ingest_text(store, text_zip, "news", test_fraction=0.2, seed=seed)
        return pd.read_parquet(store.resolve("news")[1])

    first, again, other = split(0, "a"), split(0, "b"), split(1, "c")
    assert first.equals(again)  # same input and seed: the same rows, split and version
    assert not first["split"].equals(other["split"])
    tests = first[first.split == "test"]
    assert len(tests) == 5 and set(tests.label.value_counts()) <= {2, 3}  # 20 % of each label
    again_version = ingest_text(DataStore(tmp_path / "b"), text_zip, "news", seed=0)
    assert again_version.reused


def test_label_studio_labels_replace_folder_labels_with_annotator_and_time(tmp_path, text_zip):
    store = DataStore(tmp_path / "ws")
    ingest_text(store, text_zip, "news", labels_from="none")
    frame = pd.read_parquet(store.resolve("news")[1])
    texts = dict(zip(frame.file, frame.text, strict=True))
    annotation = {"result": [{"type": "choices", "value": {"choices": ["sport"]}}], "completed_by": {"email": "a@x"}}
    tasks = [
        {"id": 1, "data": {"file": "news/sport/000.txt", "text": ""}, "annotations": [
            {**annotation, "updated_at": "2026-11-01T10:00:00Z"}]},
        {"id": 2, "data": {"text": texts["news/business/001.txt"]}, "annotations": [  # matched by its text
            {"result": [{"type": "choices", "value": {"choices": ["business"]}}], "completed_by": 7,
             "updated_at": "2026-11-02T10:00:00Z"}]},
        {"id": 3, "data": {"file": "news/sport/002.txt"}, "annotations": [
            {**annotation, "updated_at": "2026-11-01T10:00:00Z"},
            {"result": [{"type": "choices", "value": {"choices": ["business"]}}], "completed_by": 8,
             "updated_at": "2026-11-03T10:00:00Z"}]},  # annotators disagree: the newest counts
        {"id": 4, "data": {"file": "news/sport/003.txt"}, "annotations": [{**annotation, "was_cancelled": True}]},
        {"id": 5, "data": {"file": "elsewhere.txt"}, "annotations": [{**annotation, "updated_at": "x"}]},
    ]  # fmt: skip
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    stored = ingest_labels(store, export, "news", test_fraction=0.34)
    labelled = pd.read_parquet(store.resolve("news")[1]).set_index("file")
    assert len(labelled) == 3  # rows without any label are dropped
    assert labelled.loc["news/sport/000.txt", ["label", "annotator", "labelled_at", "label_source"]].tolist() == [
        "sport", "a@x", "2026-11-01T10:00:00Z", "label-studio"]  # fmt: skip
    assert labelled.loc["news/business/001.txt", "annotator"] == "7"
    assert labelled.loc["news/sport/002.txt", "label"] == "business"
    assert any("disagree" in n for n in stored.report["notes"]) and any("task 4" in n for n in stored.report["notes"])
    assert any("1 exported tasks match no row" in a for a in stored.report["actions"])
    assert stored.lineage["parent"].startswith("store:news@") and len(stored.lineage["labels_sha256"]) == 64


def test_an_export_that_is_not_label_studio_json_is_one_line(tmp_path, text_zip):
    store = DataStore(tmp_path / "ws")
    ingest_text(store, text_zip, "news")
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(DatasetError, match="expected a list of tasks"):
        ingest_labels(store, bad, "news")


def write_idx(path: Path, array: np.ndarray, magic_type: int = 0x08) -> None:
    header = struct.pack(">BBBB", 0, 0, magic_type, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(">u1").tobytes()))


@pytest.fixture
def idx_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix, n in (("train", 120), ("t10k", 40)):
        labels = np.arange(n) % 4
        images = (labels[:, None, None] * 60 + rng.integers(0, 20, (n, 8, 8))).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    (folder / "notes.txt").write_text("not an idx file")
    return folder


def test_idx_images_keep_their_split_shape_and_labels(tmp_path, idx_folder):
    stored = ingest_images(DataStore(tmp_path / "ws"), idx_folder, "shapes", classes=4)
    assert stored.rows == 160 and stored.meta == {"height": 8, "width": 8, "features": 64, "classes": [0, 1, 2, 3]}
    assert stored.report["counts"] == {"ok": 4, "skipped": 1}
    frame = pd.read_parquet(DataStore(tmp_path / "ws").resolve("shapes")[1])
    assert (frame.split == "test").sum() == 40 and frame.file.iloc[0] == "t10k-images-idx3-ubyte.gz#0"
    image = np.frombuffer(frame.image.iloc[0], dtype=np.uint8).reshape(8, 8)
    assert np.array_equal(image, read_idx(idx_folder / "t10k-images-idx3-ubyte.gz")[0])


def test_labels_outside_the_classes_and_broken_files_are_rejected(tmp_path, idx_folder):
    with pytest.raises(DatasetError, match=r"no idx pair passed the rules: labels 0…3 outside 0…2"):
        ingest_images(DataStore(tmp_path / "ws"), idx_folder, "shapes", classes=3)  # labels 0…3
    (idx_folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"))
    stored = ingest_images(DataStore(tmp_path / "ws2"), idx_folder, "shapes", classes=4, test_fraction=0.25)
    assert stored.report["counts"] == {"ok": 2, "rejected": 2, "skipped": 1}  # the t10k pair is out
    rejected = [f["reason"] for f in stored.report["files"] if f["status"] == "rejected"]
    assert all("header says (5,) of uint8 (5 bytes) but the file holds 2" in r for r in rejected)
    frame = pd.read_parquet(DataStore(tmp_path / "ws2").resolve("shapes")[1])
    assert len(frame) == 120 and (frame.split == "test").sum() == 30  # the split is drawn instead
    with pytest.raises(DatasetError, match="header says"):
        read_idx(idx_folder / "t10k-labels-idx1-ubyte.gz")
    (idx_folder / "junk-images-idx3-ubyte").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DatasetError, match="not an idx file"):
        read_idx(idx_folder / "junk-images-idx3-ubyte")


def test_a_missing_input_names_what_it_expects(tmp_path):
    with pytest.raises(UsageError, match="no such file or folder"):
        ingest_images(DataStore(tmp_path / "ws"), tmp_path / "nowhere", "x")


def test_features_come_from_the_training_split_and_are_cached(tmp_path, text_zip, monkeypatch):
    import perftune.data.transforms as transforms

    store = DataStore(tmp_path / "ws")
    ingest_text(store, text_zip, "news")
    where = Locations(tmp_path, tmp_path / "ws")
    spec = DatasetSpec(name="store:news", transform={"kind": "tfidf", "max_features": 500, "min_df": 1})
    dataset = load_dataset(spec, where=where)
    assert dataset.scaled and dataset.X.dtype == np.float32 and dataset.task == "classification"
    frame = pd.read_parquet(store.resolve("news")[1])
    assert np.array_equal(dataset.test_rows, np.flatnonzero(frame.split == "test"))
    test_only = {f"story{int(f.split('/')[-1][:3])}" for f in frame.file[frame.split == "test"] if f[-7:-4].isdigit()}
    names = set(dataset.feature_names)
    assert test_only and not (test_only & names)  # a word seen only in test articles is not in the vocabulary
    assert "goal" in names and "the" not in names  # stems of words; English stop words dropped
    calls = []
    monkeypatch.setattr(transforms, "_fit_transform", lambda *a: calls.append(a))
    again = load_dataset(spec, where=where)  # from the cache: no second fit
    assert calls == [] and np.array_equal(again.X, dataset.X)
    prepared = prepare(dataset, EvaluationSpec(), seed=0)
    assert set(prepared.test_index) == set(dataset.test_rows)  # the store's split, not a new draw
    assert prepared.folds[0].X_train.min() >= 0  # TF-IDF weights are not standardized (that would centre them)


def test_a_transform_that_does_not_fit_the_data_is_a_spec_error(tmp_path, text_zip):
    store = DataStore(tmp_path / "ws")
    ingest_text(store, text_zip, "news")
    where = Locations(tmp_path, tmp_path / "ws")
    with pytest.raises(SpecError, match="transform kind 'pixels' does not apply; use one of tfidf, counts"):
        load_dataset(DatasetSpec(name="store:news", transform={"kind": "pixels"}), where=where)
    with pytest.raises(SpecError, match="applies to text or image datasets"):
        load_dataset(DatasetSpec(name="diabetes", transform={"kind": "tfidf"}))


def test_a_sample_keeps_the_stores_split_and_labels(tmp_path):
    """The store's split was drawn with the same seed and labels a sample is drawn with: a sample stratified by
    label alone would then take training rows only. It is stratified by label within each split."""
    store = DataStore(tmp_path / "ws")
    ingest_text(store, data_dir() / "bbc" / "bbc-fulltext.zip", "bbc", seed=0)
    dataset = load_dataset(
        DatasetSpec(name="store:bbc", sample=600, transform={"kind": "counts", "max_features": 50}),
        seed=0,
        where=Locations(tmp_path, tmp_path / "ws"),
    )
    assert len(dataset.y) == 600 and 110 <= len(dataset.test_rows) <= 130  # 426 of 2127 are test rows: 20 %
    assert set(dataset.y[dataset.test_rows]) == set(dataset.classes)
