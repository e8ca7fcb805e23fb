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


def _latency(p95: float, low: float, high: float, rounds: int = 5) -> dict[str, float]:
    return {"latency_ms_p95": p95, "latency_ms_p95_low": low, "latency_ms_p95_high": high, "latency_rounds": rounds}


def test_a_bound_inside_the_interval_is_measured_again_then_decided_on_the_point_estimate_saying_so():
    rounds = iter([_latency(9.1, 8.8, 9.6, 10), _latency(9.0, 8.9, 9.2, 15)])
    calls = []

    def remeasure() -> dict[str, float]:
        calls.append(1)
        return next(rounds)

    gate = thresholds("latency_ms_p95 <= 9.5")
    (check,) = run_gate(gate, _latency(9.0, 8.2, 10.3), "classification", remeasure=remeasure)
    # the first measurement's interval held the bound; the second's too; the third's no longer does
    assert len(calls) == 2 and check.passed and check.value == 9.0
    assert (check.low, check.high) == (8.9, 9.2) and check.note == "decided after 3 measurements"


def test_measuring_again_is_bounded_and_the_note_says_the_verdict_rests_on_the_point_estimate():
    calls = []

    def remeasure() -> dict[str, float]:
        calls.append(1)
        return _latency(10.2, 9.6, 10.9, 5 * (len(calls) + 1))

    (check,) = run_gate(thresholds("latency_ms_p95 <= 10"), _latency(10.1, 9.5, 11), "classification",
                        remeasure=remeasure)  # fmt: skip
    assert len(calls) == 2 and not check.passed  # MAX_REMEASURES
    assert "inside the 95 % interval after 3 measurements (15 rounds); decided on the point estimate" in check.message()


def test_a_bound_outside_the_interval_decides_at_once():
    def remeasure() -> dict[str, float]:
        raise AssertionError("no need to measure again")

    checks = run_gate(thresholds("latency_ms_p95 <= 10", "accuracy >= 0.7"), {**_latency(3.0, 2.6, 3.5),
                      "accuracy": 0.71}, "classification", remeasure=remeasure)  # fmt: skip
    assert all(c.passed for c in checks) and checks[0].note == ""
    assert checks[0].message() == "latency_ms_p95 <= 10: passed (latency_ms_p95 = 3 [2.6, 3.5])"
