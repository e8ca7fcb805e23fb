"""The versioned ML data store: validation report, cleaning rules, content-addressed versions, store: specs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from perftune.data import Locations, load_dataset
from perftune.data.store import CleaningRules, DataStore
from perftune.errors import DatasetError
from perftune.spec import DatasetSpec


def raw_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"a": rng.normal(size=80), "b": rng.normal(size=80), "const": 1.0, "y": rng.integers(0, 2, size=80)}
    )
    frame = pd.concat([frame, frame.iloc[:3]], ignore_index=True)  # 3 duplicate rows
    frame.loc[5, "a"] = np.nan  # a missing value
    return frame


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "claims.csv"
    raw_table().to_csv(path, index=False)
    return path


def test_bad_rows_are_reported_and_rejected_where_the_rules_say_so(tmp_path, csv):
    store = DataStore(tmp_path / "ws")
    with pytest.raises(DatasetError, match=r"rejected: missing values \{'a': 1\} \(rule missing: reject"):
        store.ingest(csv, "claims", "y")
    with pytest.raises(DatasetError, match="3 duplicate rows"):
        store.ingest(csv, "claims", "y", CleaningRules(missing="drop_rows", duplicates="reject"))
    with pytest.raises(DatasetError, match="target column 'label' is missing"):
        store.ingest(csv, "claims", "label")
    assert store.versions() == []  # nothing rejected was stored


def test_cleaning_and_the_validation_report(tmp_path, csv):
    stored = DataStore(tmp_path / "ws").ingest(csv, "claims", "y", CleaningRules(missing="drop_rows"))
    report = stored.report
    assert report["rows"] == 83 and report["missing"] == {"a": 1} and report["duplicate_rows"] == 3
    assert report["constant_columns"] == ["const"] and report["target_present"]
    assert stored.rows == 83 - 1 - 3 and stored.features == 2  # const dropped
    assert len(report["actions"]) == 3


def test_identical_content_gives_the_same_version(tmp_path, csv):
    store = DataStore(tmp_path / "ws")
    rules = CleaningRules(missing="drop_rows")
    first = store.ingest(csv, "claims", "y", rules)
    again = store.ingest(csv, "claims", "y", rules)
    assert again.version == first.version and again.reused and not first.reused
    # the same content in another format is the same version, too
    parquet = tmp_path / "claims.parquet"
    pd.read_csv(csv).to_parquet(parquet, index=False)
    assert store.ingest(parquet, "claims", "y", rules).version == first.version
    changed = raw_table()
    changed.loc[10, "b"] = 99.0
    changed.to_csv(tmp_path / "changed.csv", index=False)
    newer = store.ingest(tmp_path / "changed.csv", "claims", "y", rules)
    assert newer.version != first.version
    assert [v.version for v in store.versions("claims")] == [first.version, newer.version]


def test_specs_load_store_versions(tmp_path, csv):
    store = DataStore(tmp_path / "ws")
    first = store.ingest(csv, "claims", "y", CleaningRules(missing="drop_rows"))
    where = Locations.default(tmp_path / "ws")
    latest = load_dataset(DatasetSpec.model_validate("store:claims"), where=where)
    pinned = load_dataset(DatasetSpec.model_validate(f"store:claims@{first.version[:6]}"), where=where)
    assert latest.n_rows == pinned.n_rows == first.rows and latest.task == "classification"
    assert latest.fingerprint == first.fingerprint
    with pytest.raises(DatasetError, match="no dataset 'other' in the data store"):
        load_dataset(DatasetSpec.model_validate("store:other"), where=where)
    with pytest.raises(DatasetError, match="has no single version 'ffff'"):
        load_dataset(DatasetSpec.model_validate("store:claims@ffff"), where=where)


def test_cli_ingest_and_list(tmp_path, csv):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "perftune", "data", *args, "--workspace", str(tmp_path / "ws")],
            capture_output=True,
            text=True,
            timeout=120,
        )

    rejected = cli("ingest", str(csv), "--name", "claims", "--target", "y")
    assert rejected.returncode == 2 and "use --missing drop_rows" in rejected.stderr
    stored = cli("ingest", str(csv), "--name", "claims", "--target", "y", "--missing", "drop_rows")
    assert stored.returncode == 0 and "stored: store:claims@" in stored.stdout
    assert "unchanged" in cli("ingest", str(csv), "--name", "claims", "--target", "y", "--missing", "drop_rows").stdout
    assert "store:claims" in cli("list").stdout


def test_a_built_table_keeps_its_weights_and_lineage_and_training_draws_by_weight(tmp_path):
    from perftune.data.split import prepare
    from perftune.spec import EvaluationSpec
    from perftune.tuning.trial import _epoch_order

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=200), "y": rng.integers(0, 2, size=200)})
    frame["w"] = np.where(np.arange(200) < 100, 0.0, 1.0)  # the first half never drawn
    store = DataStore(tmp_path / "ws")
    stored = store.put(frame, "recent", "y", "retrain of m v1", {"scoring_rows": 100}, weight="w")
    assert stored.weight == "w" and stored.features == 1 and stored.lineage == {"scoring_rows": 100}
    assert store.put(frame, "recent", "y", "again", {}, weight="w").reused
    data = load_dataset(DatasetSpec(name=f"recent@{stored.version}", source="store"),
                        where=Locations.default(tmp_path / "ws"))  # fmt: skip
    assert data.feature_names == ["a"] and data.weights is not None and data.weights.sum() == 100
    fold = prepare(data, EvaluationSpec(), seed=0).folds[0]
    drawn = _epoch_order(fold, np.random.default_rng(0))
    assert len(drawn) == len(fold.y_train) and np.all(fold.w_train[drawn] == 1.0)


def test_a_bad_weight_column_is_one_line(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [0, 1, 0], "w": [1.0, -1.0, 1.0]})
    stored = DataStore(tmp_path / "ws").put(frame, "bad", "y", "test", {}, weight="w")
    with pytest.raises(DatasetError, match="weight column 'w' must hold finite values >= 0"):
        spec = DatasetSpec(name=f"bad@{stored.version}", source="store")
        load_dataset(spec, where=Locations.default(tmp_path / "ws"))
