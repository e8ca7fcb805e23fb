"""Compression as a step the search can choose: pruning and dynamic int8 quantization after training, measured
before and after in the trial's result, and a gate that bounds the accuracy it may cost."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from perftune.data.split import Fold, PreparedData
from perftune.models import get_family
from perftune.registry.gate import run_gate
from perftune.spec import ConstraintSpec
from perftune.tuning.trial import TrialSettings, run_trial


@pytest.fixture(scope="module")
def data() -> PreparedData:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 1500)
    X = (rng.normal(0, 2.5, (4, 64))[y] + rng.normal(0, 1, (1500, 64))).astype(np.float32)
    fold = Fold(X[:1200], y[:1200], X[1200:], y[1200:])
    return PreparedData("blobs", "classification", np.arange(4), 64, [fold], np.arange(1200), np.arange(1200, 1500))


def trial(data: PreparedData, **params) -> dict:
    config = {"batch_size": 32, "epochs": 3, "learning_rate": 0.003, "hidden_units": 256, **params}
    settings = TrialSettings(family=get_family("torch_mlp"), eval_every=20)
    return run_trial(config, data, settings, report=lambda window: None)


def test_quantization_shrinks_the_model_and_keeps_accuracy_within_a_point(data):
    plain, quantized = trial(data), trial(data, quantize=True)
    assert "accuracy_drop" not in plain  # nothing compressed, nothing to compare
    assert quantized["model_size_bytes"] < 0.4 * quantized["model_size_bytes_uncompressed"]  # float32 → int8
    assert quantized["model_size_bytes_uncompressed"] == pytest.approx(plain["model_size_bytes"], rel=0.01)
    assert quantized["accuracy_uncompressed"] == plain["accuracy"]  # the same seeded training before it
    assert abs(quantized["accuracy_drop"]) <= 0.01
    assert quantized["accuracy"] == pytest.approx(quantized["accuracy_uncompressed"] - quantized["accuracy_drop"])


def test_pruning_zeroes_the_asked_fraction_of_weights(data):
    pruned = trial(data, prune=0.6)
    assert pruned["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert pruned["accuracy"] > 0.9 and "latency_ms_p95_uncompressed" in pruned


def test_the_gate_refuses_a_model_that_compression_cost_too_much_accuracy():
    gate = [ConstraintSpec.model_validate("accuracy_drop <= 0.01")]
    ok = run_gate(gate, {"accuracy": 0.95, "accuracy_drop": 0.004}, "classification")
    bad = run_gate(gate, {"accuracy": 0.90, "accuracy_drop": 0.05}, "classification")
    assert ok[0].passed and not bad[0].passed
    assert "accuracy_drop" in bad[0].message()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_without_a_gpu_auto_trains_on_the_cpu_and_asking_for_cuda_is_a_clear_error(data):
    from perftune.models.base import TaskInfo

    family = get_family("torch_mlp")
    trained = trial(data, device="auto")
    assert trained["accuracy"] > 0.9 and "gpu_memory_mb" not in trained  # reported only where a GPU exists
    info = TaskInfo(task="classification", n_features=64, classes=np.arange(4))
    with pytest.raises(ValueError, match="device 'cuda' was asked for, but torch sees no CUDA GPU"):
        family(family.Params(batch_size=32, device="cuda"), info, seed=0)


@pytest.mark.parametrize("name", ["torch_mlp", "torch_cnn"])
def test_an_exported_network_gives_torchs_logits_under_onnxruntime(name):
    from perftune.models.base import TaskInfo
    from perftune.models.onnx_runtime import NotExportable, OnnxNetwork, export

    family = get_family(name)
    info = TaskInfo(task="classification", n_features=64, classes=np.arange(4))
    trainer = family(family.Params(batch_size=32, hidden_units=16), info, seed=0)
    X = np.random.default_rng(0).random((300, 64)).astype(np.float32)
    model = export(trainer.net, X)
    rows = X[:7]  # another batch size than the export's sample: the batch dimension is dynamic
    assert np.allclose(OnnxNetwork(model).logits(rows), trainer.logits(rows), rtol=1e-3, atol=1e-4)
    classifier = trainer.estimator.use_onnx(model)
    assert np.array_equal(classifier.predict(X), trainer.predict(X)) and classifier.onnx is not None
    assert pickle.loads(pickle.dumps(classifier)).onnx is None  # a session is not pickled
    if name == "torch_mlp":
        trainer.params = trainer.params.model_copy(update={"quantize": True})
        trainer.compress()
        with pytest.raises(NotExportable, match="quantized network has no ONNX export"):
            export(trainer.net, X)


def test_a_classifier_pickled_before_onnxruntime_serving_loads_and_runs_on_torch():
    from perftune.models.base import TaskInfo

    family = get_family("torch_mlp")
    trainer = family(family.Params(batch_size=32), TaskInfo("classification", 8, np.arange(3)), seed=0)
    classifier = trainer.estimator
    old = pickle.loads(pickle.dumps(classifier))
    assert "onnx" not in old.__dict__ and old.onnx is None  # pickled without it, as an older perftune pickled it
    X = np.random.default_rng(0).random((5, 8))
    assert np.array_equal(old.predict(X), classifier.predict(X))
