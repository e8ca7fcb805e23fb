"""Probation: after a promotion, the new champion is watched for ``retrain.probation.window``; if it degrades
past the policy's limits it is rolled back to the previous champion through the registry's locked, audited
``rollback`` (the same path as ``perftune rollback``), and a running ``perftune serve`` that follows the alias
swaps back with no failed request.

Degraded means any of, on a monitor check of the champion within the window:

* realized or estimated performance worse than its test split by more than ``max_drop`` (judged on the
  interval's favourable end, as the monitor judges, so noise alone does not roll back);
* the model's error rate above ``max_error_rate`` (when the check had a server to ask): its server-side failures
  only (5xx: a failed predict, the server unable to answer). The client error rate — wrong tokens, malformed or
  oversized bodies, aborted uploads, requests for other models — is anyone's to raise who reaches the port, so it
  never rolls a champion back;
* served latency p95 above the previous champion's last served p95 × (1 + ``max_latency_increase``) — both the
  model's own latency (the wall latency less the server's wait for a CPU, where the scoring log records it), so
  that a machine busy with other work during the window does not roll the new champion back.

A champion that ends its window healthy gets a ``probation`` row in the audit log, once.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

from perftune.errors import PerftuneError
from perftune.monitor import performance
from perftune.registry.catalog import ModelRegistry
from perftune.retrain.loop import Step
from perftune.retrain.triggers import seconds
from perftune.spec import ProbationSpec


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def degradations(check: Any, policy: ProbationSpec, previous_latency_p95: float | None) -> list[str]:
    """What is wrong with the champion in ``check`` by the probation limits (empty: nothing)."""
    found = []
    for figure in check.performance:
        if performance.judge(copy.copy(figure), policy.max_drop).degraded:
            found.append(
                f"{figure.kind} {figure.metric} {figure.value:.4g} [{figure.low:.4g}, {figure.high:.4g}] on "
                f"{figure.rows} rows is worse than its test split's {figure.test_value:.4g} by more than max_drop "
                f"{policy.max_drop:g}"
            )
    rate = check.system.error_rate
    if rate is not None and rate > policy.max_error_rate:
        found.append(
            f"error rate {rate:.2%} (server-side failures) is above max_error_rate {policy.max_error_rate:.2%}"
        )
    p95 = check.system.judged_latency_ms_p95  # the model's own: a busy machine does not roll a champion back
    if p95 is not None and previous_latency_p95 and p95 > previous_latency_p95 * (1 + policy.max_latency_increase):
        found.append(
            f"served latency p95 {p95:.3g} ms is above the previous champion's {previous_latency_p95:.3g} ms "
            f"× (1 + max_latency_increase {policy.max_latency_increase:g})"
        )
    return found


def judge(registry: ModelRegistry, check: Any, policy: ProbationSpec, engine: Any,
          now: datetime | None = None) -> Step | None:  # fmt: skip
    """Roll the champion back when ``check`` (of the champion) shows it degraded within its probation window.

    Returns the step taken (``rollback``, ``probation`` passed, or ``skip`` when a rollback is impossible), or
    None when the champion is not on probation or is healthy within its window.
    """
    from perftune.monitor import store

    now = now or datetime.now(timezone.utc)
    name, version = check.model, str(check.version)
    since = registry.champion_since(name)
    if since is None or since.action != "promote" or since.to_version != version:
        return None  # not promoted by perftune (or rolled back to): no probation
    start = _utc(since.at)
    window = timedelta(seconds=seconds(policy.window))
    if now - start > window:
        passed = [e for e in registry.history(name) if e.action == "probation" and e.to_version == version
                  and _utc(e.at) >= start]  # fmt: skip
        if passed:
            return None
        reason = f"v{version} served its probation window {policy.window} without degrading"
        registry.record(name, "probation", version, reason, {"since": start.isoformat()})
        return Step("probation", reason)
    previous = since.from_version
    previous_p95 = None
    if previous:
        points = store.history(engine, name, previous, ["latency_ms_p95"], 1).get("latency_ms_p95", [])
        previous_p95 = points[-1].value if points else None
    found = degradations(check, policy, previous_p95)
    if not found:
        return None
    details = {"check_id": check.check_id, "degradations": found, "window": policy.window,
               "promoted_at": start.isoformat(), "previous": previous}  # fmt: skip
    reason = f"probation: v{version} degraded within {policy.window} of its promotion: " + "; ".join(found)
    try:
        entry = registry.rollback(name, reason=reason, details=details, expect=version)
    except PerftuneError as exc:
        return Step("skip", f"v{version} degraded ({'; '.join(found)}) but cannot be rolled back: {exc}", details)
    return Step("rollback", f"champion rolled back v{entry.from_version} → v{entry.to_version}: {'; '.join(found)}",
                details)  # fmt: skip
