"""Explanations: exact linear attributions, permutation importance, the explain endpoint and command."""

from __future__ import annotations

import json
import uuid
import warnings
from datetime import datetime, timezone

import numpy as np
import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from perftune.cli import app as cli_app
from perftune.explain.attributions import NotExplainable, explainer_for
from perftune.explain.importance import load_importance, permutation_importance
from perftune.serve.app import create_app
from perftune.serve.scoring import inputs_f64, insert_rows, scoring_engine

NAMES = [f"x{j}" for j in range(6)]


def pipeline(estimator, X, y) -> Pipeline:
    return Pipeline([("standardize", StandardScaler()), ("model", estimator)]).fit(pd.DataFrame(X, columns=NAMES), y)


@pytest.mark.parametrize("kind", ["regression", "binary", "three classes"])
def test_linear_attributions_sum_to_the_output_minus_the_expected_output(kind):
    if kind == "regression":
        X, y = make_regression(n_samples=400, n_features=6, noise=1.0, random_state=0)
        served = pipeline(SGDRegressor(random_state=0), X, y)
    else:
        X, y = make_classification(n_samples=400, n_features=6, n_informative=4,
                                   n_classes=2 if kind == "binary" else 3, random_state=0)  # fmt: skip
        served = pipeline(SGDClassifier(loss="log_loss", random_state=0), X, y)
    frame = pd.DataFrame(X, columns=NAMES)
    a = explainer_for(served, NAMES).explain(X)
    assert np.allclose(a.base_value + a.values.sum(axis=1), a.output)
    model = served.named_steps["model"]
    if kind == "regression":
        assert np.allclose(a.output, served.predict(frame))
    elif kind == "binary":  # the log-odds of classes[1]: sum of attributions = logit(p) − intercept
        p = served.predict_proba(frame)[:, 1]
        assert np.allclose(a.output, np.log(p / (1 - p)))
    else:  # the score of the predicted class
        predicted = served.predict(frame)
        scores = served.decision_function(frame)
        index = np.searchsorted(model.classes_, predicted)
        assert np.allclose(a.output, scores[np.arange(len(X)), index])
        assert a.explained[0] == f"decision function of class {predicted[0]}"
    # the expected output: the decision at the training mean (the intercept, inputs standardized on it)
    assert np.allclose(a.base_value, np.atleast_1d(model.intercept_)[0 if kind != "three classes" else index])
    # a feature at its training mean contributes nothing
    at_mean = explainer_for(served, NAMES).explain(X.mean(axis=0, keepdims=True))
    assert np.allclose(at_mean.values, 0.0, atol=1e-12)


def test_a_model_that_is_not_linear_is_said_to_have_no_explainer():
    from sklearn.tree import DecisionTreeClassifier

    X, y = make_classification(n_samples=100, n_features=6, random_state=0)
    with pytest.raises(NotExplainable, match="not a linear model"):
        explainer_for(pipeline(DecisionTreeClassifier(), X, y), NAMES)


def test_permutation_importance_ranks_the_known_driver_first():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 6))
    y = 5 * X[:, 3] + 0.5 * X[:, 0] + rng.normal(0, 0.1, 600)  # x3 drives y, x0 a little, the rest not at all
    served = pipeline(SGDRegressor(random_state=0), X[:400], y[:400])
    ranked = permutation_importance(served, pd.DataFrame(X[400:], columns=NAMES), y[400:], "regression")
    assert [f.feature for f in ranked[:2]] == ["x3", "x0"]
    assert ranked[0].mean > 10 * ranked[1].mean > 0 and all(abs(f.mean) < 0.05 for f in ranked[2:])


BODY = {"inputs": [{"name": "input-0", "shape": [2, 8], "datatype": "FP64",
                    "data": [6, 148, 72, 35, 0, 33.6, 0.627, 50, 1, 85, 66, 29, 0, 26.6, 0.351, 31]}]}  # fmt: skip


