"""The gate's arithmetic: pass, fail by how much, unmeasured, and thresholds of another task."""

from perftune.registry.gate import run_gate
from perftune.spec import ConstraintSpec


def thresholds(*texts: str) -> list[ConstraintSpec]:
    return [ConstraintSpec.model_validate(t) for t in texts]


def test_thresholds_pass_fail_and_say_by_how_much():
    checks = run_gate(
        thresholds("accuracy >= 0.7", "latency_ms_p95 <= 1"),
        {"accuracy": 0.75, "latency_ms_p95": 1.5},
        "classification",
    )
    assert [c.passed for c in checks] == [True, False]
    assert checks[1].shortfall == 0.5
    assert checks[1].message() == "latency_ms_p95 <= 1: failed by 0.5 (latency_ms_p95 = 1.5)"


def test_an_unmeasured_metric_fails_and_another_tasks_metric_does_not_apply():
    checks = run_gate(
        thresholds("accuracy >= 0.7", "rmse <= 2", "predict_memory_mb <= 100"), {"rmse": 1.5}, "regression"
    )
    accuracy, rmse, memory = checks
    assert not accuracy.applies and accuracy.passed and "not applicable" in accuracy.message()
    assert rmse.applies and rmse.passed
    assert not memory.passed and memory.message().endswith("was not measured")
