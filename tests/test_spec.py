from __future__ import annotations

import pytest

from perftune.errors import SpecError
from perftune.spec import PowersOfTen, PowersOfTwo, Range, Values, parse_spec

BASE = """
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: {powers_of_two: {from: 1, until: n_samples}}
    learning_rate: {powers_of_ten: {from: -4, to: -1}}
    alpha: [0.0001, 0.001]
objectives: [accuracy]
"""


def test_thesis_grid_helpers_parse():
    spec = parse_spec(BASE)
    space = spec.search.space
    assert space["batch_size"] == PowersOfTwo(1, "n_samples")
    assert space["learning_rate"] == PowersOfTen(-4, -1)
    assert space["alpha"] == Values((0.0001, 0.001))
    assert spec.early_stopping.policy == "projected"  # the one place defaults live
    assert spec.evaluation.eval_every == 100 and spec.evaluation.test_fraction == 0.3


def test_shorthands_for_datasets_constraints_and_objectives():
    spec = parse_spec(
        BASE.replace("datasets: [diabetes]", "datasets: [diabetes, 'sklearn:iris']")
        + "constraints: ['train_time_s <= 30', {metric: memory_mb, op: '<=', bound: 256}]\n"
    )
    assert [(d.source, d.name) for d in spec.datasets] == [(None, "diabetes"), ("sklearn", "iris")]
    assert [str(c) for c in spec.constraints] == ["train_time_s <= 30", "memory_mb <= 256"]
    assert spec.objectives[0].metric == "accuracy"


def test_fingerprint_ignores_where_it_runs_but_not_what_it_does():
    a = parse_spec(BASE)
    b = parse_spec(BASE + "execution: {address: 'ray://head:10001'}\nworkspace: /elsewhere\n")
    c = parse_spec(BASE.replace("0.001]", "0.01]"))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("search:\n  space:", "search:\n  algorithm: grid\n  space:\n    eta: {uniform: [0.1, 0.2]}"),
            "grid search needs discrete values but eta is a range",
        ),
        (("objectives: [accuracy]", "objectives: []"), "objectives"),
        (("models: [sgd_logistic]", "models: [sgd_logistic]\nepochz: 3"), "unknown field"),
        (("alpha: [0.0001, 0.001]", "alpha: []"), "search.space: alpha: empty list"),
        (("alpha: [0.0001, 0.001]", "alpha: {powers_of_ten: {from: 2, to: 1}}"), "'to' (1) must be >= 'from' (2)"),
    ],
)
def test_structural_errors_name_the_field(change, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(BASE.replace(*change))


def test_unknown_field_suggests_the_right_one():
    with pytest.raises(SpecError, match=r"early_stopping.polcy: unknown field \(did you mean 'policy'\?\)"):
        parse_spec(BASE + "early_stopping: {polcy: none}\n")


def test_malformed_yaml_says_where():
    with pytest.raises(SpecError, match=r"malformed YAML at line \d+, column \d+"):
        parse_spec("datasets: [diabetes\nmodels: x: y", origin="bad.yaml")


def test_ranges_for_model_based_search():
    spec = parse_spec(
        BASE.replace("alpha: [0.0001, 0.001]", "alpha: {loguniform: [0.00001, 0.1]}").replace(
            "search:\n", "search:\n  algorithm: tpe\n  num_samples: 8\n"
        )
    )
    assert spec.search.space["alpha"] == Range(1e-5, 0.1, log=True)