def test_the_explain_endpoint_attributes_the_served_prediction(registered):
    with TestClient(create_app(registered.settings(scoring_uri=None))) as client:
        explained = client.post("/v2/models/diabetes-clf/explain", json=BODY)
        assert explained.status_code == 200, explained.text
        body = explained.json()
        assert body["model_version"] == "1" and len(body["feature_names"]) == 8
        values, base, output = np.array(body["attributions"]), np.array(body["base_value"]), np.array(body["output"])
        assert values.shape == (2, 8) and np.allclose(base + values.sum(axis=1), output)
        labels = client.post("/v2/models/diabetes-clf/infer", json=BODY).json()["outputs"][0]["data"]
        positive = float(body["explained"][0].rsplit(" ", 1)[1])  # "decision function of class 2.0"
        assert all((o > 0) == (float(v) == positive) for o, v in zip(output, labels, strict=True))  # same class
        bad = client.post("/v2/models/diabetes-clf/explain", json={"inputs": []})
        assert bad.status_code in (400, 422) and "error" in bad.json()


def explain_cli(registered, tmp_path):
    """Registration stored the importance; ``perftune explain`` shows it with the latest rows; its page."""
    client = MlflowClient(registered.uri, registered.uri)
    stored = load_importance(client, client.get_model_version("diabetes-clf", "1"))
    assert stored is not None and len(stored) == 8 and stored[0].mean >= stored[-1].mean

    uri = f"sqlite:///{tmp_path / 'scoring.db'}"
    X = np.array(BODY["inputs"][0]["data"], dtype=float).reshape(2, 8)
    engine = scoring_engine(uri)
    insert_rows(engine, [{"request_id": uuid.uuid4().hex, "client_id": None, "at": datetime.now(timezone.utc),
                          "model": "diabetes-clf", "version": "1", "endpoint": "v2", "rows": 2,
                          "inputs": orjson.dumps(X.tolist()).decode(), "inputs_f64": inputs_f64(X),
                          "outputs": "[0, 1]", "latency_ms": 1.0}])  # fmt: skip
    engine.dispose()
    args = ["explain", "diabetes-clf", "1", "--rows", "3", "--scoring-uri", uri, "--tracking-uri", registered.uri]
    result = CliRunner().invoke(cli_app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert [f["feature"] for f in shown["importance"]] == [f.feature for f in stored]
    assert len(shown["attributions"]["output"]) == 2 and shown["rows"] == "the latest 2 scored rows"
    page = tmp_path / "explain.html"
    table = CliRunner().invoke(cli_app, [*args, "--html", str(page)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "score drop" in table.output and "= output" in table.output
    return page


def test_registration_stores_importance_and_explain_shows_it_with_the_latest_rows(registered, tmp_path):
    assert explain_cli(registered, tmp_path).is_file()


def test_the_explain_page_renders_in_chromium(registered, tmp_path, render_page):
    page = explain_cli(registered, tmp_path)
    seen = render_page(page, ["importance", "rows"], texts=("#rows table",))
    assert seen.present == ["importance", "rows"] and seen.errors == []
    assert len(seen.images) == 2 and all(complete and width > 0 for _, complete, width in seen.images)
    assert "output" in seen.texts["#rows table"]


def test_a_quantized_network_is_explained_through_its_dequantized_weights():
    """Dynamic int8 quantization leaves no gradients; the explainer integrates a float copy carrying the same int8
    weights, which gives the served logits up to the activations' rounding."""
    import torch
    from sklearn.pipeline import Pipeline as SkPipeline

    from perftune.data.transforms import PixelFeatures
    from perftune.models.torch_estimator import TorchClassifier

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).eval()
    with warnings.catch_warnings():  # torch.ao's quantized tensors are deprecated in favour of torchao
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)
    served = SkPipeline([("features", PixelFeatures(4, 4)), ("model", TorchClassifier(quantized, np.arange(3)))])
    images = np.random.default_rng(0).integers(0, 256, (5, 16)).astype(float)
    a = explainer_for(served, [], "image").explain(images)
    served_logits = served[-1].logits(served[0].transform(images))
    picked = served_logits[np.arange(5), served.predict(images)]
    assert np.allclose(a.output, picked, atol=0.02 * np.abs(picked).max())  # the served network's logits
    assert np.allclose(a.values.sum(axis=1), a.output - a.base_value, atol=1e-3 + np.abs(a.extra["delta"]).max())
    assert "dequantized" in a.method and a.values.shape == (5, 16)
