"""The spec's retrain: section is validated like the rest: a value or a one-line error naming the field."""

from __future__ import annotations

import pytest

from perftune.errors import SpecError
from perftune.spec import parse_spec

BASE = """
datasets: [diabetes]
models: [sgd_logistic]
search: {space: {batch_size: [32], learning_rate: 0.01, alpha: 0.0001, epochs: 2}}
objectives: [accuracy]
"""


def test_defaults_and_a_full_section_parse_and_do_not_change_the_study_fingerprint():
    plain = parse_spec(BASE)
    assert plain.retrain.triggers.dataset_drift and plain.retrain.promote.alpha == 0.05
    full = parse_spec(
        BASE
        + """
retrain:
  triggers: {dataset_drift: true, performance_drop: 0.03, anomaly: true, schedule: 7d}
  data: {max_recent_rows: 20000, recency_half_life: 3d, holdout_fraction: 0.25}
  search: {budget: 0.2, warm_start: true}
  promote: {margin: 0.02, alpha: 0.01}
  probation: {window: 30m, max_drop: 0.04, max_error_rate: 0.02, max_latency_increase: 0.3}
"""
    )
    assert full.retrain.triggers.schedule == "7d" and full.retrain.probation.window == "30m"
    assert full.fingerprint() == plain.fingerprint()  # how a version is replaced does not change the study


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("retrain: {triggers: {schedule: weekly}}", "retrain.triggers.schedule: schedule 'weekly': give a duration"),
        ("retrain: {probation: {window: soon}}", "retrain.probation.window: probation window 'soon': give a duration"),
        ("retrain: {search: {budget: 2}}", "retrain.search.budget: input should be less than or equal to 1"),
        ("retrain: {promote: {alpha: 0}}", "retrain.promote.alpha: input should be greater than 0"),
        ("retrain: {promote: {margni: 0.1}}", "retrain.promote.margni"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_field(section, message):
    with pytest.raises(SpecError) as error:
        parse_spec(BASE + section + "\n")
    text = str(error.value)
    assert message.lower() in text.lower() and "\n" not in text
