from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from perftune.data import list_datasets, load_dataset, prepare
from perftune.errors import DatasetError, DataUnavailableError
from perftune.spec import DatasetSpec, EvaluationSpec


def load(entry):
    return load_dataset(DatasetSpec.model_validate(entry))


def test_pmlb_from_offline_cache_with_task_and_fingerprint():
    d = load("diabetes")
    assert (d.n_rows, d.n_features, d.task, list(d.classes)) == (768, 8, "classification", [1, 2])
    assert len(d.fingerprint) == 64
    assert load("diabetes").fingerprint == d.fingerprint  # content-stable
    assert load("529_pollen").task == "regression"


def test_sklearn_builtin_and_files(tmp_path):
    assert load("sklearn:iris").classes.tolist() == [0, 1, 2]
    frame = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) ** 2, "y": np.r_[[0] * 20, [1] * 20]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    csv = load({"path": str(tmp_path / "t.csv"), "target": "y"})
    parquet = load({"path": str(tmp_path / "t.parquet"), "target": "y"})
    assert csv.task == parquet.task == "classification"
    assert np.array_equal(csv.X, parquet.X)


@pytest.mark.parametrize(
    ("frame", "target", "message"),
    [
        (pd.DataFrame({"a": [1.0, 2.0]}), "y", "no target column 'y'; its columns are: a"),
        (pd.DataFrame({"a": ["x", "y"], "y": [0, 1]}), "y", "non-numeric feature columns: a"),
        (pd.DataFrame({"a": [1.0, None], "y": [0, 1]}), "y", "missing values in: a"),
        (pd.DataFrame({"a": [], "y": []}), "y", "is empty"),
    ],
)
def test_bad_tables_get_clear_errors(tmp_path, frame, target, message):
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DatasetError, match=message):
        load({"path": str(tmp_path / "bad.csv"), "target": target})


def test_unknown_dataset_lists_what_exists():
    with pytest.raises(DatasetError, match=r"unknown PMLB dataset 'diabetis'\. Did you mean diabetes\?.*Cached in"):
        load("diabetis")
    with pytest.raises(DatasetError, match="known: breast_cancer, diabetes, digits"):
        load("sklearn:irs")


def test_dataset_without_offline_copy_fails_clearly(tmp_path, monkeypatch):
    # 1191_BNG_pbc has no offline copy; with no network the loader must say what to do.
    monkeypatch.setenv("PERFTUNE_DATA_DIR", str(tmp_path))
    import pmlb

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(pmlb, "fetch_data", offline)
    with pytest.raises(
        DataUnavailableError, match=r"not in the local cache .* could not be downloaded.*network access"
    ):
        load("1191_BNG_pbc")


def test_holdout_and_folds_are_stratified_seeded_and_standardized_per_fold():
    d = load("diabetes")
    five = prepare(d, EvaluationSpec(cv_folds=5), seed=3)
    assert len(five.folds) == 5
    assert len(five.test_index) == math.ceil(0.3 * 768) and not set(five.test_index) & set(five.train_index)
    # stratified: every part keeps the class balance within a few percent
    share = np.mean(d.y == 2)
    for fold in five.folds:
        assert abs(np.mean(fold.y_val == 2) - share) < 0.05
        # standardized with the fold's own training rows only
        assert np.allclose(fold.X_train.mean(axis=0), 0, atol=1e-9)
        assert not np.allclose(fold.X_val.mean(axis=0), 0, atol=1e-6)
    again = prepare(d, EvaluationSpec(cv_folds=5), seed=3)
    assert np.array_equal(again.test_index, five.test_index)


def test_listing_shows_offline_copies_and_missing_ones():
    infos = {i.name: i for i in list_datasets()}
    assert infos["diabetes"].available == "local" and infos["diabetes"].rows == 768
    assert infos["1191_BNG_pbc"].available == "download on first use"
    assert "sklearn:iris" in infos
