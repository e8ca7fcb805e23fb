"""A registered model to serve: a small study on diabetes, two versions, v1 champion."""

from __future__ import annotations

from pathlib import Path

import pytest

import perftune
from perftune.registry.catalog import ModelRegistry
from perftune.registry.register import register
from perftune.serve.app import ServeSettings

STUDY = """
name: serve
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: [32, 64]
    learning_rate: [0.01]
    epochs: 5
objectives: [accuracy]
"""
TOKEN = "s3cret-token-for-tests-0123456789"


class Registered:
    def __init__(self, root: Path, uri: str, trials: list[str]) -> None:
        self.root, self.uri, self.trials = root, uri, trials

    def settings(self, reference: str = "diabetes-clf@champion", **overrides) -> ServeSettings:
        values = {
            "reference": reference,
            "tracking_uri": self.uri,
            "scoring_uri": f"sqlite:///{self.root / 'scoring.db'}",
            **overrides,
        }
        return ServeSettings(**values)


@pytest.fixture(scope="session")
def registered(ray_session, tmp_path_factory) -> Registered:
    root = tmp_path_factory.mktemp("serve")
    spec = root / "serve.yaml"
    spec.write_text(STUDY + f"workspace: {root / 'ws'}\n")
    result = perftune.tune(spec, out=root / "out")
    trials = sorted(t.trial_id for g in result.groups for t in g.trials)
    register(root / "out", "diabetes-clf", trial_id=trials[0])
    register(root / "out", "diabetes-clf", trial_id=trials[1])
    registry = ModelRegistry(result.tracking["uri"])
    registry.promote("diabetes-clf", "1", reason="tests")
    registry.close()
    (root / "token.txt").write_text(TOKEN + "\n")
    return Registered(root, result.tracking["uri"], trials)
