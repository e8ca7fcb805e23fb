"""Deep learning through the same study: raw articles and idx images from the data store, PyTorch families,
ASHA on validation accuracy together with a budget (``steps`` makes the budget's stops exact)."""

from __future__ import annotations

import perftune
from perftune.data.sources import data_dir
from perftune.data.store import DataStore
from perftune.data.unstructured import ingest_images, ingest_text
from perftune.models.torch_nets import TorchCNN

DL_STUDY = """
name: dl
datasets:
  - {name: 'store:bbc', sample: 300, transform: {kind: tfidf, max_features: 800}}
  - {name: 'store:fashion', sample: 1500}
models: [torch_mlp, torch_cnn]
search:
  space:
    batch_size: [8, 64]
    learning_rate: [0.0003, 0.003]
    hidden_units: [32, 128]
    epochs: 8
  scheduler: {type: asha, metric: accuracy, mode: max, grace_period: 1, reduction_factor: 2}
objectives: [accuracy]
constraints: ['steps <= 150']
evaluation: {eval_every: 10}
execution: {report_interval_s: 0}   # every window reaches ASHA (these trials last well under a second)
"""


def test_text_and_images_tune_with_asha_and_a_budget(ray_session, write_spec, tmp_path):
    store = DataStore(tmp_path / "ws")
    ingest_text(store, data_dir() / "bbc" / "bbc-fulltext.zip", "bbc")
    ingest_images(store, data_dir() / "fashion-mnist", "fashion", classes=10)
    result = perftune.tune(write_spec(DL_STUDY), out=tmp_path / "out")
    groups = {(g.dataset, g.model): g for g in result.groups}
    # torch_cnn needs square images: the study skips it on the 800 word features, with the reason
    assert set(groups) == {("bbc", "torch_mlp"), ("fashion", "torch_mlp"), ("fashion", "torch_cnn")}
    assert result.skipped == [{"dataset": "bbc", "model": "torch_cnn", "reason": TorchCNN.unsupported(800)}]
    assert "800 features are not a square" in TorchCNN.unsupported(800)
    for key in [("bbc", "torch_mlp"), ("fashion", "torch_mlp"), ("fashion", "torch_cnn")]:
        group = groups[key]
        statuses = {t.status for t in group.trials}
        assert len(group.trials) == 8 and "failed" not in statuses, key
        stopped = [t for t in group.trials if t.status == "stopped_budget"]
        assert stopped and all(t.params["batch_size"] == 8 for t in stopped), key  # the only configs over 150 steps
        assert all(t.stop_reason["constraint"] == "steps <= 150" for t in stopped)
        assert group.best is not None and group.best.metrics["accuracy"] > 0.5, key  # 5 or 10 classes
        assert {"latency_ms_p95", "model_size_bytes", "memory_mb_peak"} <= set(group.best.metrics)
    stopped_early = [t for g in groups.values() for t in g.trials if t.status == "stopped_early"]
    assert stopped_early  # ASHA stopped some trials on accuracy
    card = groups[("bbc", "torch_mlp")].dataset_card
    assert (
        card["transform"]["data"] == "text"
        and card["transform"]["kind"] == "tfidf"
        and card["features"] == 800
        and card["version"]
    )
