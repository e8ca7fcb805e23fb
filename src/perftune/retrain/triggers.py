"""When to retrain: the spec's ``retrain.triggers`` judged on a monitor check and the audit log.

A trigger fires on dataset drift, on realized or estimated performance worse than the version's test split by
more than ``performance_drop`` (judged on the interval's favourable end, as the monitor judges, so noise alone
does not fire it), on a series that left its adaptive baseline (``anomaly``), or when ``schedule`` has passed
since the champion took over. ``cooldown`` keeps a model whose retraining did not promote from being
retrained at every check. Nothing clients do fires one: the check's client error rate is no baselined series and
its error rate counts the model's failures only (:mod:`perftune.monitor.scrape`).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from perftune.monitor import performance
from perftune.spec import RetrainTriggersSpec, parse_window


def seconds(duration: str) -> float:
    return parse_window(duration)[1]


def fired(
    triggers: RetrainTriggersSpec,
    check: Any,  # a monitor CheckResult, or None when no check was run
    now: datetime,
    champion_since: datetime | None,
) -> list[str]:
    """The reasons to retrain now (empty: none fired)."""
    reasons: list[str] = []
    if check is not None:
        if triggers.dataset_drift and check.drift.dataset_drift:
            drift = check.drift
            reasons.append(
                f"dataset drift: {len(drift.drifted_columns)} of {len(drift.columns)} columns drifted "
                f"({', '.join(drift.drifted_columns)})"
            )
        if triggers.performance_drop is not None:
            for figure in check.performance:
                judged = performance.judge(copy.copy(figure), triggers.performance_drop)
                if judged.degraded:
                    reasons.append(
                        f"{figure.kind} {figure.metric} {figure.value:.4g} [{figure.low:.4g}, {figure.high:.4g}] on "
                        f"{figure.rows} rows is worse than the test split's {figure.test_value:.4g} by more than "
                        f"performance_drop {triggers.performance_drop:g}"
                    )
        if triggers.anomaly:
            reasons += [f"anomaly: {v.describe()}" for v in check.baselines if v.flagged]
    due = triggers.schedule is not None and champion_since is not None
    if due and now - champion_since >= timedelta(seconds=seconds(triggers.schedule)):  # type: ignore[arg-type,operator]
        reasons.append(f"schedule: the champion has served since {champion_since:%Y-%m-%d %H:%M} UTC "
                       f"(every {triggers.schedule})")  # fmt: skip
    return reasons


def cooling_down(triggers: RetrainTriggersSpec, last_retrain: datetime | None, now: datetime) -> str | None:
    """Why not to retrain yet (a retraining within ``cooldown``), or None."""
    if last_retrain is None or triggers.cooldown is None:
        return None
    wait = timedelta(seconds=seconds(triggers.cooldown))
    if now - last_retrain < wait:
        return (
            f"the last retraining was at {last_retrain:%H:%M:%S} UTC, within the cooldown {triggers.cooldown}; "
            f"next possible at {last_retrain + wait:%H:%M:%S} UTC (perftune retrain --force overrides)"
        )
    return None
